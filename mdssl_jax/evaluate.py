r"""Evaluate any checkpoint of a trained workdir (frozen encoder, no projector).

  python -m mdssl_jax.evaluate --workdir=RUN --config=configs/eval/default.py
  python -m mdssl_jax.evaluate --workdir=RUN --config=configs/eval/default.py \
      --step=all --config.evals.probe.steps=4000
  python -m mdssl_jax.evaluate --workdir=RUN --step=100 --step=200 \
      --config=configs/eval/unseen.py:npz=../shared/data/mnist
  python -m mdssl_jax.evaluate --workdir=RUN             # config.evals
  python -m mdssl_jax.evaluate --workdir=RUN --eval_override=knn.k=200

`--config` names an eval suite (`mdssl_jax.evaluation.suite_config`): its
evaluators (default: the workdir's own `config.evals`), its settings and
the domains (the run's training domains and/or unseen ones, loaded with the
training config's image size, mean and std). Without `--config` the
workdir's own `config.evals` run on its training domains, and
`results.json` / `results_step<N>.json` are written as after training.
`--step` picks checkpoints: a step, several (`--step=30 --step=60` or
`--step=30,60`) or `all`; default: the latest.

Every evaluation prints a table per step (unseen domains marked "*", with
the seen and unseen means) and appends one row per evaluator × domain ×
step to `RUN/eval/results.jsonl` and `RUN/eval/results.csv`
(`mdssl_jax.evaluation.results_log`). Features are cached per (step,
domain, split, transform) in `RUN/eval/features/` when the suite's
`cache_features` is on (the workdir-config path always caches), so a
second suite on the same checkpoint skips extraction.

`--eval_override=key=value` (repeatable) sets a key of the effective
evaluation settings (`knn.k=200`, `probe.steps=100`,
`max_test_per_domain=500`, old flat names like `knn_k=200`); see
`mdssl_jax.evaluation.overrides`. Misspelt `--config.` keys, invalid
suites and missing data are reported before JAX and TensorFlow load.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from absl import app
from absl import flags
import ml_collections

from mdssl_jax.evaluation import overrides as overrides_lib
from mdssl_jax.evaluation import suite_config

# The suite name recorded for evaluations with the workdir's own evals.
WORKDIR_SUITE = "workdir"
_FLAGS = {}


def _define_flags() -> None:
  """CLI flags, defined only when run as a program (importing this module
  next to mdssl_jax.main must not define --workdir twice)."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("workdir", None, "Trained workdir.", required=True)
  _FLAGS["config"] = config_flags.DEFINE_config_file(
      "config", None, "Eval suite file, e.g. configs/eval/default.py or "
      "configs/eval/unseen.py:npz=DIR+DIR. Default: the workdir's own "
      "config.evals on its training domains.", lock_config=True)
  flags.DEFINE_multi_string(
      "step", [], "Checkpoint step(s): N, several (--step=N --step=M or "
      "--step=N,M) or 'all'. Default: the latest.")
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


def parse_steps(values: Sequence[str]) -> list[int] | str | None:
  """The `--step` values: None (latest), "all", or the listed steps.

  Args:
    values: flag values, each "N", "N,M,..." or "all".

  Raises:
    ValueError: a value is neither an integer >= 0 nor "all", or "all" is
      mixed with steps.
  """
  items = [v.strip() for value in values for v in str(value).split(",")
           if v.strip()]
  if not items:
    return None
  if "all" in items:
    if len(items) > 1:
      raise ValueError(f"--step={','.join(items)}: 'all' already means "
                       "every checkpoint; give it alone.")
    return "all"
  steps = []
  for item in items:
    if not item.isdigit():
      raise ValueError(f"--step={item!r}: expected a checkpoint step (an "
                       "integer >= 0), a comma-separated list or 'all'.")
    steps.append(int(item))
  return sorted(set(steps))


def checkpoint_steps(workdir: str) -> list[int]:
  """Finished checkpoint steps of `workdir`, ascending (read from disk)."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def resolve_steps(workdir: str, steps: list[int] | str | None) -> list[int]:
  """`parse_steps`' result as the checkpoint steps to evaluate.

  Raises:
    FileNotFoundError: the workdir has no checkpoint, or lacks a step.
  """
  available = checkpoint_steps(workdir)
  if not available:
    raise FileNotFoundError(f"No checkpoint in {workdir}/checkpoints; "
                            "train it first with python -m mdssl_jax.main.")
  if steps is None:
    return [available[-1]]
  if steps == "all":
    return available
  missing = [s for s in steps if s not in available]
  if missing:
    raise FileNotFoundError(f"{workdir} has no checkpoint at step(s) "
                            f"{missing}; it has {available} (--step=all "
                            "evaluates every one).")
  return list(steps)


def is_initialisation_workdir(workdir: str) -> bool:
  """Whether `workdir` holds `main --init_only`'s evaluation of an
  untrained encoder (no checkpoints; evaluated at step 0 from the seed)."""
  path = os.path.join(workdir, "results.json")
  if checkpoint_steps(workdir) or not os.path.exists(path):
    return False
  with open(path) as f:
    return bool(json.load(f).get("train", {}).get("initialisation"))


def workdir_suite(config: ml_collections.ConfigDict
                  ) -> ml_collections.ConfigDict:
  """The suite meaning "the workdir's own config.evals" (no `--config`)."""
  suite = suite_config.base_suite(WORKDIR_SUITE)
  suite.evals = ml_collections.ConfigDict(config.evals.to_dict())
  return suite


def workdir_suite_hash(config: ml_collections.ConfigDict) -> str:
  """The suite hash of evaluations with the workdir's own `config.evals`
  (what `evaluate_workdir` records; training-time evaluations pass it to
  `results_log.append` with suite name `WORKDIR_SUITE`)."""
  return suite_config.suite_hash(apply_suite(config,
                                             workdir_suite(config))[1])


def apply_suite(config: ml_collections.ConfigDict,
                suite: ml_collections.ConfigDict,
                overrides: Sequence[str] | Mapping[str, object] = ()
                ) -> tuple[ml_collections.ConfigDict,
                           ml_collections.ConfigDict]:
  """The evaluation config and the effective suite, checked cheaply.

  Args:
    config: the workdir's (upgraded) training config.
    suite: an eval suite (`suite_config.base_suite` and its keys).
    overrides: `--eval_override` items, applied last.

  Returns:
    (config copy with the suite's `evals` (if any) and non-None `eval`
    values, then the overrides; the suite with the effective `evals` and
    `eval` filled in, whose `suite_config.suite_hash` identifies the
    settings).

  Raises:
    ValueError: the suite is invalid (every problem listed), an unseen
      domain is named like a training domain, or an override is bad.
  """
  errors = suite_config.validate(suite)
  if suite.unseen_domains:
    trained = {d["name"] for d in config.data.domains}
    errors += [f"unseen domain {d['name']!r} has the name of a training "
               "domain; give it another 'name'."
               for d in suite.unseen_domains
               if hasattr(d, "get") and d.get("name") in trained]
  if errors:
    raise ValueError("Invalid eval suite:\n  - " + "\n  - ".join(errors))
  config = ml_collections.ConfigDict(config.to_dict())
  if suite.evals:
    config.evals = ml_collections.ConfigDict(suite.evals.to_dict())
  for key in suite_config.EVAL_KEYS:
    if suite.eval[key] is not None:
      config.eval[key] = suite.eval[key]
  overrides_lib.apply_overrides(config, overrides)
  effective = ml_collections.ConfigDict(suite.to_dict())
  effective.evals = ml_collections.ConfigDict(config.evals.to_dict())
  for key in suite_config.EVAL_KEYS:
    effective.eval[key] = config.eval[key]
  return config, effective


def eval_arrays(config: ml_collections.ConfigDict,
                suite: ml_collections.ConfigDict,
                domains: Sequence[Any]) -> list[dict[str, Any]]:
  """Eval-transformed arrays of the suite's domains, for `run_suite`.

  Args:
    config: the evaluation config (`apply_suite`'s).
    suite: the effective suite.
    domains: the run's loaded training domains (`train.load_for_eval`).

  Returns:
    `pipeline.make_eval_arrays` dicts (training domains if
    `suite.training_domains`, then the unseen ones, loaded with the
    training config's data settings), each with "unseen" and
    "description" (`feature_cache.describe_domain`).
  """
  # pylint: disable=g-import-not-at-top
  from mdssl_jax.data import pipeline
  from mdssl_jax.data import sources
  from mdssl_jax.evaluation import feature_cache
  # pylint: enable=g-import-not-at-top
  caps = dict(max_train=config.eval.max_train_per_domain,
              max_test=config.eval.max_test_per_domain)
  groups = []
  if suite.training_domains:
    groups.append((list(config.data.domains), list(domains), False))
  if suite.unseen_domains:
    entries = list(suite.unseen_domains)
    groups.append((entries, [sources.load_domain(e, config.data)
                             for e in entries], True))
  out = []
  for entries, loaded, unseen in groups:
    for entry, arrays in zip(entries, pipeline.make_eval_arrays(
        config, loaded, **caps)):
      arrays.update(unseen=unseen, description=feature_cache.describe_domain(
          config, entry, **caps))
      out.append(arrays)
  return out


def evaluate_suite(workdir: str, suite: ml_collections.ConfigDict | None,
                   steps: list[int] | str | None = None,
                   overrides: Sequence[str] | Mapping[str, object] = ()
                   ) -> list[dict[str, Any]]:
  """Evaluates checkpoints of `workdir` with an eval suite; logs the rows.

  Args:
    workdir: a workdir written by `python -m mdssl_jax.main`.
    suite: an eval suite; None: the workdir's own `config.evals` on its
      training domains (then `results.json` and `results_step<N>.json` are
      written too, as after training).
    steps: `parse_steps`' result: None (latest), "all" or a list.
    overrides: `--eval_override` items.

  Returns:
    One results dict per step (`run_suite`'s, plus "train": {"method",
    "steps"} and "suite": {"name", "hash"}), in step order.

  Raises:
    FileNotFoundError, ValueError, config_lib.ConfigError,
    checkpoint.CheckpointError: with a message naming the fix.
  """
  train_config = load_config(workdir)
  write_json = suite is None
  if suite is None:
    suite = workdir_suite(train_config)
  config, suite = apply_suite(train_config, suite, overrides)
  at_init = is_initialisation_workdir(workdir)
  steps = [0] if at_init else resolve_steps(workdir, steps)
  # pylint: disable=g-import-not-at-top
  import jax
  from mdssl_jax import checkpoint
  from mdssl_jax import config_lib
  from mdssl_jax import train
  from mdssl_jax.evaluation import feature_cache
  from mdssl_jax.evaluation import report
  from mdssl_jax.evaluation import results_log
  from mdssl_jax.evaluation import suite as suite_lib
  # pylint: enable=g-import-not-at-top

  config_lib.validate(config, check_devices=False)
  name, digest = suite.name, suite_config.suite_hash(suite)
  subsets_dir = suite.label_subsets_dir or os.path.join(
      workdir, "eval", "label_subsets")
  if at_init:
    setup, state, domains = train.load_initialisation(config, workdir)
  else:
    setup, state, domains = train.load_for_eval(config, workdir,
                                                step=steps[0])
  placed = jax.tree.leaves(state.params)[0].sharding
  extractor = train.make_extractor(config, setup,
                                   getattr(placed, "mesh", None))
  arrays = eval_arrays(config, suite, domains)
  out = []
  for i, step in enumerate(steps):
    if i:
      with checkpoint.Checkpointer(workdir, async_save=False) as ckpt:
        state, _ = ckpt.restore(checkpoint.abstract_like(state), step)
    cache = (feature_cache.FeatureCache(
        os.path.join(workdir, "eval", "features"), int(state.step))
             if suite.cache_features or write_json else None)
    results = suite_lib.run_suite(config, extractor, state.params,
                                  state.batch_stats, arrays,
                                  feature_cache=cache,
                                  subsets_dir=subsets_dir)
    results["train"] = {"method": config.method, "steps": int(state.step)}
    results["suite"] = {"name": name, "hash": digest}
    results_log.append(workdir, results, step=int(state.step),
                       suite_name=name, suite_hash=digest)
    if write_json:
      report.write_results(results, os.path.join(workdir, "results.json"))
      report.write_results(results, os.path.join(
          workdir, f"results_step{int(state.step)}.json"))
    print(f"step {int(state.step)}, suite {name} ({digest}):", flush=True)
    print(report.format_table(results), flush=True)
    out.append(results)
  return out


def evaluate_workdir(workdir: str, step: int | None = None,
                     overrides: Sequence[str] | Mapping[str, object] = ()
                     ) -> dict:
  """Restores a checkpoint and returns (and writes) the evaluation results.

  Evaluates with the workdir's own `config.evals`; see `evaluate_suite`.

  Args:
    workdir: a workdir written by `python -m mdssl_jax.main`.
    step: checkpoint step; None: the latest.
    overrides: "key=value" evaluation overrides (or a mapping), see
      `mdssl_jax.evaluation.overrides.apply_overrides`.

  Returns:
    The suite's results plus {"train": {"method", "steps"}, "suite"}.
  """
  steps = None if step is None else [int(step)]
  return evaluate_suite(workdir, None, steps, overrides)[0]


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from mdssl_jax import cli  # pylint: disable=g-import-not-at-top
  cli.quiet_library_logs()
  f = flags.FLAGS
  suite = _FLAGS["config"].value
  try:  # Cheap checks first: a bad flag fails before TF and JAX load.
    steps = parse_steps(f.step)
    config = load_config(f.workdir)
    apply_suite(config, suite if suite is not None else workdir_suite(
        config), f.eval_override)
    resolve_steps(f.workdir, steps)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(cli.error_line(e))
  start = time.perf_counter()
  cli.hide_gpus_from_tf()
  from mdssl_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from mdssl_jax.data import sources  # pylint: disable=g-import-not-at-top
  try:
    evaluate_suite(f.workdir, suite, steps, f.eval_override)
  except (FileNotFoundError, ValueError, checkpoint.CheckpointError,
          sources.DatasetNotFoundError) as e:
    sys.exit(cli.error_line(e))
  print(f"evaluated in {time.perf_counter() - start:.1f}s; rows appended to "
        f"{os.path.join(f.workdir, 'eval', 'results.jsonl')}", flush=True)


def _suite_file_error(argv: Sequence[str]) -> str | None:
  """One line when the `--config=` suite file cannot be loaded, else None
  (flag parsing would bury the message in a traceback)."""
  from mdssl_jax import config_lib  # pylint: disable=g-import-not-at-top
  specs = [a.split("=", 1)[1] for a in argv[1:] if a.startswith("--config=")]
  if not specs:
    return None
  try:
    config_lib.load_config(specs[-1])
  except Exception as e:  # pylint: disable=broad-except
    return f"error: --config={specs[-1]}: {type(e).__name__}: {e}"
  return None


def run() -> None:
  """Checks the suite file and its `--config.` overrides, then runs."""
  from mdssl_jax import cli  # pylint: disable=g-import-not-at-top
  error = _suite_file_error(sys.argv)
  if error:
    sys.exit(error)
  errors = cli.unknown_override_errors(sys.argv)
  if errors:
    sys.exit("error: " + "\n  ".join(errors))
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
