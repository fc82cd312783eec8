r"""Peak memory of MDSSL's two encoding routes (METHODS.md §2.6, paper A.5).

Routes (`method_args` of MDSSL):

* ``global``: one forward pass over the whole batch, BatchNorm statistics
  over all 2·N·D rows (bn_groups="global");
* ``per_domain``: per-domain BatchNorm statistics, one pass per domain,
  every domain's activations kept for the backward pass
  (bn_groups="per_domain", encode_domains_separately=False);
* ``separate``: the same model encoded one domain at a time under
  ``jax.checkpoint`` (encode_domains_separately=True): only one domain's
  activations are live, the backward pass recomputes them.

Each route runs in its own subprocess (so peak RSS is the route's own):
it builds the real trainer step (`train.make_train_step`, one device, state
donated) for D demo domains (repeated under new names past the three
built-in ones) and random images, and reports XLA's compiled
``memory_analysis()`` (temporary buffers, arguments, outputs), the
process's peak RSS after `--steps` steps, the device's peak bytes in use
where the backend reports it (GPU), the compile time and ms/step.

  python benchmarks/mdssl_memory.py                      # D = 4, N = 32
  python benchmarks/mdssl_memory.py --per_domain 256 --width 1.0
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# After the environment set-up above (XLA and TensorFlow read it at import).
# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np

from mdssl_jax import config_lib
from mdssl_jax import host_memory
from mdssl_jax import presets
from mdssl_jax import sharding as sharding_lib
from mdssl_jax import train
from mdssl_jax.data import sources
# pylint: enable=g-import-not-at-top,wrong-import-position

ROUTES = {"global": ("global", False), "per_domain": ("per_domain", False),
          "separate": ("auto", True)}
_MIB = 2.0 ** 20


def make_config(route: str, args: argparse.Namespace):
  """MDSSL on `args.domains` demo domains at the benchmark's size."""
  c = config_lib.get_default_config("mdssl")
  presets.demo_data(c, presets.DEMO_DOMAINS[:1], image_size=args.image_size,
                    per_domain_batch=args.per_domain)
  demo = presets.DEMO_DOMAINS
  c.data.domains = [{"name": f"domain{i}", "source": "demo",
                     "demo_name": demo[i % len(demo)]}
                    for i in range(args.domains)]
  c.model.update(depth=args.depth, stem="cifar",
                 width_multiplier=args.width, conv_impl="xla")
  c.mesh_shape = 1
  c.total_steps = 1000
  groups, separate = ROUTES[route]
  c.method_args.update(bn_groups=groups, encode_domains_separately=separate)
  config_lib.validate(c)
  return c


def fake_batch(config, mesh) -> dict[str, jax.Array]:
  """Random images shaped like the pipeline's batch, on the device."""
  rng = np.random.default_rng(0)
  d, n = len(config.data.domains), config.data.per_domain_batch
  size = config.views.large.size
  batch = {"large": rng.standard_normal((d * n, 2, size, size, 3),
                                        np.float32),
           "domain": np.repeat(np.arange(d, dtype=np.int32), n),
           "label": np.zeros(d * n, np.int32),
           "index": np.arange(d * n, dtype=np.int64)}
  return jax.device_put(batch, sharding_lib.batch_sharding(mesh))


def measure(route: str, args: argparse.Namespace) -> dict:
  """Compiles and runs the train step of one route; memory and timings."""
  config = make_config(route, args)
  domains = sources.load_domains(config.data)
  setup = train.build_setup(config, train.run_shape(config, domains))
  mesh = sharding_lib.make_mesh(1)
  state = train.create_state(setup, config, sharding_lib.replicated(mesh))
  batch = fake_batch(config, mesh)
  t0 = time.perf_counter()
  compiled = train.make_train_step(setup, mesh).lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  state, metrics = compiled(state, batch)  # Warm-up.
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for _ in range(args.steps):
    state, metrics = compiled(state, batch)
  jax.block_until_ready((state, metrics))
  step_ms = (time.perf_counter() - t0) * 1e3 / args.steps
  stats = jax.devices()[0].memory_stats() or {}
  return {"route": route, "temp": mem.temp_size_in_bytes,
          "arguments": mem.argument_size_in_bytes,
          "outputs": mem.output_size_in_bytes,
          # ru_maxrss is in KiB on Linux.
          "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                      * 1024,
          "device_peak": stats.get("peak_bytes_in_use"),
          "compile_s": compile_s, "step_ms": step_ms,
          "loss": float(metrics["loss"])}


def mib(x) -> str:
  return "-" if x is None else f"{x / _MIB:.1f}"


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--domains", type=int, default=4, help="D")
  parser.add_argument("--per_domain", type=int, default=32,
                      help="N images per domain per step (2 views each)")
  parser.add_argument("--image_size", type=int, default=32)
  parser.add_argument("--depth", type=int, default=18)
  parser.add_argument("--width", type=float, default=0.25,
                      help="ResNet width multiplier")
  parser.add_argument("--steps", type=int, default=2, help="timed steps")
  parser.add_argument("--routes", nargs="+", default=list(ROUTES),
                      choices=list(ROUTES))
  parser.add_argument("--child", choices=list(ROUTES), help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    host_memory.keep_freed_host_memory()
    print(json.dumps(measure(args.child, args)), flush=True)
    return 0

  print(f"MDSSL train step, D={args.domains} × N={args.per_domain} images × "
        f"2 views at {args.image_size} px, ResNet-{args.depth} width "
        f"{args.width}, backend {jax.default_backend()}", flush=True)
  rows = []
  flags = [f"--{k}={getattr(args, k)}" for k in
           ("domains", "per_domain", "image_size", "depth", "width", "steps")]
  for route in args.routes:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), f"--child={route}",
         *flags], check=True, capture_output=True, text=True).stdout
    rows.append(json.loads(out.strip().splitlines()[-1]))
  header = ("route", "temp MiB", "args MiB", "out MiB", "peak RSS MiB",
            "device peak MiB", "compile s", "ms/step", "loss")
  print(" | ".join(header))
  for r in rows:
    print(" | ".join([
        r["route"], mib(r["temp"]), mib(r["arguments"]), mib(r["outputs"]),
        mib(r["peak_rss"]), mib(r["device_peak"]), f"{r['compile_s']:.1f}",
        f"{r['step_ms']:.0f}", f"{r['loss']:.4f}"]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
