"""Multi-host training on localhost: two jax.distributed processes on CPU.

One run of 4 steps in one process on 8 devices writes checkpoints at steps
2 and 4. Copies of its step-2 checkpoint then resume on one device, and
in two processes of 4 devices each (a loopback coordinator, each process
with its own XLA_FLAGS device count) that read only their input shard of
every domain. Both must reach the one-process run's losses, parameters
and kNN evaluation (features gathered across the processes).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mdssl_jax import config_lib
from mdssl_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG = textwrap.dedent("""\
    from mdssl_jax import config_lib, presets

    def get_config():
      c = config_lib.get_default_config("mdssl")
      presets.tiny_test_config(c, steps=4, per_domain_batch=8)
      c.data.input_shards = 2
      c.checkpoint.update(every_steps=2, keep=5)
      c.eval.update(at_end=True, max_train_per_domain=10 ** 5,
                    max_test_per_domain=10 ** 5)  # Same rows: uncapped.
      c.evals = {"knn": c.evals.knn}
      for name in c.monitors:
        c.monitors[name].enabled = False
      return c
    """)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict[str, str]:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def _main(config, workdir, *extra):
  return [sys.executable, "-m", "mdssl_jax.main", f"--config={config}",
          f"--workdir={workdir}", *extra]


def _check(procs):
  for proc in procs:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]


def _start(command, devices):
  return subprocess.Popen(command, cwd=REPO, env=_env(devices),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def _from_step2(src, dst):
  """A copy of workdir `src` as it was at its step-2 checkpoint."""
  shutil.copytree(src, dst)
  shutil.rmtree(os.path.join(dst, "checkpoints", "4"))
  os.remove(os.path.join(dst, "results.json"))
  shutil.rmtree(os.path.join(dst, "eval"), ignore_errors=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("dist")
  config = root / "tiny.py"
  config.write_text(CONFIG)
  one = root / "one"
  _check([_start(_main(config, one), 8)])
  _from_step2(one, root / "single_device")
  _from_step2(one, root / "two_hosts")
  port = _free_port()
  procs = [_start(_main(config, root / "single_device",
                        "--config.mesh_shape=1"), 1)]
  procs += [_start(_main(config, root / "two_hosts",
                         f"--coordinator_address=localhost:{port}",
                         "--num_processes=2", f"--process_id={i}"), 4)
            for i in range(2)]
  _check(procs)
  out = {name: str(root / name)
         for name in ("one", "single_device", "two_hosts")}
  out["config"] = config_lib.load_config(str(config))
  return out


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _params(config, workdir, step=4):
  """The step's parameters, restored onto this process's 8 devices."""
  _, state, _ = train.load_for_eval(config, workdir, step)
  return state.params


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


@pytest.mark.slow
def test_resumes_reach_the_same_losses(runs):
  one = _losses(runs["one"])
  assert sorted(one) == [1, 2, 3, 4] and np.isfinite(list(one.values())).all()
  for name in ("single_device", "two_hosts"):
    other = _losses(runs[name])
    assert sorted(other) == [1, 2, 3, 4], (name, other)
    # Steps 1-2 are the copied log; 3-4 were trained after the restore.
    np.testing.assert_allclose([other[3], other[4]], [one[3], one[4]],
                               rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.slow
def test_resumes_reach_the_same_parameters(runs):
  import jax  # pylint: disable=g-import-not-at-top
  ref = jax.tree.leaves(_params(runs["config"], runs["one"]))
  for name in ("single_device", "two_hosts"):
    got = jax.tree.leaves(_params(runs["config"], runs[name]))
    assert len(got) == len(ref)
    for a, b in zip(ref, got):
      np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4,
                                 atol=1e-5, err_msg=name)


@pytest.mark.slow
def test_two_host_evaluation_gathers_every_shard(runs):
  one, two = _results(runs["one"]), _results(runs["two_hosts"])
  for name, dom in one["domains"].items():
    # Every example of both processes' shards was embedded and scored.
    assert two["domains"][name]["n_train"] == dom["n_train"]
    assert two["domains"][name]["n_test"] == dom["n_test"]
    np.testing.assert_allclose(two["domains"][name]["knn_top1"],
                               dom["knn_top1"], atol=1e-6)
  # Only process 0 wrote the workdir's own files.
  assert _results(runs["two_hosts"])["train"]["steps"] == 4
