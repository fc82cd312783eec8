r"""ViT-Ti/4 SimCLR train step at 32 px: mdssl_jax (JAX) vs PyTorch (timm).

The same model on both sides: ViT-Ti (width 192, 12 blocks, 3 heads, MLP
768, GELU, LayerNorm eps 1e-6) with 4 px patches on 32 px images (64 patch
tokens + the class token, learned position embeddings), class-token
features, projector 192 → 2048 → 128 (ReLU, no BN), NT-Xent (τ = 0.2) over
2 views of `--batch` images, AdamW (wd 0.05 on matrices). Inputs are random
tensors already in memory (no input pipeline). "images/s" counts views,
2 · batch / step time, as benchmarks/peer_lightly.py does.

* JAX: the trainer's own step (`train.make_train_step` on one device, state
  donated) for `configs/simclr.py`-style settings with `model.name="vit"`;
  online monitors off (the PyTorch step has none).
* PyTorch: `timm.models.vision_transformer.VisionTransformer` (eager, or
  `--compile` for torch.compile), run in a child process with the
  interpreter of benchmarks/.peer_venv. When torch and timm are missing
  there, the venv is created (or completed) with `torch==2.14.1
  torchvision==0.29.1 timm` from the package registry, the pins of
  peer_lightly.py; `--no-install` refuses instead.

  python benchmarks/vit_step.py                  # 2×128 views, both sides
  python benchmarks/vit_step.py --batch 256 --steps 5 --compile
  python benchmarks/vit_step.py --side jax       # one side only

Prints each side's median step time, images/s, the CPU share of other
processes while it ran ("busy machine" above 10 %) and the JAX / PyTorch
images/s ratio (> 1: JAX is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Light (stdlib-only) helpers of the PyTorch baseline.
# pylint: disable=g-import-not-at-top,wrong-import-position
from peer_lightly import _BUSY_THRESHOLD, _cpu_counters, cpu_model
from peer_lightly import others_share
# pylint: enable=g-import-not-at-top,wrong-import-position

_VENV = Path(__file__).resolve().parent / ".peer_venv"
_REQUIREMENTS = ("torch==2.14.1", "torchvision==0.29.1", "timm")
WIDTH, DEPTH, HEADS, PATCH, SIZE = 192, 12, 3, 4, 32
PROJ_HIDDEN, PROJ_OUT, TEMPERATURE, LR, WD = 2048, 128, 0.2, 1e-3, 0.05


def _timed(step, steps: int, warmup: int) -> dict:
  """Runs `step()` warmup + steps times; median wall s and others' share."""
  for _ in range(warmup):
    step()
  times = []
  c0 = _cpu_counters()
  for _ in range(steps):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
  return {"median_s": statistics.median(times), "best_s": min(times),
          "others": others_share(c0, _cpu_counters())}


# ---- JAX ---------------------------------------------------------------------


def jax_side(args: argparse.Namespace) -> dict:
  """Times the trainer's SimCLR step on ViT-Ti/4."""
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  from mdssl_jax import config_lib, host_memory, presets, train
  from mdssl_jax import sharding as sharding_lib
  from mdssl_jax.data import sources
  # pylint: enable=g-import-not-at-top
  if args.malloc_tune:
    host_memory.keep_freed_host_memory()
  c = config_lib.get_default_config("simclr")
  presets.demo_data(c, ("digits",), image_size=SIZE,
                    per_domain_batch=args.batch)
  presets.vit_model(c, "tiny", patch_size=PATCH, image_size=SIZE)
  c.method_args.temperature = TEMPERATURE
  c.projector.update(hidden_dims=(PROJ_HIDDEN,), out_dim=PROJ_OUT,
                     norm="none")
  c.optim.update(name="adamw", base_lr=LR, lr_scaling="none",
                 weight_decay=WD, warmup_steps=10)
  c.total_steps = 1000
  for name in c.monitors:
    c.monitors[name].enabled = False
  config_lib.validate(c)
  domains = sources.load_domains(c.data)
  setup = train.build_setup(c, train.run_shape(c, domains))
  mesh = sharding_lib.make_mesh(1)
  state = train.create_state(setup, c, sharding_lib.replicated(mesh))
  rng = np.random.default_rng(0)
  batch = jax.device_put({
      "large": rng.standard_normal((args.batch, 2, SIZE, SIZE, 3),
                                   np.float32),
      "domain": np.zeros(args.batch, np.int32),
      "label": np.zeros(args.batch, np.int32),
      "index": np.arange(args.batch, dtype=np.int64)},
      sharding_lib.batch_sharding(mesh))
  t0 = time.perf_counter()
  compiled = train.make_train_step(setup, mesh).lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  holder = [state]

  def step():
    holder[0], metrics = compiled(holder[0], batch)
    jax.block_until_ready(metrics["loss"])
  out = _timed(step, args.steps, args.warmup)
  out.update(compile_s=compile_s,
             label=f"mdssl_jax, jax {jax.__version__}")
  return out


# ---- PyTorch -----------------------------------------------------------------


def torch_side(args: argparse.Namespace) -> dict:
  """Times the same step with timm's VisionTransformer (in the venv)."""
  # pylint: disable=g-import-not-at-top
  import timm
  import torch
  from torch import nn
  from timm.models.vision_transformer import VisionTransformer
  # pylint: enable=g-import-not-at-top
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)

  class Net(nn.Module):
    """ViT-Ti/4 backbone (no classifier), projector, NT-Xent."""

    def __init__(self):
      super().__init__()
      self.backbone = VisionTransformer(
          img_size=SIZE, patch_size=PATCH, embed_dim=WIDTH, depth=DEPTH,
          num_heads=HEADS, mlp_ratio=4.0, num_classes=0)
      self.projector = nn.Sequential(
          nn.Linear(WIDTH, PROJ_HIDDEN), nn.ReLU(),
          nn.Linear(PROJ_HIDDEN, PROJ_OUT))

    def forward(self, x0, x1):
      z = self.projector(self.backbone(torch.cat([x0, x1])))
      z = nn.functional.normalize(z, dim=1)
      logits = z @ z.T / TEMPERATURE
      n = x0.shape[0]
      logits = logits.masked_fill(
          torch.eye(2 * n, dtype=torch.bool), float("-inf"))
      targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
      return nn.functional.cross_entropy(logits, targets)

  net = Net().train()
  decay = [p for p in net.parameters() if p.ndim > 1]
  rest = [p for p in net.parameters() if p.ndim <= 1]
  optimizer = torch.optim.AdamW(
      [{"params": decay, "weight_decay": WD},
       {"params": rest, "weight_decay": 0.0}], lr=LR)
  loss_fn = torch.compile(net) if args.compile else net
  x0, x1 = (torch.randn(args.batch, 3, SIZE, SIZE) for _ in range(2))

  def step():
    optimizer.zero_grad(set_to_none=True)
    loss_fn(x0, x1).backward()
    optimizer.step()
  t0 = time.perf_counter()
  step()  # The first call compiles under --compile.
  compile_s = time.perf_counter() - t0
  out = _timed(step, args.steps, args.warmup)
  out.update(compile_s=compile_s,
             label=(f"timm {timm.__version__}, torch {torch.__version__} "
                    f"({'torch.compile' if args.compile else 'eager'})"))
  return out


def _torch_importable() -> bool:
  import importlib.util  # pylint: disable=g-import-not-at-top
  return all(importlib.util.find_spec(m) is not None
             for m in ("torch", "timm"))


def run_torch_child(args: argparse.Namespace, argv: list[str]) -> dict:
  """Runs `--side torch-child` with the venv's interpreter; its result."""
  python = _VENV / "bin" / "python"
  check = "import torch, timm"
  ready = python.exists() and subprocess.run(
      [str(python), "-c", check], capture_output=True, check=False
  ).returncode == 0
  if not ready:
    if args.no_install:
      raise RuntimeError(
          f"torch and timm are not installed in {_VENV}; rerun without "
          f"--no-install to install {list(_REQUIREMENTS)} there.")
    print(f"installing {' '.join(_REQUIREMENTS)} into {_VENV} (large "
          "download) ...", flush=True)
    if not python.exists():
      subprocess.check_call([sys.executable, "-m", "venv", str(_VENV)])
    subprocess.check_call([str(python), "-m", "pip", "install", "--quiet",
                           *_REQUIREMENTS])
  proc = subprocess.run(
      [str(python), __file__, *argv, "--side", "torch-child"],
      capture_output=True, text=True, check=False)
  if proc.returncode:
    raise RuntimeError(f"the PyTorch side failed:\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _report(name: str, r: dict, batch: int) -> None:
  share = r["others"]
  busy = "  (busy machine)" if share and share > _BUSY_THRESHOLD else ""
  print(f"{name:8s} {r['label']}: compile/first step {r['compile_s']:.1f} s;"
        f" median {r['median_s']:.3f} s/step = "
        f"{2 * batch / r['median_s']:.1f} images/s (best "
        f"{2 * batch / r['best_s']:.1f}); other processes "
        + (f"{share:.0%}" if share is not None else "n/a") + busy,
        flush=True)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=128,
                      help="images per view (2 views per step)")
  parser.add_argument("--steps", type=int, default=5, help="timed steps")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--side", default="both",
                      choices=("both", "jax", "torch", "torch-child"))
  parser.add_argument("--compile", action="store_true",
                      help="torch.compile the PyTorch step")
  parser.add_argument("--threads", type=int, default=os.cpu_count(),
                      help="PyTorch intra-op threads")
  parser.add_argument("--no-malloc-tune", dest="malloc_tune",
                      action="store_false",
                      help="JAX side: glibc's default malloc settings")
  parser.add_argument("--no-install", action="store_true")
  args = parser.parse_args(argv)
  if args.side == "torch-child":
    print(json.dumps(torch_side(args)))
    return 0
  print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; ViT-Ti/4 "
        f"SimCLR step, 2x{args.batch} views at {SIZE} px, {args.warmup} "
        f"warm-up + {args.steps} timed steps", flush=True)
  child_argv = [a for i, a in enumerate(argv) if not (
      a.startswith("--side") or (i and argv[i - 1] == "--side"))]
  results = {}
  if args.side in ("both", "jax"):
    results["jax"] = jax_side(args)
    _report("jax", results["jax"], args.batch)
  if args.side in ("both", "torch"):
    try:
      results["pytorch"] = (torch_side(args) if _torch_importable()
                            else run_torch_child(args, child_argv))
    except (RuntimeError, subprocess.CalledProcessError) as e:
      parser.exit(2, f"vit_step: {e}\n")
    _report("pytorch", results["pytorch"], args.batch)
  if len(results) == 2:
    ratio = results["pytorch"]["median_s"] / results["jax"]["median_s"]
    print(f"ratio jax / pytorch images/s: {ratio:.2f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
