r"""Micro-benchmark of the conv implementations on ResNet-18 CIFAR layers.

For every convolution shape of a ResNet-18 with the CIFAR stem at 32 px
(3×3 stride 1 at 32²×64, 16²×128, 8²×256, 4²×512; the stride-2 3×3
transitions; the stride-2 1×1 shortcuts; the 3→64 stem) and every
`conv_impl` of `mdssl_jax.models.fast_conv`, prints forward and
forward+backward times (median and min of several runs after a warm-up),
GFLOP/s, and the ratio to "xla".

The machine is often shared: the script also reads /proc/stat before and
after each measurement and prints the CPU share used by *other* processes;
rows where others used more than 10% of the machine are marked "busy".
"cpu ms" is this process's CPU time (user + sys, all threads) for the best
run; on a busy machine it is a steadier basis for comparing impls than wall
time.

  python benchmarks/conv_micro.py                    # batch 256, ~2-3 min
  python benchmarks/conv_micro.py --batch 64 --repeats 3 --layers s1_32 s2_32
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# After the environment set-up above (XLA and TensorFlow read it at import).
# pylint: disable=g-import-not-at-top,wrong-import-position
import jax

from mdssl_jax import host_memory
from mdssl_jax.models import fast_conv
# pylint: enable=g-import-not-at-top,wrong-import-position

_BUSY_THRESHOLD = 0.10


@dataclasses.dataclass(frozen=True)
class Layer:
  name: str
  hw: int       # input height = width
  cin: int
  cout: int
  kernel: int
  stride: int
  input_grad: bool = True  # False for the stem (its input is the image)

  def flops(self, batch: int) -> float:
    out = (self.hw + 2 * (self.kernel // 2) - self.kernel) // self.stride + 1
    return 2.0 * batch * out * out * self.kernel ** 2 * self.cin * self.cout


LAYERS = (
    Layer("stem_32", 32, 3, 64, 3, 1, input_grad=False),
    Layer("s1_32", 32, 64, 64, 3, 1),
    Layer("s2_32", 32, 64, 128, 3, 2),
    Layer("sc_32", 32, 64, 128, 1, 2),
    Layer("s1_16", 16, 128, 128, 3, 1),
    Layer("s2_16", 16, 128, 256, 3, 2),
    Layer("sc_16", 16, 128, 256, 1, 2),
    Layer("s1_8", 8, 256, 256, 3, 1),
    Layer("s2_8", 8, 256, 512, 3, 2),
    Layer("sc_8", 8, 256, 512, 1, 2),
    Layer("s1_4", 4, 512, 512, 3, 1),
)


def cpu_model() -> str:
  """Model name from /proc/cpuinfo (platform string elsewhere)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


class CpuShare:
  """CPU share of other processes between `start()` and `stop()`.

  Reads the machine's busy jiffies from /proc/stat and this process's
  utime + stime from /proc/self/stat; others = (machine − self) / capacity.
  Returns None where /proc is unavailable.
  """

  def __init__(self):
    self._t0 = None

  @staticmethod
  def _read() -> tuple[int, int, int] | None:
    try:
      with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
      with open("/proc/self/stat") as f:
        # Fields after the ")" closing the command name; utime, stime are
        # the 14th and 15th fields of the whole line.
        rest = f.read().rsplit(")", 1)[1].split()
      idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
      return sum(fields), sum(fields) - idle, int(rest[11]) + int(rest[12])
    except (OSError, IndexError, ValueError):
      return None

  def start(self) -> None:
    self._t0 = self._read()

  def stop(self) -> float | None:
    t1 = self._read()
    if self._t0 is None or t1 is None:
      return None
    total = t1[0] - self._t0[0]
    if total <= 0:
      return None
    others = (t1[1] - self._t0[1]) - (t1[2] - self._t0[2])
    return max(0.0, others / total)


@dataclasses.dataclass
class Timing:
  median_ms: float
  min_ms: float
  cpu_ms: float  # CPU time of the fastest run.
  others: float | None


def time_interleaved(fns: dict[str, tuple], repeats: int) -> dict[str, Timing]:
  """Times every fn(*args) `repeats` times, round-robin after one warm-up.

  Interleaving spreads slow phases of a shared machine evenly over the
  variants being compared.
  """
  for fn, args in fns.values():
    jax.block_until_ready(fn(*args))
  walls = {k: [] for k in fns}
  cpus = {k: [] for k in fns}
  share = CpuShare()
  share.start()
  for _ in range(repeats):
    for key, (fn, args) in fns.items():
      c0, t0 = time.process_time(), time.perf_counter()
      jax.block_until_ready(fn(*args))
      walls[key].append(time.perf_counter() - t0)
      cpus[key].append(time.process_time() - c0)
  others = share.stop()
  out = {}
  for key in fns:
    best = min(range(repeats), key=walls[key].__getitem__)
    out[key] = Timing(statistics.median(walls[key]) * 1e3,
                      walls[key][best] * 1e3, cpus[key][best] * 1e3, others)
  return out


# Benchmark-only variant: FastConv with the GEMM kernel gradient everywhere,
# to show where "auto" (= "matmul") keeps XLA's kernel gradient and why.
_VARIANTS = {"matmul-gemm": functools.partial(fast_conv.FastConv,
                                              kernel_grad="gemm")}


def conv_class(impl: str):
  return _VARIANTS[impl] if impl in _VARIANTS else fast_conv.get_conv(impl)


def build(layer: Layer, impl: str, batch: int):
  """Returns (fwd, fwd_bwd, args_fwd, args_bwd) jitted for one layer."""
  p = layer.kernel // 2
  conv = conv_class(impl)(
      features=layer.cout, kernel_size=(layer.kernel, layer.kernel),
      strides=(layer.stride, layer.stride), padding=((p, p), (p, p)),
      use_bias=False)
  kx, kp, kd = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(kx, (batch, layer.hw, layer.hw, layer.cin))
  params = conv.init(kp, x[:1])
  y_shape = jax.eval_shape(conv.apply, params, x).shape
  dy = jax.random.normal(kd, y_shape)

  if layer.input_grad:
    def fwd_bwd(params, x, dy):
      y, vjp = jax.vjp(conv.apply, params, x)
      return y, vjp(dy)
  else:
    def fwd_bwd(params, x, dy):
      y, vjp = jax.vjp(lambda q: conv.apply(q, x), params)
      return y, vjp(dy)
  return jax.jit(conv.apply), jax.jit(fwd_bwd), (params, x), (params, x, dy)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument(
      "--impls", nargs="+", default=list(fast_conv.CONV_IMPLS),
      help="conv_impl names, or the benchmark-only 'matmul-gemm' (FastConv "
      "with the GEMM kernel gradient on every layer)")
  parser.add_argument("--layers", nargs="+", default=[l.name for l in LAYERS],
                      help="subset of: " + " ".join(l.name for l in LAYERS))
  parser.add_argument(
      "--malloc-tune", action=argparse.BooleanOptionalAction, default=True,
      help="keep freed host memory mapped (glibc mallopt, "
      "mdssl_jax/host_memory.py), as training does on CPU by default")
  args = parser.parse_args(argv)
  tuned = host_memory.keep_freed_host_memory() if args.malloc_tune else False
  known = {l.name: l for l in LAYERS}
  unknown = [n for n in args.layers if n not in known]
  if unknown:
    parser.error(f"unknown layers {unknown}; choose from {sorted(known)}")
  for impl in args.impls:
    conv_class(impl)  # Fails early on a typo.
  if "xla" not in args.impls:
    args.impls = ["xla"] + args.impls

  print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; "
        f"python {platform.python_version()}, jax {jax.__version__}, "
        f"backend {jax.default_backend()}; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; malloc tune "
        f"{'on' if tuned else 'off'}")
  print(f"batch {args.batch}, {args.repeats} timed runs after 1 warm-up; "
        "times in ms; GF/s from the median; 'fb' = forward + backward "
        "(input and kernel gradients; kernel only for the stem)")
  header = (f"{'layer':8s} {'shape':>22s} {'impl':11s} "
            f"{'fwd med':>8s} {'fwd min':>8s} {'GF/s':>6s} {'x xla':>6s} "
            f"{'fb med':>8s} {'fb min':>8s} {'fb cpu':>8s} {'GF/s':>6s} "
            f"{'x xla':>6s} {'others':>6s}")
  print(header)
  print("-" * len(header))
  t_start = time.perf_counter()
  any_busy = False
  for name in args.layers:
    layer = known[name]
    flops = layer.flops(args.batch)
    fb_flops = flops * (3 if layer.input_grad else 2)
    built = {impl: build(layer, impl, args.batch) for impl in args.impls}
    t_fwd = time_interleaved({k: (b[0], b[2]) for k, b in built.items()},
                             args.repeats)
    t_fb = time_interleaved({k: (b[1], b[3]) for k, b in built.items()},
                            args.repeats)
    ref_f, ref_b = t_fwd["xla"].median_ms, t_fb["xla"].median_ms
    for impl in args.impls:
      tf, tb = t_fwd[impl], t_fb[impl]
      shares = [s for s in (tf.others, tb.others) if s is not None]
      others = max(shares) if shares else None
      busy = others is not None and others > _BUSY_THRESHOLD
      any_busy |= busy
      shape = (f"{layer.hw}²x{layer.cin}>{layer.cout} "
               f"{layer.kernel}x{layer.kernel}/{layer.stride}")
      print(f"{name:8s} {shape:>22s} {impl:11s} "
            f"{tf.median_ms:8.1f} {tf.min_ms:8.1f} "
            f"{flops / tf.median_ms / 1e6:6.1f} {ref_f / tf.median_ms:6.2f} "
            f"{tb.median_ms:8.1f} {tb.min_ms:8.1f} {tb.cpu_ms:8.1f} "
            f"{fb_flops / tb.median_ms / 1e6:6.1f} "
            f"{ref_b / tb.median_ms:6.2f} "
            + (f"{others:6.0%}" if others is not None else "   n/a")
            + ("  busy machine" if busy else ""), flush=True)
  print(f"total {time.perf_counter() - t_start:.0f} s"
        + ("; some rows ran on a busy machine (others > 10% CPU): compare "
           "impls by ratio and cpu ms, not absolute wall times"
           if any_busy else ""))
  return 0


if __name__ == "__main__":
  sys.exit(main())
