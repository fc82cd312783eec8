"""Test-wide setup: 8 simulated CPU devices, quiet TensorFlow, shared data."""

import os

# Must happen before JAX initialises its backends.
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (
      _flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # pylint: disable=g-import-not-at-top

import pytest  # pylint: disable=g-import-not-at-top

import jax  # pylint: disable=g-import-not-at-top
import tempfile  # pylint: disable=g-import-not-at-top

from mdssl_jax import cli  # pylint: disable=g-import-not-at-top
from mdssl_jax import host_memory  # pylint: disable=g-import-not-at-top

# What main.py and train_and_evaluate do by default (keep_host_memory): stop
# re-faulting freed memory (every jitted call otherwise page-faults its
# buffers afresh). Before any JAX computation starts the backend's threads.
host_memory.keep_freed_host_memory()

# Tests build the same small programs many times (resume, 1 vs 8 devices,
# the same demo config in several modules): a persistent compilation cache
# shared by every pytest-xdist worker of one run turns repeats into hits.
def _cache_dir() -> str:
  if os.environ.get("MDSSL_TEST_JAX_CACHE"):
    return os.environ["MDSSL_TEST_JAX_CACHE"]
  run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
  if run_id:
    path = os.path.join(tempfile.gettempdir(), f"mdssl_jax_cache_{run_id}")
    os.makedirs(path, exist_ok=True)
    return path
  return tempfile.mkdtemp(prefix="mdssl_jax_cache_")


jax.config.update("jax_compilation_cache_dir", _cache_dir())
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

cli.hide_gpus_from_tf()


def shared_data_dir() -> Path | None:
  """../shared/data beside the repo (or $MDSSL_SHARED_DATA), if present."""
  env = os.environ.get("MDSSL_SHARED_DATA")
  path = Path(env) if env else (
      Path(__file__).resolve().parents[2] / "shared" / "data")
  return path if (path / "MANIFEST.md").exists() else None


@pytest.fixture
def shared_data() -> Path:
  path = shared_data_dir()
  if path is None:
    pytest.skip("../shared/data is absent (it ships with the project's CI, "
                "not with a clone); set MDSSL_SHARED_DATA to run this test.")
  return path


@pytest.fixture(scope="session")
def fast_compile():
  """A context manager: compile inside it without most XLA optimisations
  (compile time is what small step-level tests pay for)."""
  import contextlib  # pylint: disable=g-import-not-at-top

  @contextlib.contextmanager
  def unoptimised():
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
      yield
    finally:
      jax.config.update("jax_disable_most_optimizations", old)

  return unoptimised


@pytest.fixture(scope="session")
def first_losses():
  """`losses(config, num_devices, steps=2)`: the first steps' training
  losses of `config` on a mesh of `num_devices` (1 vs 8 device tests)."""
  # pylint: disable=g-import-not-at-top
  import numpy as np
  from mdssl_jax import sharding as sharding_lib
  from mdssl_jax import train
  from mdssl_jax.data import pipeline, sources
  # pylint: enable=g-import-not-at-top

  def losses(config, num_devices, steps=2):
    mesh = sharding_lib.make_mesh(num_devices)
    domains = sources.load_domains(config.data)
    setup = train.build_setup(config, train.run_shape(config, domains))
    state = train.create_state(setup, config, sharding_lib.replicated(mesh))
    step_fn = train.make_train_step(setup, mesh)
    batches = train.global_batches(
        pipeline.make_train_iterator(config, domains, start_step=0), mesh)
    out = []
    for _ in range(steps):
      state, metrics = step_fn(state, next(batches))
      out.append(float(metrics["loss"]))
    return np.array(out)

  return losses
