r"""Evaluate a trained workdir on demand (frozen encoder, projector discarded).

  python -m mdssl_jax.evaluate --workdir=/tmp/demo
  python -m mdssl_jax.evaluate --workdir=/tmp/demo --step=200 \
      --eval_override=knn.k=200 --eval_override=probe.steps=4000

Reads `<workdir>/config.json` (upgrading configs saved before
`config.evals` existed) and the newest (or `--step`) checkpoint, runs the
config's evaluator suite (`config.evals`) on every domain, prints a table
and writes `results.json` and `results_step<N>.json` in the workdir.

`--eval_override=key=value` (repeatable) sets a suite key
(`max_test_per_domain=500`), an evaluator key (`knn.k=200`,
`probe.steps=100`) or an old flat name (`knn_k=200`, `probe_steps=4000`);
see `mdssl_jax.evaluation.overrides`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence

from absl import app
from absl import flags
import ml_collections

from mdssl_jax.evaluation import overrides as overrides_lib


def _define_flags() -> None:
  """CLI flags, defined only when run as a program (importing this module
  next to mdssl_jax.main must not define --workdir twice)."""
  flags.DEFINE_string("workdir", None, "Trained workdir.", required=True)
  flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
  flags.DEFINE_multi_string(
      "eval_override", [],
      "key=value override of the evaluation settings, e.g. knn.k=200, "
      "probe.steps=4000, max_test_per_domain=500 (old names such as "
      "knn_k=200 work too).")


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a workdir was trained with (config.json, upgraded)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path} not found: is {workdir} a workdir written by "
        "`python -m mdssl_jax.main`?")
  try:
    with open(path) as f:
      config = ml_collections.ConfigDict(json.load(f))
  except (OSError, ValueError) as e:
    raise ValueError(f"{path} cannot be read as a config ({e}); restore it "
                     "from a copy, or retrain into a new --workdir.") from None
  return overrides_lib.upgrade_config(config)


def evaluate_workdir(workdir: str, step: int | None = None,
                     overrides: Sequence[str] | Mapping[str, object] = ()
                     ) -> dict:
  """Restores a checkpoint and returns (and writes) the evaluation results.

  Args:
    workdir: a workdir written by `python -m mdssl_jax.main`.
    step: checkpoint step; None: the latest.
    overrides: "key=value" evaluation overrides (or a mapping), see
      `mdssl_jax.evaluation.overrides.apply_overrides`.

  Returns:
    The suite's results plus {"train": {"method", "steps"}}.
  """
  config = load_config(workdir)
  overrides_lib.apply_overrides(config, overrides)
  return evaluate_config(config, workdir, step)


def evaluate_config(config: ml_collections.ConfigDict, workdir: str,
                    step: int | None = None) -> dict:
  """`evaluate_workdir` with the (upgraded, overridden) config given."""
  from mdssl_jax import config_lib  # pylint: disable=g-import-not-at-top
  from mdssl_jax import train  # pylint: disable=g-import-not-at-top
  from mdssl_jax.evaluation import report  # pylint: disable=g-import-not-at-top

  config_lib.validate(config, check_devices=False)
  setup, state, domains = train.load_for_eval(config, workdir, step=step)
  results = train.evaluate_state(config, setup, state, domains)
  results["train"] = {"method": config.method, "steps": int(state.step)}
  report.write_results(results, os.path.join(workdir, "results.json"))
  report.write_results(
      results, os.path.join(workdir, f"results_step{int(state.step)}.json"))
  print(report.format_table(results), flush=True)
  return results


def main(argv) -> None:
  del argv
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from mdssl_jax import cli  # pylint: disable=g-import-not-at-top
  cli.quiet_library_logs()
  f = flags.FLAGS
  try:  # Cheap checks first: a bad flag fails before TF and JAX load.
    config = load_config(f.workdir)
    overrides_lib.apply_overrides(config, f.eval_override)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(cli.error_line(e))
  cli.hide_gpus_from_tf()
  from mdssl_jax import checkpoint  # pylint: disable=g-import-not-at-top
  try:
    evaluate_config(config, f.workdir, f.step)
  except (FileNotFoundError, ValueError, checkpoint.CheckpointError) as e:
    sys.exit(cli.error_line(e))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
