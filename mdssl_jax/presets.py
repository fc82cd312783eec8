"""Config fragments shared by the files in `configs/` (and the tests).

Each function edits a ConfigDict in place and returns it, so configs read as
a short list of choices:

  c = config_lib.get_default_config("byol")
  presets.demo_data(c)
  presets.cpu_model(c)
"""

from __future__ import annotations

import os
from typing import Sequence

import ml_collections

DEMO_DOMAINS = ("digits", "photos", "textures")
SHARED_DOMAINS = ("cifar10", "mnist", "gtsrb", "notmnist")
# ../shared/data beside the repository checkout (CI has it; clones do not).
DEFAULT_SHARED_DIR = os.path.normpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))


def demo_data(c: ml_collections.ConfigDict,
              domains: Sequence[str] = DEMO_DOMAINS, *, image_size: int = 32,
              per_domain_batch: int = 32) -> ml_collections.ConfigDict:
  """The offline built-in domains (no download, no ../shared)."""
  c.data.domains = [{"name": d, "source": "demo", "demo_name": d}
                    for d in domains]
  c.data.image_size = image_size
  c.data.per_domain_batch = per_domain_batch
  c.views.large.size = image_size
  return c


def shared_data(c: ml_collections.ConfigDict,
                domains: Sequence[str] = SHARED_DOMAINS, *,
                shared_dir: str = DEFAULT_SHARED_DIR, image_size: int = 32,
                per_domain_batch: int = 64) -> ml_collections.ConfigDict:
  """The real .npz sets of ../shared/data (grey 28×28 sets padded to 32)."""
  c.data.domains = [{"name": d, "source": "npz",
                     "path": os.path.join(shared_dir, d)} for d in domains]
  c.data.image_size = image_size
  c.data.resize = "pad"
  c.data.per_domain_batch = per_domain_batch
  c.views.large.size = image_size
  return c


def cpu_model(c: ml_collections.ConfigDict, *, width: float = 0.25,
              proj_hidden: int = 256, proj_out: int = 64
              ) -> ml_collections.ConfigDict:
  """A width-reduced ResNet-18 (CIFAR stem) and small heads for CPU runs."""
  c.model.depth = 18
  c.model.width_multiplier = width
  c.model.stem = "cifar"
  c.projector.hidden_dims = (proj_hidden,)
  c.projector.out_dim = proj_out
  c.predictor.hidden_dims = (proj_hidden,)
  c.predictor.out_dim = proj_out
  return c


def cpu_eval(c: ml_collections.ConfigDict, *, probe_steps: int = 1500,
             max_train: int = 2000, max_test: int = 1000
             ) -> ml_collections.ConfigDict:
  """Evaluation sized for a CPU (fewer probe steps, capped splits)."""
  c.eval.probe_steps = probe_steps
  c.eval.max_train_per_domain = max_train
  c.eval.max_test_per_domain = max_test
  return c


def tiny_test_config(c: ml_collections.ConfigDict, *, steps: int = 6,
                     domains: Sequence[str] = ("digits", "textures"),
                     per_domain_batch: int = 8, image_size: int = 16
                     ) -> ml_collections.ConfigDict:
  """The smallest real setup, for tests: 16 px demo data, width-1/16 ResNet."""
  demo_data(c, domains, image_size=image_size,
            per_domain_batch=per_domain_batch)
  cpu_model(c, width=0.0625, proj_hidden=32, proj_out=16)
  c.views.small.size = image_size // 2
  c.optim.warmup_steps = 2
  c.total_steps = steps
  c.log_every = 1
  c.checkpoint.every_steps = 1000
  c.checkpoint.async_save = False
  c.eval.at_end = False
  cpu_eval(c, probe_steps=200, max_train=300, max_test=150)
  return c
