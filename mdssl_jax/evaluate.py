r"""Evaluate a trained workdir on demand (frozen encoder, projector discarded).

  python -m mdssl_jax.evaluate --workdir=/tmp/demo
  python -m mdssl_jax.evaluate --workdir=/tmp/demo --step=200 \
      --eval_override=probe_steps=4000

Reads `<workdir>/config.json` and the newest (or `--step`) checkpoint, runs
per-domain kNN and linear probes, prints a table and writes
`results.json` and `results_step<N>.json` in the workdir.
"""

from __future__ import annotations

import functools
import json
import os
import sys

from absl import app
from absl import flags
import ml_collections



def _define_flags() -> None:
  """CLI flags, defined only when run as a program (importing this module
  next to mdssl_jax.main must not define --workdir twice)."""
  flags.DEFINE_string("workdir", None, "Trained workdir.", required=True)
  flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
  flags.DEFINE_multi_string(
      "eval_override", [],
      "key=value overrides of config.eval, e.g. knn_k=200.")


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a workdir was trained with (from its config.json)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path} not found: is {workdir} a workdir written by "
        "`python -m mdssl_jax.main`?")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def evaluate_workdir(workdir: str, step: int | None = None,
                     overrides: dict | None = None) -> dict:
  """Restores a checkpoint and returns (and writes) the evaluation results."""
  import jax  # pylint: disable=g-import-not-at-top
  from mdssl_jax import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  from mdssl_jax import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from mdssl_jax import train  # pylint: disable=g-import-not-at-top
  from mdssl_jax.data import sources  # pylint: disable=g-import-not-at-top
  from mdssl_jax.evaluation import report  # pylint: disable=g-import-not-at-top

  config = load_config(workdir)
  for key, value in (overrides or {}).items():
    if key not in config.eval:
      raise ValueError(f"Unknown eval key {key!r}; valid: "
                       f"{sorted(config.eval.keys())}.")
    config.eval[key] = type(config.eval[key])(value)
  domains = sources.load_domains(config.data)
  setup = train.build_setup(config, domains)
  mesh = sharding_lib.make_mesh(config.get("mesh_shape", -1))
  abstract = jax.eval_shape(functools.partial(train.init_state, setup, config))
  rep = sharding_lib.replicated(mesh)
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), abstract)
  with ckpt_lib.Checkpointer(workdir, async_save=False) as checkpointer:
    state, _ = checkpointer.restore(abstract, step)
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
  cli.hide_gpus_from_tf()
  f = flags.FLAGS
  overrides = dict(o.split("=", 1) for o in f.eval_override)
  try:
    evaluate_workdir(f.workdir, f.step, overrides)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
