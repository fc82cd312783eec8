r"""Peer baseline: SimCLR / BYOL train steps with lightly + PyTorch on CPU.

The figure mdssl_jax's CPU train step is compared with (issue #5): a
ResNet-18 with the CIFAR stem (3×3/1 conv, no max-pool), 32 px images, two
views of `--batch` images per step (2×256 by default), LARS, BatchNorm in
train mode. Inputs are random tensors (the augmentation pipeline is timed
separately by benchmarks/input_pipeline.py). "images/s" counts views, i.e.
2 · batch / step time, as in ENVIRONMENT.md.

torch, torchvision and lightly are not dependencies of mdssl_jax. When they
are not importable, the script creates a virtual environment in
benchmarks/.peer_venv (git-ignored), installs
`torch==2.14.1 torchvision==0.29.1 lightly` there from the package registry
(a large download: the torch wheel alone is ~550 MB) and re-runs itself with
that interpreter; `--no-install` refuses instead.

  python benchmarks/peer_lightly.py                      # SimCLR, eager
  python benchmarks/peer_lightly.py --method byol --compile --channels-last
  python benchmarks/peer_lightly.py --malloc-tune   # glibc settings of
                                                    # mdssl_jax/host_memory.py
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

_VENV = Path(__file__).resolve().parent / ".peer_venv"
_REQUIREMENTS = ("torch==2.14.1", "torchvision==0.29.1", "lightly")
_REEXEC_FLAG = "MDSSL_PEER_LIGHTLY_REEXEC"
_BUSY_THRESHOLD = 0.10


def _peer_importable() -> bool:
  import importlib.util  # pylint: disable=g-import-not-at-top
  return all(importlib.util.find_spec(name) is not None
             for name in ("torch", "torchvision", "lightly"))


def ensure_peer_env(allow_install: bool) -> None:
  """Makes torch/torchvision/lightly importable, re-executing if needed."""
  if _peer_importable():
    return
  if os.environ.get(_REEXEC_FLAG):
    raise RuntimeError(
        f"torch/torchvision/lightly are still missing inside {_VENV}; "
        f"delete that folder and rerun to reinstall {list(_REQUIREMENTS)}.")
  python = _VENV / "bin" / "python"
  if not python.exists():
    if not allow_install:
      raise RuntimeError(
          "torch, torchvision and lightly are not installed; rerun without "
          f"--no-install to create {_VENV} with {list(_REQUIREMENTS)}.")
    print(f"creating {_VENV} and installing {' '.join(_REQUIREMENTS)} "
          "(large download) ...", flush=True)
    subprocess.check_call([sys.executable, "-m", "venv", str(_VENV)])
    subprocess.check_call([str(python), "-m", "pip", "install", "--quiet",
                           *_REQUIREMENTS])
  env = dict(os.environ, **{_REEXEC_FLAG: "1"})
  os.execve(str(python), [str(python), __file__, *sys.argv[1:]], env)


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _cpu_counters() -> tuple[int, int, int] | None:
  """(all jiffies, busy jiffies, this process's jiffies) or None."""
  try:
    with open("/proc/stat") as f:
      fields = [int(v) for v in f.readline().split()[1:]]
    with open("/proc/self/stat") as f:
      rest = f.read().rsplit(")", 1)[1].split()
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields), sum(fields) - idle, int(rest[11]) + int(rest[12])
  except (OSError, IndexError, ValueError):
    return None


def others_share(t0, t1) -> float | None:
  """CPU share of other processes between two `_cpu_counters()` reads."""
  if t0 is None or t1 is None or t1[0] <= t0[0]:
    return None
  return max(0.0, ((t1[1] - t0[1]) - (t1[2] - t0[2])) / (t1[0] - t0[0]))


def build(method: str, proj_hidden: int, proj_dim: int):
  """Returns (net, after_step): net(x0, x1) -> loss is an nn.Module."""
  # pylint: disable=g-import-not-at-top
  import torch
  import torchvision
  from lightly.loss import NegativeCosineSimilarity, NTXentLoss
  from lightly.models.modules import (BYOLPredictionHead, BYOLProjectionHead,
                                      SimCLRProjectionHead)
  from lightly.models.utils import deactivate_requires_grad, update_momentum
  # pylint: enable=g-import-not-at-top

  backbone = torchvision.models.resnet18()
  backbone.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)  # CIFAR stem
  backbone.maxpool = torch.nn.Identity()
  backbone.fc = torch.nn.Identity()

  class SimCLR(torch.nn.Module):
    """Both views through one backbone pass; NT-Xent at temperature 0.5."""

    def __init__(self):
      super().__init__()
      self.backbone = backbone
      self.projector = SimCLRProjectionHead(512, proj_hidden, proj_dim)
      self.criterion = NTXentLoss(temperature=0.5)

    def forward(self, x0, x1):
      z0, z1 = self.projector(self.backbone(torch.cat([x0, x1]))).chunk(2)
      return self.criterion(z0, z1)

  class BYOL(torch.nn.Module):
    """Online backbone/projector/predictor, EMA target without gradients."""

    def __init__(self):
      super().__init__()
      self.backbone = backbone
      self.projector = BYOLProjectionHead(512, proj_hidden, proj_dim)
      self.predictor = BYOLPredictionHead(proj_dim, proj_hidden, proj_dim)
      self.backbone_ema = copy.deepcopy(backbone)
      self.projector_ema = copy.deepcopy(self.projector)
      deactivate_requires_grad(self.backbone_ema)
      deactivate_requires_grad(self.projector_ema)
      self.criterion = NegativeCosineSimilarity()

    def forward(self, x0, x1):
      x = torch.cat([x0, x1])
      p0, p1 = self.predictor(self.projector(self.backbone(x))).chunk(2)
      with torch.no_grad():
        z0, z1 = self.projector_ema(self.backbone_ema(x)).chunk(2)
      return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))

  if method == "simclr":
    return SimCLR(), lambda net: None

  def after_step(net):
    update_momentum(net.backbone, net.backbone_ema, m=0.99)
    update_momentum(net.projector, net.projector_ema, m=0.99)

  return BYOL(), after_step


def _keep_freed_host_memory() -> bool:
  """mdssl_jax.host_memory.keep_freed_host_memory, loaded by path.

  The peer venv does not have mdssl_jax (or jax) installed; the module is
  plain ctypes and is imported from the source tree.
  """
  import importlib.util  # pylint: disable=g-import-not-at-top
  path = Path(__file__).resolve().parents[1] / "mdssl_jax" / "host_memory.py"
  spec = importlib.util.spec_from_file_location("_mdssl_host_memory", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.keep_freed_host_memory()


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--method", choices=("simclr", "byol"),
                      default="simclr")
  parser.add_argument("--batch", type=int, default=256,
                      help="images per view; a step sees 2 · batch views")
  parser.add_argument("--steps", type=int, default=5, help="timed steps")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--compile", action="store_true",
                      help="torch.compile the loss computation")
  parser.add_argument("--channels-last", action="store_true")
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument("--proj-hidden", type=int, default=2048)
  parser.add_argument("--proj-dim", type=int, default=128)
  parser.add_argument("--lr", type=float, default=0.3)
  parser.add_argument("--no-install", action="store_true")
  parser.add_argument(
      "--malloc-tune", action="store_true",
      help="apply mdssl_jax's keep_freed_host_memory (glibc mallopt) in this "
      "process too, for a like-for-like comparison with train_step.py")
  args = parser.parse_args(argv)
  if args.batch < 2 or args.steps < 1 or args.warmup < 0:
    parser.error("need --batch >= 2, --steps >= 1 and --warmup >= 0")
  try:
    ensure_peer_env(allow_install=not args.no_install)
  except (RuntimeError, subprocess.CalledProcessError) as e:
    parser.exit(2, f"peer_lightly: {e}\n")

  # pylint: disable=g-import-not-at-top
  import lightly
  import torch
  import torchvision
  from lightly.utils.lars import LARS
  # pylint: enable=g-import-not-at-top

  tuned = _keep_freed_host_memory() if args.malloc_tune else False
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  net, after_step = build(args.method, args.proj_hidden, args.proj_dim)
  memory_format = (torch.channels_last if args.channels_last
                   else torch.contiguous_format)
  net = net.to(memory_format=memory_format).train()
  params = [p for p in net.parameters() if p.requires_grad]
  optimizer = LARS(params, lr=args.lr, momentum=0.9, weight_decay=1e-6)
  step_loss = torch.compile(net) if args.compile else net
  x0, x1 = (torch.randn(args.batch, 3, 32, 32).to(memory_format=memory_format)
            for _ in range(2))

  def step() -> float:
    optimizer.zero_grad(set_to_none=True)
    loss = step_loss(x0, x1)
    loss.backward()
    optimizer.step()
    after_step(net)
    return float(loss)

  print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, "
        f"{args.threads} torch threads; python {platform.python_version()}, "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"lightly {lightly.__version__}")
  print(f"{args.method}: ResNet-18 (CIFAR stem), 2x{args.batch} views at "
        f"32 px, LARS, {'torch.compile' if args.compile else 'eager'}, "
        f"{'channels_last' if args.channels_last else 'NCHW'}; malloc tune "
        f"{'on' if tuned else 'off'}; "
        f"{args.warmup} warm-up + {args.steps} timed steps", flush=True)
  for _ in range(args.warmup):
    step()
  times = []
  c0 = _cpu_counters()
  for i in range(args.steps):
    t0 = time.perf_counter()
    loss = step()
    times.append(time.perf_counter() - t0)
    print(f"  step {i}: {times[-1]:.2f} s, loss {loss:.4f}", flush=True)
  share = others_share(c0, _cpu_counters())
  median = statistics.median(times)
  print(f"median {median:.2f} s/step = {2 * args.batch / median:.1f} "
        f"images/s (best {2 * args.batch / min(times):.1f}); other "
        "processes used "
        + (f"{share:.0%} of the CPUs" if share is not None else "n/a")
        + ("  (busy machine)" if share and share > _BUSY_THRESHOLD else ""))
  return 0


if __name__ == "__main__":
  sys.exit(main())
