r"""Command-line entry point for pretraining (and the end-of-run evaluation).

  python -m mdssl_jax.main --config=configs/demo.py --workdir=/tmp/demo
  python -m mdssl_jax.main --config=configs/mdssl_cifar_mix.py \
      --workdir=runs/mdssl --config.method_args.lambda2=0.15
  python -m mdssl_jax.main --config=configs/demo.py --workdir=/tmp/init \
      --init_only    # the same encoder at initialisation, evaluated

Without --workdir, a fresh `runs/<config name>/<timestamp>` is created and
printed. Re-running with the same workdir resumes from its newest checkpoint.
The console shows the project's own lines; pass --verbosity=0 (or higher)
to see every library's log lines too.
"""

from __future__ import annotations

import datetime
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from mdssl_jax import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/demo.py or configs/x.py:demo.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output directory (checkpoints, logs, results.json). "
    "Default: runs/<config name>/<timestamp>.")
_OVERRIDES_JSON = flags.DEFINE_string(
    "overrides_json", None, "A JSON file of dotted config keys -> values "
    "applied after --config (any JSON value, e.g. a list for "
    "data.domains); what mdssl_jax.sweep passes to each cell.")
_INIT_ONLY = flags.DEFINE_bool(
    "init_only", False, "Do not train: evaluate the encoder at its "
    "initialisation (config.seed) and write results.json, the baseline a "
    "trained run is compared with.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Multi-host: call jax.distributed.initialize(), "
    "which finds the coordinator itself on Cloud TPU pods, SLURM and Open "
    "MPI. Every process runs the same command with the same --workdir (a "
    "file system all hosts share).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-host without auto-detection: "
    "HOST:PORT of process 0 (implies --distributed; needs --num_processes "
    "and --process_id).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "Multi-host: this process's index in "
    "[0, num_processes).")
_LOCAL_DEVICES = flags.DEFINE_list(
    "local_device_ids", None, "Multi-host: this process's accelerators "
    "(e.g. 0,1,2,3); default: all visible.")


def default_workdir(config_path: str, now: datetime.datetime | None = None
                    ) -> str:
  """runs/<config file stem>[_<arg>]/<YYYYmmdd-HHMMSS>."""
  path, _, arg = config_path.partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  if arg:
    name += "_" + arg.replace(",", "_").replace("=", "-")
  stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
  return os.path.join("runs", name, stamp)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None:
    raise app.UsageError("--config is required, e.g. --config=configs/demo.py")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  config = _CONFIG.value
  if _OVERRIDES_JSON.value:
    import json  # pylint: disable=g-import-not-at-top
    from mdssl_jax import config_lib  # pylint: disable=g-import-not-at-top
    with open(_OVERRIDES_JSON.value) as f:
      try:
        config_lib.apply_overrides(config, json.load(f))
      except (ValueError, config_lib.ConfigError) as e:
        sys.exit(f"error: --overrides_json={_OVERRIDES_JSON.value}: {e}")
  if config.keep_host_memory:
    # Before JAX and TensorFlow start their threads (see host_memory.py);
    # train_and_evaluate's own call is then a no-op.
    from mdssl_jax import host_memory  # pylint: disable=g-import-not-at-top
    host_memory.keep_freed_host_memory()
  cli.quiet_library_logs()
  cli.hide_gpus_from_tf()
  # Imported late so --help stays fast and TF is configured first.
  from mdssl_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from mdssl_jax import config_lib  # pylint: disable=g-import-not-at-top
  from mdssl_jax import distributed  # pylint: disable=g-import-not-at-top
  from mdssl_jax import train  # pylint: disable=g-import-not-at-top
  from mdssl_jax.data import sources  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  try:
    distributed.initialize(
        auto=_DISTRIBUTED.value, coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value,
        local_device_ids=_LOCAL_DEVICES.value)
  except ValueError as e:
    sys.exit(cli.error_line(e))
  workdir = _WORKDIR.value
  if workdir is None:
    workdir = default_workdir(config_flags.get_config_filename(
        flags.FLAGS["config"]))
    print(f"workdir: {workdir}", flush=True)
  logging.info("JAX devices: %s", jax.devices())
  try:
    # Validates the config (once) before touching the workdir.
    if _INIT_ONLY.value:
      train.evaluate_initialisation(config, workdir)
    else:
      train.train_and_evaluate(config, workdir)
  except (config_lib.ConfigError, ValueError, sources.DatasetNotFoundError,
          checkpoint.CheckpointError, train.NonFiniteLossError) as e:
    sys.exit(cli.error_line(e))


def run() -> None:
  """Checks command-line config overrides, then runs absl's app."""
  errors = cli.unknown_override_errors(sys.argv)
  if errors:
    sys.exit("error: " + "\n  ".join(errors))
  app.run(main)


if __name__ == "__main__":
  run()
