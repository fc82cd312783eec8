r"""Benchmark of the augmentation pipeline against the train step's appetite.

Times `pipeline.make_train_iterator` (tf.data, CPU augmentation) for the
built-in demo domains and, where ../shared/data is present, its .npz
domains, with two view settings: 2 large views at 32 px, and 4 large at
32 px + 2 small at 16 px (RELICv2). Prints augmented source images/s and
views/s, and their ratio to the train step's consumption rate
(`--step_images_per_sec`; ratio > 1 means the pipeline keeps up). It also
prints the CPU share of other processes while it measured (marked "busy
machine" above 10 %, as in `conv_micro.py`).

The pipeline and the step share the same CPU cores in a real run, so these
rates are upper bounds for what the pipeline can deliver while training.

  python benchmarks/input_pipeline.py
  python benchmarks/input_pipeline.py --batches 5 --per_domain_batch 32
  python benchmarks/input_pipeline.py --step_images_per_sec 28
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conv_micro import (  # pylint: disable=g-import-not-at-top
    _BUSY_THRESHOLD, CpuShare, cpu_model)
from mdssl_jax import config_lib  # pylint: disable=g-import-not-at-top
from mdssl_jax import host_memory  # pylint: disable=g-import-not-at-top
from mdssl_jax import presets  # pylint: disable=g-import-not-at-top
from mdssl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
from mdssl_jax.data import sources  # pylint: disable=g-import-not-at-top

# SimCLR step, ResNet-18 CIFAR stem, 2×256 views, xla convs, quiet machine
# (ENVIRONMENT.md: 18.1 s/step = 28 images/s).
_DEFAULT_STEP_RATE = 28.0

VIEW_SETTINGS = {
    "2x32": dict(large=2, large_size=32, small=0, small_size=16),
    "4x32+2x16": dict(large=4, large_size=32, small=2, small_size=16),
}


def shared_dir() -> str:
  """../shared/data beside the checkout, or $MDSSL_SHARED_DATA."""
  return os.environ.get("MDSSL_SHARED_DATA", presets.DEFAULT_SHARED_DIR)


def make_config(data: str, views: str, per_domain_batch: int):
  """A real config for one domain set ("demo"/"shared") and view setting."""
  c = config_lib.get_default_config("relicv2" if views != "2x32"
                                    else "simclr")
  if data == "demo":
    presets.demo_data(c, per_domain_batch=per_domain_batch)
  else:
    presets.shared_data(c, shared_dir=shared_dir(),
                        per_domain_batch=per_domain_batch)
  v = VIEW_SETTINGS[views]
  c.views.large.count = v["large"]
  c.views.large.size = v["large_size"]
  c.views.small.count = v["small"]
  c.views.small.size = v["small_size"]
  c.total_steps = 1000
  return c


def time_pipeline(config, domains, batches: int, warmup: int):
  """Seconds for `batches` batches after `warmup`, plus others' CPU share.

  Returns:
    (seconds, source images per batch, views per image, others or None).
  """
  it = pipeline.make_train_iterator(config, domains, start_step=0)
  first = None
  for _ in range(max(warmup, 1)):
    first = next(it)
  rows = first["large"].shape[0]
  views = first["large"].shape[1] + (
      first["small"].shape[1] if "small" in first else 0)
  share = CpuShare()
  share.start()
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  seconds = time.perf_counter() - t0
  return seconds, rows, views, share.stop()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data", nargs="+", default=["demo", "shared"],
                      choices=["demo", "shared"])
  parser.add_argument("--views", nargs="+", default=list(VIEW_SETTINGS),
                      choices=list(VIEW_SETTINGS))
  parser.add_argument("--per_domain_batch", type=int, default=64)
  parser.add_argument("--batches", type=int, default=10, help="timed")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument(
      "--step_images_per_sec", type=float, default=_DEFAULT_STEP_RATE,
      help="the train step's consumption rate in source images/s (default: "
      "the quiet-machine SimCLR ResNet-18 2×256 xla step of "
      "ENVIRONMENT.md; take yours from benchmarks/train_step.py)")
  parser.add_argument(
      "--malloc-tune", action=argparse.BooleanOptionalAction, default=True,
      help="keep freed host memory (mdssl_jax/host_memory.py), as a CPU "
      "training run does by default")
  args = parser.parse_args(argv)
  if args.batches < 1 or args.per_domain_batch < 1:
    parser.error("--batches and --per_domain_batch must be >= 1.")
  if args.step_images_per_sec <= 0:
    parser.error("--step_images_per_sec must be > 0.")
  return args


def _print_header(args: argparse.Namespace, tuned: bool) -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; "
        f"python {platform.python_version()}, tensorflow {tf.__version__}; "
        f"malloc tune {'on' if tuned else 'off'}")
  print(f"{args.warmup} warm-up + {args.batches} timed batches; "
        f"{args.per_domain_batch} images per domain per batch; step "
        f"consumes {args.step_images_per_sec:g} source images/s")
  header = (f"{'data':7s} {'domains':>7s} {'views':10s} {'img/batch':>9s} "
            f"{'s/batch':>8s} {'img/s':>8s} {'views/s':>8s} "
            f"{'x step':>7s} {'others':>6s}")
  print(header)
  print("-" * len(header), flush=True)


def main(argv: list[str] | None = None) -> int:
  args = _parse_args(argv)
  tuned = (host_memory.keep_freed_host_memory() if args.malloc_tune
           else False)
  _print_header(args, tuned)
  any_busy = False
  t_start = time.perf_counter()
  for data in args.data:
    if data == "shared" and not os.path.isdir(shared_dir()):
      print(f"shared: skipped, {shared_dir()} not found (set "
            "MDSSL_SHARED_DATA)", flush=True)
      continue
    base = make_config(data, "2x32", args.per_domain_batch)
    domains = sources.load_domains(base.data)
    for views in args.views:
      config = make_config(data, views, args.per_domain_batch)
      seconds, rows, nviews, others = time_pipeline(
          config, domains, args.batches, args.warmup)
      rate = rows * args.batches / seconds
      busy = others is not None and others > _BUSY_THRESHOLD
      any_busy |= busy
      print(f"{data:7s} {len(domains):7d} {views:10s} {rows:9d} "
            f"{seconds / args.batches:8.3f} {rate:8.1f} "
            f"{rate * nviews:8.1f} {rate / args.step_images_per_sec:7.1f} "
            + (f"{others:6.0%}" if others is not None else "   n/a")
            + ("  busy machine" if busy else ""), flush=True)
  print(f"total {time.perf_counter() - t_start:.0f} s"
        + ("; some rows ran on a busy machine (others > 10% CPU): rates "
           "are lower bounds" if any_busy else ""))
  return 0


if __name__ == "__main__":
  sys.exit(main())
