r"""Step-time cost of the online monitors (`config.monitors`).

For the demo config (`configs/demo.py`: MDSSL, 3 domains × 32, width-⅛
ResNet-18 at 32 px) and the tests' tiny config (`presets.tiny_test_config`),
compiles the trainer's step once per variant: every monitor off, each
monitor alone, all on, and RankMe with every_steps=1 (the cost of one SVD
step; the default cadence amortises it). Then it times the variants in
interleaved rounds (so that load from other processes hits all alike) on
one fixed device-resident batch and prints ms/step (wall median and mean,
and the median process CPU time, which load from other processes disturbs
less than wall time) and the overhead against "off". Last, it times the
monitors' own update (`Monitors.update`, jitted alone at the run's shapes:
the probe, kNN and RankMe work a step adds), on a step without and with a
RankMe computation.

  python benchmarks/monitor_cost.py                  # demo and tiny, 30 steps
  python benchmarks/monitor_cost.py --configs tiny --steps 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# After the environment set-up above (XLA and TensorFlow read it at import).
# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import ml_collections
import numpy as np

from mdssl_jax import config_lib
from mdssl_jax import presets
from mdssl_jax import sharding as sharding_lib
from mdssl_jax import train
from mdssl_jax.data import sources
from train_step import fake_batch
# pylint: enable=g-import-not-at-top,wrong-import-position

MONITORS = ("online_probe", "online_knn", "rankme")
VARIANTS = ("off",) + MONITORS + ("all", "rankme_every_step")


def base_config(name: str) -> ml_collections.ConfigDict:
  """The demo or the tiny test config."""
  if name == "demo":
    return config_lib.load_config(os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "configs",
        "demo.py"))
  c = config_lib.get_default_config("mdssl")
  return presets.tiny_test_config(c)


def variant_config(name: str, variant: str) -> ml_collections.ConfigDict:
  """`name`'s config with the monitors of `variant` on (defaults else)."""
  c = base_config(name)
  for m in MONITORS:
    c.monitors[m].enabled = variant in (m, "all")
  if variant == "rankme_every_step":
    c.monitors.rankme.update(enabled=True, every_steps=1)
  config_lib.validate(c)
  return c


def compiled_step(config, domains):
  """(compiled step, state, batch) for `config` on the default device."""
  setup = train.build_setup(config, train.run_shape(config, domains),
                            train.class_counts(domains))
  mesh = sharding_lib.make_mesh(1)
  state = train.create_state(setup, config, sharding_lib.replicated(mesh))
  rng = np.random.default_rng(0)
  batch = fake_batch(config, rng, mesh)
  # Labels inside each domain's own label space.
  per = config.data.per_domain_batch
  labels = np.concatenate([rng.integers(0, c, per)
                           for c in train.class_counts(domains)])
  batch["label"] = jax.device_put(labels.astype(np.int32),
                                  batch["domain"].sharding)
  step = train.make_train_step(setup, mesh)
  compiled = step.lower(state, batch).compile()
  state, _ = compiled(state, batch)  # Warm-up.
  jax.block_until_ready(state)
  return compiled, state, batch


def measure(name: str, steps: int, rounds: int
            ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
  """(wall ms, CPU ms) of each variant's steps, interleaved over `rounds`."""
  domains = sources.load_domains(base_config(name).data)
  runs = {}
  for v in VARIANTS:
    t0 = time.perf_counter()
    runs[v] = list(compiled_step(variant_config(name, v), domains))
    print(f"  {name}/{v}: compiled in {time.perf_counter() - t0:.1f} s",
          flush=True)
  walls = {v: [] for v in VARIANTS}
  cpus = {v: [] for v in VARIANTS}
  per_round = max(1, steps // rounds)
  for _ in range(rounds):
    for v in VARIANTS:
      compiled, state, batch = runs[v]
      for _ in range(per_round):
        c0, t0 = time.process_time(), time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
        walls[v].append((time.perf_counter() - t0) * 1e3)
        cpus[v].append((time.process_time() - c0) * 1e3)
      runs[v][1] = state
  return walls, cpus


def update_ms(name: str, repeats: int = 20) -> dict[str, float]:
  """Median ms of the jitted `Monitors.update` alone, every monitor on.

  Returns:
    {"step": a step without RankMe, "rankme_step": one computing it}.
  """
  config = variant_config(name, "all")
  domains = sources.load_domains(config.data)
  setup = train.build_setup(config, train.run_shape(config, domains),
                            train.class_counts(domains))
  mon = setup.monitors
  b = config_lib.global_batch(config)
  rng = np.random.default_rng(0)
  feats = jax.numpy.asarray(rng.standard_normal((b, mon.feature_dim)),
                            np.float32)
  per = config.data.per_domain_batch
  batch = {"label": np.concatenate([rng.integers(0, c, per)
                                    for c in mon.num_classes]),
           "domain": np.repeat(np.arange(len(domains)), per)}
  batch = {k: jax.numpy.asarray(v, np.int32) for k, v in batch.items()}
  update = jax.jit(mon.update, donate_argnums=0)
  state = mon.init()
  out = {}
  for label, step in (("step", 1), ("rankme_step", 0)):
    step = jax.numpy.int32(step)
    state, _ = update(state, feats, batch, step)
    walls = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      state, metrics = update(state, feats, batch, step)
      jax.block_until_ready((state, metrics))
      walls.append((time.perf_counter() - t0) * 1e3)
    out[label] = statistics.median(walls)
  return out


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--configs", nargs="+", default=["demo", "tiny"],
                      choices=["demo", "tiny"])
  parser.add_argument("--steps", type=int, default=30,
                      help="timed steps per variant")
  parser.add_argument("--rounds", type=int, default=5,
                      help="interleaved rounds the steps are split into")
  args = parser.parse_args(argv)
  print(f"backend={jax.default_backend()} devices=1", flush=True)
  for name in args.configs:
    walls, cpus = measure(name, args.steps, args.rounds)
    off = statistics.median(walls["off"])
    off_cpu = statistics.median(cpus["off"])
    print(f"\n{name}: ms/step over {len(walls['off'])} steps")
    print(f"  {'variant':<18} {'median':>8} {'mean':>8} {'overhead':>9} "
          f"{'cpu':>8} {'overhead':>9}")
    for v in VARIANTS:
      med, cpu = statistics.median(walls[v]), statistics.median(cpus[v])
      print(f"  {v:<18} {med:8.2f} {statistics.fmean(walls[v]):8.2f} "
            f"{100 * (med - off) / off:+8.1f}% {cpu:8.2f} "
            f"{100 * (cpu - off_cpu) / off_cpu:+8.1f}%", flush=True)
    alone = update_ms(name)
    every = base_config(name).monitors.rankme.every_steps
    print(f"  Monitors.update alone: {alone['step']:.2f} ms/step "
          f"({100 * alone['step'] / off:.1f}% of 'off'); with RankMe "
          f"{alone['rankme_step']:.2f} ms, every {every} steps", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
