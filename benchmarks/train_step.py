r"""Benchmark of the jitted train step (no input pipeline).

For each method (`--methods`) and conv implementation (`--conv_impl`),
builds the real config (`config_lib.get_default_config` + `presets`), the
setup and state, compiles the trainer's step (`train.make_train_step` on
one device, state donated), warms it up and
times `--steps` steps on one fixed device-resident batch of random images.
Prints images/s (views encoded per second: source images × views, e.g.
2·256 / step time, the unit of benchmarks/peer_lightly.py), ms/step, GFLOP/s
from XLA's cost analysis of the compiled step, the fraction of the fp32
matmul peak measured in the same run (a 2048² matmul), and the CPU share of
other processes during the timed steps (marked "busy machine" above 10 %,
as in `conv_micro.py`). It then times the jitted MDSSL loss alone
(value and gradient) on [2·1024, 128] projections, i.e. batch 4×256
(4 domains × 256 images, 2 views), and reports its share of a step.

  python benchmarks/train_step.py                       # 2×256, xla vs matmul
  python benchmarks/train_step.py --batch 32 --steps 2 --methods simclr mdssl
  python benchmarks/train_step.py --device gpu          # ResNet-50 bf16, MFU

`--device gpu` runs ResNet-50 (ImageNet stem) at 224 px with
compute_dtype=bfloat16 and reports MFU against a measured bf16 matmul peak
(8192², fp32 accumulation). It refuses to run without a GPU backend.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# After the environment set-up above (XLA and TensorFlow read it at import).
# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np

from conv_micro import _BUSY_THRESHOLD, CpuShare, cpu_model
from mdssl_jax import config_lib
from mdssl_jax import host_memory
from mdssl_jax import presets
from mdssl_jax import sharding as sharding_lib
from mdssl_jax import train
from mdssl_jax.data import sources
from mdssl_jax.losses import mdssl_loss
# pylint: enable=g-import-not-at-top,wrong-import-position

METHODS = ("simclr", "mdssl", "byol", "relicv2")
_DEMO = presets.DEMO_DOMAINS


def compiled_flops(compiled) -> float | None:
  """FLOPs of a compiled executable from XLA's cost analysis (None if n/a)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


def matmul_peak(n: int, dtype: Any, repeats: int = 5) -> float:
  """Best GFLOP/s of an n×n×n matmul (fp32 accumulation) over `repeats`.

  Args:
    n: matrix side.
    dtype: operand dtype (jnp.float32 or jnp.bfloat16).
    repeats: timed calls after one warm-up.

  Returns:
    GFLOP/s of the fastest call (2·n³ FLOPs).
  """
  ka, kb = jax.random.split(jax.random.PRNGKey(1))
  a = jax.random.normal(ka, (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(kb, (n, n), jnp.float32).astype(dtype)
  f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
  jax.block_until_ready(f(a, b))
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(f(a, b))
    best = min(best, time.perf_counter() - t0)
  return 2.0 * n ** 3 / best / 1e9


def make_config(method: str, args: argparse.Namespace, conv_impl: str):
  """The benchmark's run config: real defaults, demo domains, fixed size."""
  c = config_lib.get_default_config(method)
  n_dom = args.domains
  if args.batch % n_dom:
    raise ValueError(f"--batch {args.batch} must be divisible by --domains "
                     f"{n_dom} (per-domain batch = batch / domains).")
  domains = (_DEMO * n_dom)[:n_dom] if n_dom <= len(_DEMO) else None
  if domains is None:
    raise ValueError(f"--domains must be 1..{len(_DEMO)}, got {n_dom}.")
  size = 224 if args.device == "gpu" else args.image_size
  presets.demo_data(c, domains, image_size=size,
                    per_domain_batch=args.batch // n_dom)
  if args.device == "gpu":
    c.model.depth = 50
    c.model.stem = "imagenet"
    c.compute_dtype = "bfloat16"
  else:
    c.model.depth = 18
    c.model.stem = "cifar"
    c.model.width_multiplier = args.width
  c.model.conv_impl = conv_impl
  c.total_steps = 1000
  c.optim.warmup_steps = 10
  if method in ("byol", "relicv2"):
    # BYOL heads as in configs/byol.py (the schema's default projector and
    # predictor output widths differ, 128 vs 256, and cannot be chained).
    c.projector.update(hidden_dims=(4096,), out_dim=256)
    c.predictor.update(hidden_dims=(4096,), out_dim=256)
  if method == "relicv2":
    c.method_args.num_negatives = min(c.method_args.num_negatives,
                                      args.batch - 1)
  config_lib.validate(c)
  return c


def fake_batch(config, rng: np.random.Generator,
               mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """A device-resident batch shaped like the pipeline's, random content."""
  n_dom = len(config.data.domains)
  per = config.data.per_domain_batch
  b = n_dom * per
  size = config.views.large.size
  out = {
      "large": rng.standard_normal(
          (b, config.views.large.count, size, size, 3), np.float32),
      "domain": np.repeat(np.arange(n_dom, dtype=np.int32), per),
      "label": rng.integers(0, 10, b).astype(np.int32),
      "index": np.arange(b, dtype=np.int64),
  }
  if config.views.small.count > 0:
    s = config.views.small.size
    out["small"] = rng.standard_normal(
        (b, config.views.small.count, s, s, 3), np.float32)
  return jax.device_put(out, sharding_lib.batch_sharding(mesh))


def time_step(config, steps: int, warmup: int,
              domains: list[sources.DomainData] | None = None
              ) -> dict[str, Any]:
  """Compiles and times the trainer's step for one config.

  Args:
    config: a validated run config.
    steps: timed steps.
    warmup: untimed steps after compilation.
    domains: loaded domains, only for the run's shape (schedules); None
      loads config.data's (the demo domains: slow at 224 px).

  Returns:
    dict with compile_s, flops (per step, or None), wall_ms (list),
    cpu_ms (list), others (CPU share of other processes or None), faults
    (minor page faults per timed step).
  """
  if domains is None:
    domains = sources.load_domains(config.data)
  setup = train.build_setup(config, train.run_shape(config, domains))
  mesh = sharding_lib.make_mesh(1)  # The default device.
  state = train.create_state(setup, config, sharding_lib.replicated(mesh))
  batch = fake_batch(config, np.random.default_rng(0), mesh)
  step = train.make_train_step(setup, mesh)
  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  flops = compiled_flops(compiled)
  for _ in range(warmup):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(state)
  walls, cpus = [], []
  faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  share = CpuShare()
  share.start()
  for _ in range(steps):
    c0, t0 = time.process_time(), time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    walls.append((time.perf_counter() - t0) * 1e3)
    cpus.append((time.process_time() - c0) * 1e3)
  others = share.stop()
  faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            - faults0) / steps
  if float(metrics["nonfinite"]) > 0:
    print("  warning: the last step was non-finite", flush=True)
  return {"compile_s": compile_s, "flops": flops, "wall_ms": walls,
          "cpu_ms": cpus, "others": others, "faults": faults}


def time_fn(fn: Callable, fn_args: tuple, repeats: int) -> float:
  """Median wall ms of fn(*fn_args) over `repeats` calls after a warm-up."""
  jax.block_until_ready(fn(*fn_args))
  walls = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*fn_args))
    walls.append((time.perf_counter() - t0) * 1e3)
  return statistics.median(walls)


def mdssl_loss_ms(rows: int, dim: int, num_domains: int,
                  repeats: int) -> float:
  """Median ms of the jitted MDSSL loss value-and-grad on [rows, dim]."""
  b = rows // 2
  k1, k2 = jax.random.split(jax.random.PRNGKey(2))
  z1 = jax.random.normal(k1, (b, dim))
  z2 = jax.random.normal(k2, (b, dim))
  dom = jnp.repeat(jnp.arange(num_domains, dtype=jnp.int32),
                   b // num_domains)

  def loss(z1, z2):
    return mdssl_loss(z1, z2, dom, temperature=0.1, lambda1=1.0,
                      lambda2=0.1)[0]

  fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  return time_fn(fn, (z1, z2), repeats)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--methods", nargs="+", default=list(METHODS),
                      choices=METHODS)
  parser.add_argument("--batch", type=int, default=256,
                      help="source images per step (each in 2 views)")
  parser.add_argument("--domains", type=int, default=2,
                      help="demo domains sharing the batch")
  parser.add_argument("--conv_impl", nargs="+", default=["xla", "matmul"],
                      choices=["xla", "matmul", "auto"])
  parser.add_argument("--steps", type=int, default=3, help="timed steps")
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--image_size", type=int, default=32)
  parser.add_argument("--width", type=float, default=1.0,
                      help="ResNet-18 width multiplier (CPU mode)")
  parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                      help="gpu: ResNet-50 bf16, ImageNet stem, 224 px")
  parser.add_argument("--loss_batch", type=int, default=1024,
                      help="images for the MDSSL loss share (4 domains, 2 "
                      "views: [2·loss_batch, 128] projections)")
  parser.add_argument("--no_loss_share", action="store_true")
  parser.add_argument(
      "--malloc-tune", action=argparse.BooleanOptionalAction, default=True,
      help="keep freed host memory mapped (mdssl_jax/host_memory.py), as "
      "train_and_evaluate does on CPU by default (config.keep_host_memory); "
      "--no-malloc-tune measures glibc's defaults")
  args = parser.parse_args(argv)
  if args.steps < 1 or args.batch < 2:
    parser.error("--steps must be >= 1 and --batch >= 2.")
  # Before the backend starts its threads (they would get malloc arenas of
  # their own under glibc's defaults).
  tuned = host_memory.keep_freed_host_memory() if args.malloc_tune else False
  backend = jax.default_backend()
  if args.device == "gpu" and backend != "gpu":
    parser.error(f"--device gpu needs a GPU backend; jax has {backend!r}.")

  print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; "
        f"python {platform.python_version()}, jax {jax.__version__}, "
        f"backend {backend} ({jax.devices()[0].device_kind}); "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; malloc tune "
        f"{'on' if tuned else 'off'}", flush=True)
  if args.device == "gpu":
    peak_dtype, peak_n, peak_name = jnp.bfloat16, 8192, "bf16 8192²"
    model = "ResNet-50 imagenet stem 224 px bf16"
  else:
    peak_dtype, peak_n, peak_name = jnp.float32, 2048, "fp32 2048²"
    model = (f"ResNet-18 cifar stem {args.image_size} px fp32 width "
             f"{args.width:g}")
  # Best of three rounds: one slow moment of a shared host would otherwise
  # understate the peak and overstate every row's fraction of it.
  peak = max(matmul_peak(peak_n, peak_dtype) for _ in range(3))
  print(f"matmul peak ({peak_name}, best of 3×5 calls): {peak:.1f} GFLOP/s",
        flush=True)
  print(f"{model}; batch {args.batch} images × 2 views over {args.domains} "
        f"domains; {args.warmup} warm-up + {args.steps} timed steps; fixed "
        "device-resident batch", flush=True)
  header = (f"{'method':8s} {'conv':7s} {'compile s':>9s} {'ms/step':>9s} "
            f"{'min ms':>9s} {'cpu ms':>9s} {'img/s':>7s} {'GFLOP':>7s} "
            f"{'GF/s':>6s} {'of peak':>7s} {'faults':>7s} {'others':>6s}")
  print(header)
  print("-" * len(header), flush=True)
  step_ms = {}
  any_busy = False
  t_start = time.perf_counter()
  for method in args.methods:
    for impl in args.conv_impl:
      config = make_config(method, args, impl)
      r = time_step(config, args.steps, args.warmup)
      views = args.batch * (config.views.large.count
                            + config.views.small.count)
      med = statistics.median(r["wall_ms"])
      step_ms[(method, impl)] = med
      busy = r["others"] is not None and r["others"] > _BUSY_THRESHOLD
      any_busy |= busy
      fl = r["flops"]
      gfs = fl / med / 1e6 if fl else None
      print(f"{method:8s} {impl:7s} {r['compile_s']:9.1f} {med:9.1f} "
            f"{min(r['wall_ms']):9.1f} {min(r['cpu_ms']):9.1f} "
            f"{views / med * 1e3:7.1f} "
            + (f"{fl / 1e9:7.1f} {gfs:6.1f} {gfs / peak:7.1%} " if fl
               else f"{'n/a':>7s} {'n/a':>6s} {'n/a':>7s} ")
            + f"{r['faults']:7.0f} "
            + (f"{r['others']:6.0%}" if r["others"] is not None
               else "   n/a")
            + ("  busy machine" if busy else ""), flush=True)

  if not args.no_loss_share:
    rows = 2 * args.loss_batch
    loss_ms = mdssl_loss_ms(rows, 128, 4, repeats=5)
    print(f"MDSSL loss alone (value+grad, jitted) on [{rows}, 128] "
          f"projections, 4 domains: {loss_ms:.2f} ms", flush=True)
    for (method, impl), ms in step_ms.items():
      if method != "mdssl":
        continue
      # Encoder cost is ~linear in the batch; the loss is quadratic in it.
      scale = args.loss_batch / args.batch
      est = ms * scale
      how = ("measured" if scale == 1 else
             f"step at batch {args.batch} × {scale:g}, linear estimate")
      print(f"  share of an mdssl/{impl} step at batch {args.loss_batch} "
            f"({est:.0f} ms, {how}): {loss_ms / est:.2%}", flush=True)
  print(f"total {time.perf_counter() - t_start:.0f} s"
        + ("; some rows ran on a busy machine (others > 10% CPU): compare "
           "conv impls by ratio and cpu ms, not absolute wall times"
           if any_busy else ""))
  return 0


if __name__ == "__main__":
  sys.exit(main())
