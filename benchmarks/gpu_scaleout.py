r"""One prepared GPU run: ResNet-50 bf16 SSL step and input pipeline rates.

On one accelerator, times the jitted train step (benchmarks/train_step.py:
real config, setup and state, a fixed device-resident batch) of SimCLR and
RELICv2 with ResNet-50 (ImageNet stem, 224 px, compute_dtype=bfloat16) —
ms/step, source images/s, views/s, TFLOP/s from XLA's cost analysis and
MFU against a bf16 matmul peak measured in the same run — and the input
pipeline alone (`pipeline.make_train_iterator` timed by
benchmarks/input_pipeline.py) at the same view settings on in-memory
synthetic 224 px images. Rows:

  simclr       SimCLR step, 2 × 224 px views
  relicv2      RELICv2 step, 2 × 224 px views (SimCLR's view budget)
  relicv2_4x2  RELICv2 step, its recipe: 4 × 224 px + 2 × 96 px views
  pipe_2       the input pipeline, 2 × 224 px views
  pipe_4x2     the input pipeline, 4 × 224 px + 2 × 96 px views

The 4 + 2-view rows use half of --batch (three times the views per image;
a step that still runs out of device memory prints an "out of memory" row
and the run goes on).

Prints one Markdown table for benchmarks/RESULTS.md on stdout, a row as
soon as it is measured (a run cut short still leaves a table), and
progress with elapsed seconds on stderr. Estimated 5-8 minutes on one
GPU, most of it compiling (not run on a GPU yet). `--tiny` runs the same
rows on CPU with a width-1/16 ResNet-18 at 32/16 px (about 2 minutes on 2
cores, mostly compiling): a check that the script works, not a
measurement.

  python benchmarks/gpu_scaleout.py                      # needs a GPU
  python benchmarks/gpu_scaleout.py --rows simclr pipe_2 --out table.md
  python benchmarks/gpu_scaleout.py --tiny               # CPU smoke run
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# After the environment set-up above (XLA and TensorFlow read it at import).
# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np

import input_pipeline
import train_step
from mdssl_jax import cli
from mdssl_jax import config_lib
from mdssl_jax import host_memory
from mdssl_jax.data import sources
# pylint: enable=g-import-not-at-top,wrong-import-position

ROWS = ("simclr", "relicv2", "relicv2_4x2", "pipe_2", "pipe_4x2")
# Row -> (method, large views, small views).
_SETTINGS = {
    "simclr": ("simclr", 2, 0),
    "relicv2": ("relicv2", 2, 0),
    "relicv2_4x2": ("relicv2", 4, 2),
    "pipe_2": ("simclr", 2, 0),
    "pipe_4x2": ("relicv2", 4, 2),
}
# The anchor: NVIDIA's PyTorch ResNet-50 AMP example on one A100.
_ANCHOR = ("about 2,470 images/s supervised on one A100 (NVIDIA's PyTorch "
           "ResNet-50 AMP example), i.e. roughly 1,200 source images/s for "
           "a two-view SSL step")


class Sizes:
  """The run's sizes: the GPU measurement or the --tiny CPU smoke run."""

  def __init__(self, args: argparse.Namespace):
    self.tiny = args.tiny
    self.large = 32 if args.tiny else 224
    self.small = 16 if args.tiny else 96
    self.batch = 16 if args.tiny else args.batch
    self.steps = 2 if args.tiny else args.steps
    self.warmup = 1 if args.tiny else args.warmup
    self.pipe_batches = 3 if args.tiny else args.pipe_batches
    self.pool = 64 if args.tiny else 512  # Synthetic images per domain.
    self.peak_n = 512 if args.tiny else 8192
    self.model = ("ResNet-18 width 1/16 cifar stem bf16" if args.tiny
                  else "ResNet-50 imagenet stem bf16")


def row_batch(row: str, sizes: Sizes) -> int:
  """Source images per step or batch of a row (4 + 2 views: half)."""
  return sizes.batch // 2 if _SETTINGS[row][2] else sizes.batch


def row_config(row: str, sizes: Sizes):
  """A validated run config for one row (train_step.py's, plus views)."""
  method, large, small = _SETTINGS[row]
  # "xla" convs: what conv_impl="auto" picks on a GPU, also in --tiny.
  config = train_step.make_config(method, argparse.Namespace(
      batch=row_batch(row, sizes), domains=2,
      device="cpu" if sizes.tiny else "gpu",
      image_size=sizes.large, width=1 / 16), "xla")
  config.compute_dtype = "bfloat16"
  config.views.large.count = large
  config.views.small.count = small
  config.views.small.size = sizes.small
  config_lib.validate(config)
  return config


def synthetic_domains(config, pool: int) -> list[sources.DomainData]:
  """In-memory random uint8 images at the config's size, one per domain.

  Augmentation cost does not depend on the pixels, so random images time
  the pipeline as real ones would, without loading or resizing a dataset.

  Args:
    config: a run config (its data.domains and data.image_size).
    pool: training images per domain.

  Returns:
    One DomainData per config domain, [pool, S, S, 3] train images.
  """
  rng = np.random.default_rng(0)
  size = config.data.image_size
  out = []
  for d in config.data.domains:
    images = rng.integers(0, 256, (pool, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, pool).astype(np.int32)
    out.append(sources.DomainData(
        name=d["name"], train_images=images, train_labels=labels,
        test_images=images[:8], test_labels=labels[:8], num_classes=10))
  return out


def views_label(config) -> str:
  """e.g. "4 × 224 px + 2 × 96 px views"."""
  v = config.views
  text = f"{v.large.count} × {v.large.size} px"
  if v.small.count:
    text += f" + {v.small.count} × {v.small.size} px"
  return text + " views"


def step_row(row: str, config, domains, sizes: Sizes,
             peak: float) -> tuple[str, float | None]:
  """Times one method's step.

  Returns:
    (Markdown row, source images/s or None when out of device memory).
  """
  batch = row_batch(row, sizes)
  setting = f"{sizes.model}, {batch} images × {views_label(config)}"
  try:
    r = train_step.time_step(config, sizes.steps, sizes.warmup, domains)
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    cells = [f"{row} step", setting, "out of memory", *["-"] * 5]
    return "| " + " | ".join(cells) + " |", None
  ms = float(np.median(r["wall_ms"]))
  views = config.views.large.count + config.views.small.count
  rate = batch / ms * 1e3
  tflops = r["flops"] / ms / 1e9 if r["flops"] else None
  cells = [f"{row} step", setting, f"{r['compile_s']:.0f}",
           f"{ms:.1f}", f"{rate:,.0f}", f"{rate * views:,.0f}",
           f"{tflops:.3g}" if tflops else "n/a",
           f"{tflops * 1e3 / peak:.1%}" if tflops else "n/a"]
  return "| " + " | ".join(cells) + " |", rate


def pipe_row(row: str, config, domains, sizes: Sizes) -> tuple[str, float]:
  """Times the input pipeline; returns (Markdown row, source images/s)."""
  seconds, rows, views, _ = input_pipeline.time_pipeline(
      config, domains, sizes.pipe_batches, warmup=1)
  rate = rows * sizes.pipe_batches / seconds
  cells = [f"{row} input", f"tf.data on {os.cpu_count()} CPUs, {rows} "
           f"images × {views_label(config)}", "-",
           f"{seconds / sizes.pipe_batches * 1e3:.1f}", f"{rate:,.0f}",
           f"{rate * views:,.0f}", "-", "-"]
  return "| " + " | ".join(cells) + " |", rate


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--tiny", action="store_true",
                      help="CPU smoke run (tiny model, 32 px)")
  parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
  parser.add_argument("--batch", type=int, default=256,
                      help="source images per step (2 domains)")
  parser.add_argument("--steps", type=int, default=10, help="timed steps")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--pipe_batches", type=int, default=10,
                      help="timed pipeline batches")
  parser.add_argument("--out", help="also write the table to this file")
  args = parser.parse_args(argv)
  if args.batch < 4 or args.batch % 4:
    parser.error("--batch must be a multiple of 4 (2 domains; the 4 + 2-"
                 "view rows take half of it).")
  if args.steps < 1 or args.pipe_batches < 1:
    parser.error("--steps and --pipe_batches must be >= 1.")
  return args


def main(argv: list[str] | None = None) -> int:
  args = _parse_args(argv)
  sizes = Sizes(args)
  t0 = time.perf_counter()

  def progress(text: str) -> None:
    print(f"[{time.perf_counter() - t0:5.0f} s] {text}", file=sys.stderr,
          flush=True)

  host_memory.keep_freed_host_memory()
  cli.hide_gpus_from_tf()  # tf.data stays on the CPU.
  backend = jax.default_backend()
  if not args.tiny and backend != "gpu":
    sys.exit(f"error: needs a GPU backend, jax has {backend!r}; --tiny "
             "runs the CPU smoke version.")
  device = jax.devices()[0]
  progress(f"{device.device_kind} ({backend}, 1 of {jax.device_count()} "
           f"devices); measuring the bf16 {sizes.peak_n}² matmul peak")
  peak = max(train_step.matmul_peak(sizes.peak_n, jnp.bfloat16)
             for _ in range(3))
  lines = [
      f"{'Smoke run (--tiny, not a measurement)' if sizes.tiny else 'GPU'}"
      f": {device.device_kind}, jax {jax.__version__}, {os.cpu_count()} "
      f"CPUs, {datetime.date.today()}; bf16 {sizes.peak_n}² matmul peak "
      f"{peak / 1e3:.3g} TFLOP/s (best of 3×5 calls); MFU = XLA's step "
      f"FLOPs / time / that peak; {sizes.warmup} warm-up + {sizes.steps} "
      "timed steps, median.",
      "",
      "| row | setting | compile s | ms/step or batch | source img/s | "
      "views/s | TFLOP/s | MFU |",
      "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
  ]
  print("\n".join(lines), flush=True)
  rates = {}
  for row in args.rows:
    config = row_config(row, sizes)
    progress(f"{row}: {views_label(config)}, {sizes.pool} synthetic "
             "images per domain")
    domains = synthetic_domains(config, sizes.pool)
    if row.startswith("pipe"):
      line, rates[row] = pipe_row(row, config, domains, sizes)
    else:
      progress(f"{row}: compiling and timing the step")
      line, rates[row] = step_row(row, config, domains, sizes, peak)
    print(line, flush=True)
    lines.append(line)
  notes = [""]
  for pipe, step in (("pipe_2", "simclr"), ("pipe_4x2", "relicv2_4x2")):
    if rates.get(pipe) and rates.get(step):
      notes.append(f"Input pipeline / {step} step: "
                   f"{rates[pipe] / rates[step]:.2f}× (> 1: it keeps up).")
  notes.append(f"Anchor: {_ANCHOR}.")
  print("\n".join(notes), flush=True)
  lines += notes
  progress("done")
  if args.out:
    with open(args.out, "w") as f:
      f.write("\n".join(lines) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
