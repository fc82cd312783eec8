r"""ViRB-style end-task battery over frozen encoders.

  python -m mdssl_jax.virb --workdirs=RUN1,RUN2 \
      --config=configs/virb/offline.py [--output_dir=./virb/]
  python -m mdssl_jax.virb --workdirs=RUN1 \
      --config=configs/virb/offline.py:smoke --step=30
  python -m mdssl_jax.virb --workdirs=RUN1,RUN2 \
      --config=configs/virb/offline.py:tfds --config.tfds.data_dir=DIR

Evaluates a random-initialisation baseline of RUN1's architecture and
every workdir's encoder (latest checkpoint, or --step) on the battery's
tasks, printing one line per task and encoder, then writes results.json,
results.csv, summary.md, scores.png and spearman.png into --output_dir.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

from mdssl_jax.virb import config as virb_config

_FLAGS = {}


def _define_flags() -> None:
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_list("workdirs", None, "Trained workdirs, comma-separated.",
                    required=True)
  _FLAGS["config"] = config_flags.DEFINE_config_file(
      "config", None, "Battery config, e.g. configs/virb/offline.py[:smoke].",
      lock_config=True)
  flags.DEFINE_string("output_dir", "./virb/", "Where the outputs go.")
  flags.DEFINE_integer("step", None, "Checkpoint step of every workdir; "
                       "default: each one's latest.")


def main(argv) -> None:
  del argv
  config = _FLAGS["config"].value
  if config is None:
    raise app.UsageError("--config is required, e.g. "
                         "--config=configs/virb/offline.py.")
  virb_config.check(config)  # Before JAX and TensorFlow load.
  # pylint: disable=g-import-not-at-top
  from mdssl_jax import cli
  cli.hide_gpus_from_tf()
  from mdssl_jax.virb import battery
  from mdssl_jax.virb import encoders
  from mdssl_jax.virb import report
  # pylint: enable=g-import-not-at-top
  flag_values = flags.FLAGS
  encs = encoders.load_encoders(list(flag_values.workdirs),
                                flag_values.step)
  results = battery.run_battery(config, encs,
                                log=lambda line: print(line, flush=True))
  paths = report.write_report(results, flag_values.output_dir)
  print(report.summary_markdown(results))
  print(f"Wrote {', '.join(sorted(paths.values()))} "
        f"({results['seconds']:.0f} s).", flush=True)


if __name__ == "__main__":
  _define_flags()
  app.run(main, argv=sys.argv)
