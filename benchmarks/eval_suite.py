r"""Benchmark of an eval suite on a trained workdir: seconds per phase.

Runs what `python -m mdssl_jax.evaluate --workdir=RUN --config=SUITE` runs,
timing each phase: restore (config, setup, checkpoint, training domains),
arrays (eval-transformed images of every domain), then per domain the
feature extraction and each evaluator, and the total. It runs the suite
twice on one checkpoint: cold (empty feature cache, first compilation) and
warm (features from the cache). The cache lives in a temporary directory,
so the workdir's own `eval/` is left untouched. It also prints the CPU
share of other processes while it measured ("busy machine" above 10 %, as
in `conv_micro.py`). Target (issue #12): the default suite on the demo
workdir in under 120 s cold on 2 CPU cores.

  python benchmarks/eval_suite.py --workdir=/tmp/demo_run
  python benchmarks/eval_suite.py --workdir=RUN \
      --suite=configs/eval/unseen.py:npz=../shared/data/mnist
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# pylint: disable=g-import-not-at-top
from conv_micro import _BUSY_THRESHOLD, CpuShare
from mdssl_jax import cli
from mdssl_jax import config_lib
from mdssl_jax import evaluate
# pylint: enable=g-import-not-at-top


def _suite_pass(label, config, suite, extractor, state, arrays, cache_dir):
  """One run_suite over `arrays`; prints and returns its total seconds."""
  # pylint: disable=g-import-not-at-top
  from mdssl_jax.evaluation import feature_cache
  from mdssl_jax.evaluation import suite as suite_lib
  # pylint: enable=g-import-not-at-top
  cache = feature_cache.FeatureCache(cache_dir, int(state.step))
  start = time.perf_counter()
  results = suite_lib.run_suite(config, extractor, state.params,
                                state.batch_stats, arrays,
                                feature_cache=cache)
  total = time.perf_counter() - start
  print(f"\n{label}: suite {total:.1f}s (cache hits {cache.hits}, "
        f"misses {cache.misses})")
  names = list(config.evals)
  print(f"  {'domain':<12} {'features':>9} " +
        " ".join(f"{n:>9}" for n in names))
  for domain, seconds in results["seconds"].items():
    print(f"  {domain:<12} {seconds['features']:>8.2f}s " +
          " ".join(f"{seconds[n]:>8.2f}s" for n in names))
  return total


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="trained workdir")
  parser.add_argument("--suite", default="configs/eval/default.py",
                      help="eval suite file[:arg]")
  parser.add_argument("--step", type=int, default=None,
                      help="checkpoint step (default: latest)")
  args = parser.parse_args()
  print(f"CPU: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; suite {args.suite}; workdir "
        f"{args.workdir}")
  share = CpuShare()
  share.start()
  t0 = time.perf_counter()
  cli.hide_gpus_from_tf()
  # pylint: disable=g-import-not-at-top
  import jax
  from mdssl_jax import train
  # pylint: enable=g-import-not-at-top
  t_import = time.perf_counter() - t0

  t0 = time.perf_counter()
  config, suite = evaluate.apply_suite(
      evaluate.load_config(args.workdir),
      config_lib.load_config(args.suite))
  config_lib.validate(config, check_devices=False)
  steps = evaluate.resolve_steps(
      args.workdir, None if args.step is None else [args.step])
  setup, state, domains = train.load_for_eval(config, args.workdir,
                                              step=steps[0])
  placed = jax.tree.leaves(state.params)[0].sharding
  extractor = train.make_extractor(config, setup,
                                   getattr(placed, "mesh", None))
  t_restore = time.perf_counter() - t0
  t0 = time.perf_counter()
  arrays = evaluate.eval_arrays(config, suite, domains)
  t_arrays = time.perf_counter() - t0
  sizes = ", ".join(f"{a['name']} {len(a['train_images'])}/"
                    f"{len(a['test_images'])}" for a in arrays)
  print(f"step {int(state.step)}; import {t_import:.1f}s, restore "
        f"{t_restore:.1f}s, arrays {t_arrays:.1f}s (train/test: {sizes})")
  with tempfile.TemporaryDirectory() as cache_dir:
    cold = _suite_pass("cold (empty cache)", config, suite, extractor, state,
                       arrays, cache_dir)
    warm = _suite_pass("warm (cached features)", config, suite, extractor,
                       state, arrays, cache_dir)
  others = share.stop()
  fixed = t_import + t_restore + t_arrays
  busy = ""
  if others is not None:
    busy = f"; other processes used {100 * others:.0f}% of the CPU" + (
        " (busy machine)" if others > _BUSY_THRESHOLD else "")
  print(f"\ntotal cold {fixed + cold:.1f}s, warm {fixed + warm:.1f}s "
        f"(import + restore + arrays {fixed:.1f}s){busy}")


if __name__ == "__main__":
  main()
