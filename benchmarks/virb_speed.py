r"""Benchmark of the ViRB end-task battery: wall clock per phase and task.

Runs what `python -m mdssl_jax.virb --workdirs=... --config=...` runs
(restore, task generation, then each task's encoder pass, head training
and scoring per encoder) and prints seconds per phase, per task (summed
over encoders) and in total, with the CPU share of other processes while
it measured ("busy machine" above 10 %, as in `conv_micro.py`). Target
(issue #16): the default offline battery on two demo-sized encoders plus
the random baseline in under 15 minutes on 2 CPU cores.

  python -m mdssl_jax.main --config=configs/demo.py:tiny --workdir=/tmp/e1
  python -m mdssl_jax.main --config=configs/demo.py:simclr,tiny \
      --workdir=/tmp/e2
  python benchmarks/virb_speed.py --workdirs=/tmp/e1,/tmp/e2 \
      --output_dir=/tmp/virb
  python benchmarks/virb_speed.py --workdirs=/tmp/e1 \
      --config=configs/virb/offline.py:smoke
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# pylint: disable=g-import-not-at-top
from conv_micro import _BUSY_THRESHOLD, CpuShare
from mdssl_jax import cli
from mdssl_jax import config_lib
# pylint: enable=g-import-not-at-top

_LINE = re.compile(r"\[\d+/\d+\] (\S+) .*, (\d+) s\)$")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdirs", required=True,
                      help="Trained workdirs, comma-separated.")
  parser.add_argument("--config", default="configs/virb/offline.py",
                      help="Battery config (path[:arg]).")
  parser.add_argument("--output_dir", default=None,
                      help="Also write the battery's report here.")
  args = parser.parse_args()
  print(f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; battery {args.config}")
  share = CpuShare()
  share.start()
  t0 = time.perf_counter()
  cli.hide_gpus_from_tf()
  config = config_lib.load_config(args.config)
  # pylint: disable=g-import-not-at-top
  from mdssl_jax.virb import battery
  from mdssl_jax.virb import encoders
  from mdssl_jax.virb import report
  # pylint: enable=g-import-not-at-top
  encs = encoders.load_encoders(args.workdirs.split(","))
  t_restore = time.perf_counter() - t0
  per_task = collections.Counter()

  def log(line: str) -> None:
    print(line, flush=True)
    match = _LINE.search(line)
    if match:
      per_task[match.group(1)] += int(match.group(2))

  t0 = time.perf_counter()
  results = battery.run_battery(config, encs, log=log)
  t_battery = time.perf_counter() - t0
  others = share.stop()
  if args.output_dir:
    report.write_report(results, args.output_dir)
    print(report.summary_markdown(results))
  print("\nseconds per task (all encoders, incl. the first compilation):")
  for name, seconds in per_task.items():
    print(f"  {name:<16} {seconds:5d}")
  busy = ""
  if others is not None:
    busy = f"; other processes used {100 * others:.0f}% of the CPU" + (
        " (busy machine)" if others > _BUSY_THRESHOLD else "")
  print(f"\nimport + restore {t_restore:.1f}s, battery {t_battery:.1f}s "
        f"({len(results['tasks'])} tasks x {len(encs)} encoders), total "
        f"{t_restore + t_battery:.1f}s{busy}")


if __name__ == "__main__":
  main()
