"""The notebooks: stored with outputs of a real run, and executed (FAST)."""

import importlib.util
import pathlib

import jax
import nbformat
import pytest

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parents[1] / "notebooks"


def _runner():
  """notebooks/run_notebooks.py, loaded by path (it is not a package)."""
  spec = importlib.util.spec_from_file_location(
      "run_notebooks", NOTEBOOK_DIR / "run_notebooks.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


RUNNER = _runner()
# name -> (images displayed, files its FAST run writes in MDSSL_NB_WORKDIR/fast)
EXPECTED = {
    "01_quickstart.ipynb": (3, ("quickstart/results.json",
                                "quickstart/eval/results.jsonl",
                                "quickstart/analysis/analysis.json")),
    "02_mdssl_lambdas.ipynb": (1, ("lambdas/l1_0.5_l2_0/results.json",
                                   "lambdas/l1_1_l2_0/results.json",
                                   "lambdas/l1_1_l2_0.1/results.json",
                                   "lambdas/l1_1_l2_0.5/results.json",
                                   "lambdas/init/results.json")),
    "03_relicv2_views.ipynb": (3, ("relicv2/results.json",
                                   "relicv2/loss.png")),
    "04_evaluate_checkpoint.ipynb": (5, (
        "checkpoint_demo/eval/results.jsonl",
        "checkpoint_demo/analysis/analysis.json")),
}


def _code_cells(notebook):
  return [c for c in notebook.cells if c.cell_type == "code"]


def _outputs(notebook):
  return [o for c in _code_cells(notebook) for o in c.outputs]


def _images(notebook) -> int:
  return sum("image/png" in o.get("data", {}) for o in _outputs(notebook))


def _errors(notebook) -> list[str]:
  return [f"{o.ename}: {o.evalue}" for o in _outputs(notebook)
          if o.output_type == "error"]


def test_every_notebook_is_listed():
  assert set(RUNNER.NOTEBOOKS) == set(EXPECTED)
  for name in RUNNER.NOTEBOOKS:
    assert (NOTEBOOK_DIR / name).is_file(), name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_stored_notebook_has_outputs_of_a_fast_run(name):
  path = NOTEBOOK_DIR / name
  assert path.stat().st_size < 1_000_000, f"{name} is over 1 MB"
  notebook = nbformat.read(path, as_version=4)
  assert notebook.metadata.kernelspec.name == "python3"
  cells = _code_cells(notebook)
  first = cells[0].source
  assert 'os.environ.get("MDSSL_NB_FAST", "1") == "1"' in first
  assert "REPO_URL" in first and "google.colab" in first
  # Executed top to bottom in one kernel, every cell.
  assert [c.execution_count for c in cells] == list(
      range(1, len(cells) + 1)), f"{name} was not run top to bottom"
  assert _errors(notebook) == [], name
  streams = "".join(o.text for o in _outputs(notebook)
                    if o.output_type == "stream")
  assert "Traceback" not in streams, name
  assert "FAST = True" in streams, f"{name}: not from a FAST run"
  assert _images(notebook) == EXPECTED[name][0], name


def test_kernel_env_drops_simulated_devices(monkeypatch):
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_a=1 "
                     "--xla_force_host_platform_device_count=8")
  env = RUNNER.kernel_env("/tmp/w", fast=False, jax_cache="/tmp/c")
  assert env["XLA_FLAGS"] == "--xla_cpu_a=1"
  assert env["MDSSL_NB_FAST"] == "0"
  assert env["MDSSL_NB_WORKDIR"] == "/tmp/w"
  assert env["JAX_COMPILATION_CACHE_DIR"] == "/tmp/c"
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  env = RUNNER.kernel_env("/tmp/w")
  assert "XLA_FLAGS" not in env and "JAX_COMPILATION_CACHE_DIR" not in env
  assert env["MDSSL_NB_FAST"] == "1"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_executes_in_fast_mode(name, tmp_path):
  env = RUNNER.kernel_env(str(tmp_path), fast=True,
                          jax_cache=jax.config.jax_compilation_cache_dir)
  # A cell that raises fails here with its traceback.
  notebook = RUNNER.execute(str(NOTEBOOK_DIR / name), env, timeout=600)
  assert _errors(notebook) == []
  first = "".join(o.text for o in _code_cells(notebook)[0].outputs
                  if o.output_type == "stream")
  assert "FAST = True" in first and "accelerator: cpu" in first
  images, files = EXPECTED[name]
  assert _images(notebook) == images
  for rel in files:
    assert (tmp_path / "fast" / rel).is_file(), f"{name} did not write {rel}"
