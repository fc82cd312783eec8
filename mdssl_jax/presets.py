"""Config fragments shared by the files in `configs/` (and the tests).

Each function edits a ConfigDict in place and returns it, so configs read as
a short list of choices:

  c = config_lib.get_default_config("byol")
  presets.cifar100_data(c)
  presets.solo_asymmetric(c, image_size=32)

Config files never import one another: a piece that two configs share lives
here. This module stays light (no TensorFlow, JAX or Flax), like the schema.
"""

from __future__ import annotations

import os
from typing import Sequence

import ml_collections

from mdssl_jax import config_lib

DEMO_DOMAINS = ("digits", "photos", "textures")
SHARED_DOMAINS = ("cifar10", "mnist", "gtsrb", "notmnist")
# ../shared/data beside the repository checkout (CI has it; clones do not).
DEFAULT_SHARED_DIR = os.path.normpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.247, 0.243, 0.261)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Training-set sizes: convert epoch-based method settings (DINO/SwAV
# warm-ups, freezes, queues) to steps at config time.
CIFAR100_TRAIN_SIZE = 50_000
IMAGENET100_TRAIN_SIZE = 126_689  # 1,300 or fewer per class.
# The four domains of MDSSL's Table 1 (seed 000).
CIFAR_MIX_DOMAINS = (
    {"name": "cifar10", "source": "tfds", "tfds_name": "cifar10"},
    {"name": "stl10", "source": "tfds", "tfds_name": "stl10"},
    {"name": "svhn", "source": "tfds", "tfds_name": "svhn_cropped"},
    {"name": "cifar100", "source": "tfds", "tfds_name": "cifar100"},
)

ConfigDict = ml_collections.ConfigDict


# ---- Small offline setups ----------------------------------------------------


def demo_data(c: ConfigDict, domains: Sequence[str] = DEMO_DOMAINS, *,
              image_size: int = 32, per_domain_batch: int = 32) -> ConfigDict:
  """The offline built-in domains (no download, no ../shared)."""
  c.data.domains = [{"name": d, "source": "demo", "demo_name": d}
                    for d in domains]
  c.data.image_size = image_size
  c.data.per_domain_batch = per_domain_batch
  c.views.large.size = image_size
  return c


def shared_data(c: ConfigDict, domains: Sequence[str] = SHARED_DOMAINS, *,
                shared_dir: str = DEFAULT_SHARED_DIR, image_size: int = 32,
                per_domain_batch: int = 64) -> ConfigDict:
  """The real .npz sets of ../shared/data (grey 28×28 sets padded to 32)."""
  c.data.domains = [{"name": d, "source": "npz",
                     "path": os.path.join(shared_dir, d)} for d in domains]
  c.data.image_size = image_size
  c.data.resize = "pad"
  c.data.per_domain_batch = per_domain_batch
  c.views.large.size = image_size
  return c


def cpu_model(c: ConfigDict, *, width: float = 0.25, proj_hidden: int = 256,
              proj_out: int = 64) -> ConfigDict:
  """A width-reduced ResNet-18 (CIFAR stem) and small heads for CPU runs."""
  c.model.depth = 18
  c.model.width_multiplier = width
  c.model.stem = "cifar"
  c.projector.hidden_dims = (proj_hidden,)
  c.projector.out_dim = proj_out
  c.predictor.hidden_dims = (proj_hidden,)
  c.predictor.out_dim = proj_out
  return c


def cpu_eval(c: ConfigDict, *, probe_steps: int = 1500, max_train: int = 2000,
             max_test: int = 1000) -> ConfigDict:
  """Evaluation sized for a CPU (fewer probe steps, capped splits)."""
  c.evals.probe.steps = probe_steps
  c.eval.max_train_per_domain = max_train
  c.eval.max_test_per_domain = max_test
  return c


def tiny_test_config(c: ConfigDict, *, steps: int = 6,
                     domains: Sequence[str] = ("digits", "textures"),
                     per_domain_batch: int = 8, image_size: int = 16
                     ) -> ConfigDict:
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


# ---- The CPU tails of the method zoo (`:demo` and `:shared`) -----------------


def _cpu_tail(c: ConfigDict, *, total_steps: int, log_every: int,
              checkpoint_every: int) -> ConfigDict:
  """What the zoo's CPU variants share: width-¼ ResNet-18, plain LARS."""
  cpu_model(c)
  c.views.large.crop_area = (0.2, 1.0)
  c.ema.base = 0.99
  # Tuned with plain LARS (METHODS §1.2), not solo-learn's clipped one.
  c.optim.update(warmup_epochs=-1.0, clip_lr=False, trust_coefficient=1e-3)
  c.total_steps = total_steps
  c.log_every = log_every
  c.checkpoint.update(every_steps=checkpoint_every, keep=2)
  return c


def demo_variant(c: ConfigDict) -> ConfigDict:
  """The offline CPU demo: built-in domains, width-¼ ResNet-18, 300 steps."""
  demo_data(c)
  cpu_eval(c)
  return _cpu_tail(c, total_steps=300, log_every=25, checkpoint_every=100)


def shared_variant(c: ConfigDict, shared_dir: str = DEFAULT_SHARED_DIR
                   ) -> ConfigDict:
  """../shared/data domains on a CPU: width-¼ ResNet-18, 2,000 steps."""
  shared_data(c, shared_dir=shared_dir)
  cpu_eval(c, probe_steps=3000, max_train=8000, max_test=2000)
  return _cpu_tail(c, total_steps=2000, log_every=50, checkpoint_every=500)


# ---- Brightness semantics ---------------------------------------------------


def brightness_mode(c: ConfigDict, mode: str) -> ConfigDict:
  """Sets `augment.{odd,even}.brightness_mode` to `mode`.

  "multiplicative": x·f, f ~ U[max(0, 1 − a), 1 + a] (torchvision
  ColorJitter: solo-learn, PyTorch SimCLR/MDSSL code, SimCLR's TF code
  default `simclrv2`); "additive": x + δ, δ ~ U[−a, a]
  (tf.image.random_brightness: deepmind BYOL, RELICv2, SimCLR v1).
  """
  for col in ("odd", "even"):
    c.augment[col].brightness_mode = mode
  return c


# ---- solo-learn recipes (METHODS.md §5) --------------------------------------


def solo_asymmetric(c: ConfigDict, *, image_size: int) -> ConfigDict:
  """solo-learn's "asymmetric" (BYOL) augmentation; no blur at 32 px.

  torchvision ColorJitter: multiplicative brightness.
  """
  for col in ("odd", "even"):
    c.augment[col].update(
        flip_p=0.5, jitter_p=0.8, brightness=0.4, contrast=0.4,
        saturation=0.2, hue=0.1, gray_p=0.2,
        brightness_mode="multiplicative")
  big = image_size > 64
  c.augment.odd.update(blur_p=1.0 if big else 0.0, solarize_p=0.0)
  c.augment.even.update(blur_p=0.1 if big else 0.0, solarize_p=0.2)
  return c


def solo_symmetric(c: ConfigDict) -> ConfigDict:
  """solo-learn's "symmetric" (SimCLR/SwAV) augmentation for both views.

  torchvision ColorJitter: multiplicative brightness.
  """
  for col in ("odd", "even"):
    c.augment[col].update(
        flip_p=0.5, jitter_p=0.8, brightness=0.8, contrast=0.8,
        saturation=0.8, hue=0.2, gray_p=0.2, blur_p=0.5, solarize_p=0.0,
        brightness_mode="multiplicative")
  return c


def cifar100_data(c: ConfigDict) -> ConfigDict:
  """TFDS cifar100 at 32 px, B = 256, solo-learn's linear evaluation."""
  c.data.domains = [{"name": "cifar100", "source": "tfds",
                     "tfds_name": "cifar100"}]
  c.data.image_size = 32
  c.data.per_domain_batch = 256
  c.data.mean, c.data.std = CIFAR_MEAN, CIFAR_STD
  c.views.large.size = 32
  c.model.update(depth=18, width_multiplier=1.0, stem="cifar")
  # Offline probe ≈ solo-learn's linear eval: 100 epochs at B = 256, cosine.
  c.evals.probe.update(steps=19_600, batch_size=256, lr=0.1, momentum=0.9,
                       schedule="cosine")
  c.eval.update(max_train_per_domain=50_000, max_test_per_domain=10_000)
  return c


def imagenet100_data(c: ConfigDict, in100_dir: str = "", *,
                     per_domain_batch: int = 256) -> ConfigDict:
  """Points `c` at ImageNet-100 at 224 px with solo-learn's evaluation.

  ImageNet-100 is the 100 classes of CMC (Tian et al. 2019), used by
  solo-learn and MSBReg; the list ships as
  mdssl_jax/data/imagenet100_classes.txt.

  Args:
    c: config to modify in place.
    in100_dir: empty for TFDS imagenet2012 streamed with the shipped
      "imagenet100" class subset (from `c.data.data_dir`); else a directory
      of train.npz / test.npz holding the subset, labels 0–99.
    per_domain_batch: images per step.

  Returns:
    `c`.
  """
  if in100_dir:
    domain = {"name": "imagenet100", "source": "npz", "path": in100_dir,
              "num_classes": 100}
  else:
    domain = {"name": "imagenet100", "source": "tfds",
              "tfds_name": "imagenet2012", "split": "train",
              "eval_split": "validation", "class_subset": "imagenet100",
              "in_memory": False}
  c.data.domains = [domain]
  c.data.image_size = 224
  c.data.resize = "resize"
  c.data.per_domain_batch = per_domain_batch
  c.data.mean, c.data.std = IMAGENET_MEAN, IMAGENET_STD
  c.data.max_in_memory_gb = 24.0  # npz: ~20 GB of uint8 images at 224 px.
  c.views.large.size = 224
  c.model.update(depth=18, width_multiplier=1.0, stem="imagenet")
  c.evals.probe.update(steps=49_500, batch_size=256, lr=0.1, momentum=0.9,
                       schedule="cosine")
  c.eval.update(max_train_per_domain=130_000, max_test_per_domain=5_000)
  return c


# ---- MSBReg (seed 002, METHODS.md §4) ----------------------------------------


def msbreg_recipe(c: ConfigDict) -> ConfigDict:
  """MSBReg's training recipe, without data (supplement Table 1).

  K = 4 views, λ_s = 0.004, λ_b = 0.5, 512 → 128 heads with BN, EMA 0.99,
  LARS (η = 1e-3) base lr 0.4 × B/256 × K, wd 1e-5, 320 epochs, blur 1.0
  and solarize 0.2 on every view. Additive brightness: the supplement's
  Table 1 is BYOL's augmentation table (Grill et al. 2020 App. B: a uniformly
  random brightness offset; deepmind BYOL's code adds δ ~ U[−a, a]),
  and SimCLR v1, which its text cites, uses tf.image.random_brightness.
  """
  c.method_args.update(lambda_s=0.004, lambda_b=0.5)
  c.views.large.count = 4
  c.views.large.crop_area = (0.08, 1.0)
  for col in ("odd", "even"):  # Supplement Table 1: the same for all views.
    c.augment[col].update(
        flip_p=0.5, jitter_p=0.8, brightness=0.4, contrast=0.4,
        saturation=0.2, hue=0.1, gray_p=0.2, blur_p=1.0, solarize_p=0.2,
        brightness_mode="additive")
  c.projector.update(hidden_dims=(512,), out_dim=128, norm="batch")
  c.predictor.update(hidden_dims=(512,), out_dim=128, norm="batch")
  c.ema.update(base=0.99, schedule="cosine")
  c.optim.update(name="lars", base_lr=0.4, weight_decay=1e-5,
                 warmup_epochs=10.0, trust_coefficient=1e-3)
  c.total_epochs = 320.0
  c.log_every = 100
  c.checkpoint.every_steps = 5000
  return c


def msbreg_stl10(c: ConfigDict) -> ConfigDict:
  """MSBReg's STL-10 setting (seed 002 Table 4), after `msbreg_recipe`.

  TFDS stl10 at 96 px (the 5,000 labelled train images), ImageNet stem,
  B = 256, base lr 0.5, λ_b = 0.05.
  """
  c.data.domains = [{"name": "stl10", "source": "tfds", "tfds_name": "stl10",
                     "split": "train", "eval_split": "test"}]
  c.data.image_size = 96
  c.data.per_domain_batch = 256
  c.data.mean, c.data.std = IMAGENET_MEAN, IMAGENET_STD
  c.views.large.size = 96
  c.model.update(depth=18, width_multiplier=1.0, stem="imagenet")
  c.method_args.lambda_b = 0.05
  c.optim.base_lr = 0.5
  c.evals.probe.update(steps=2_000, batch_size=256, lr=0.1,
                       schedule="cosine")
  c.eval.update(max_train_per_domain=5_000, max_test_per_domain=8_000)
  return c


def to_byol_baseline(c: ConfigDict) -> ConfigDict:
  """Turns an MSBReg config into its BYOL baseline (K = 2, no L_s, L_b).

  MSBReg's peak lr is base × B/256 × K; the baseline keeps that rule at
  K = 2 (BYOL has no ×K factor, so base_lr doubles).
  """
  c.method = "byol"
  c.method_args = config_lib.method_args("byol")
  c.views.large.count = 2
  c.optim.base_lr *= 2.0
  return c


# ---- MDSSL's CIFAR mixture (seed 000, Table 1) -------------------------------


def cifar_mix(c: ConfigDict, *, runlocal: bool = False) -> ConfigDict:
  """The Table-1 setup shared by MDSSL and the multi-domain SimCLR baseline.

  Augmentation: the SimCLR set (METHODS §2.7: crop, flip, colour
  distortion, Gaussian blur; no solarisation) for both views, with
  multiplicative brightness: MDSSL's code is PyTorch (seed 000 A.5), whose
  SimCLR colour distortion is torchvision's ColorJitter; SimCLR's own TF
  code defaults to the same (`impl="simclrv2"`).

  Args:
    c: a config of method "mdssl" or "simclr", modified in place.
    runlocal: shrink everything for a CPU smoke run against mock or tiny
      data.

  Returns:
    `c`.
  """
  c.data.domains = [dict(d) for d in CIFAR_MIX_DOMAINS]
  c.data.image_size = 32
  c.data.per_domain_batch = 1024
  c.views.large.size = 32
  c.model.depth = 50
  c.model.stem = "imagenet"
  c.projector.hidden_dims = (2048,)
  c.projector.out_dim = 128
  c.projector.norm = "none"
  c.method_args.temperature = 0.1
  solo_symmetric(c)
  c.optim.name = "lars"
  c.optim.base_lr = 4.0
  c.optim.lr_scaling = "none"
  c.optim.weight_decay = 1e-6
  c.optim.warmup_epochs = 10.0
  c.total_steps = 48_000
  c.log_every = 100
  c.checkpoint.every_steps = 2000
  c.evals.probe.update(steps=30_000, lr=0.1, momentum=0.0, batch_size=1024)
  c.eval.max_train_per_domain = 100_000
  c.eval.max_test_per_domain = 30_000
  if runlocal:
    c.data.per_domain_batch = 8
    c.model.depth = 18
    c.model.width_multiplier = 0.125
    c.projector.hidden_dims = (64,)
    c.total_steps = 10
    c.optim.warmup_epochs = -1.0
    c.optim.warmup_steps = 2
    c.log_every = 2
    c.evals.probe.steps = 50
    c.eval.max_train_per_domain = 256
    c.eval.max_test_per_domain = 128
  return c


# ---- Vision Transformers (issue #15) ----------------------------------------


def vit_model(c: ConfigDict, size: str, *, patch_size: int, image_size: int,
              pos_embed: str = "learned") -> ConfigDict:
  """Selects a ViT backbone (`model.name="vit"`, mdssl_jax/models/vit.py).

  Args:
    c: config to modify in place.
    size: "tiny", "small", "base" or "large".
    patch_size: p (16 at 224 px; 4 at 32 px).
    image_size: native size of the position embeddings (the large views).
    pos_embed: "learned" or "sincos" (MoCo v3).

  Returns:
    `c`.
  """
  c.model.name = "vit"
  c.model.vit.update(size=size, patch_size=patch_size, image_size=image_size,
                     pos_embed=pos_embed)
  return c


def vit_imagenet_data(c: ConfigDict, *, global_batch: int) -> ConfigDict:
  """TFDS ImageNet-1k (train / validation) at 224 px, streamed from disk."""
  c.data.domains = [{"name": "imagenet", "source": "tfds",
                     "tfds_name": "imagenet2012", "split": "train",
                     "eval_split": "validation", "in_memory": False}]
  c.data.image_size = 224
  c.data.resize = "resize"
  c.data.per_domain_batch = global_batch
  c.data.mean, c.data.std = IMAGENET_MEAN, IMAGENET_STD
  c.views.large.size = 224
  c.evals.probe.update(steps=100_000, batch_size=1024, lr=0.1, momentum=0.9,
                       schedule="cosine")
  c.eval.update(max_train_per_domain=1_281_167, max_test_per_domain=50_000)
  return c


def vit_tiny_demo(c: ConfigDict) -> ConfigDict:
  """ViT-Ti/4 on the offline 32 px demo domains, sized for 2 CPU cores.

  MoCo v3's stabilisers for every method: a frozen random patch projection
  and fixed 2-D sin-cos position embeddings; small heads (256 → 64), AdamW
  base lr 5e-3 × B/256 (peak 9.4e-4 at B = 48) with 20 warm-up steps,
  weight decay 0.05, gradient clipping 3.0, 120 steps of 3 × 16 images (a
  ViT-Ti/4 step costs ~2.2 GFLOP per view, ~20× the width-¼ ResNet-18 of
  `demo_variant`). Gentler views than the 224 px recipes: colour jitter
  at SimCLR's strength s = 0.5 (0.4, 0.4, 0.4, 0.1; the photos' classes
  are their source photographs, which full-strength jitter hides) and
  crops of 80-100 %. Method files set their own head details.

  Measured (SimCLR, seed 0, kNN mean top-1 over the three domains; init
  63.0 with this model): the first recipe (learned position embeddings,
  trainable patches, base lr 5e-3, crops 20-100 %) 50.8 after 120 steps;
  base lr 1e-3 60.7 (its init 61.6); frozen + sin-cos + 5e-3 with
  full-strength jitter and crops 50-100 % 62.9 (240 steps: 63.5); this
  recipe 66.6, the same with crops 50-100 % 66.7 (jitter is what
  matters). Mean pooling instead of the class token: 55.9 / 52.0. See
  the method files' `vit_tiny_demo` docstrings for every method.
  """
  demo_data(c, per_domain_batch=16)
  cpu_eval(c, probe_steps=1000, max_train=1000, max_test=500)
  vit_model(c, "tiny", patch_size=4, image_size=32, pos_embed="sincos")
  c.model.vit.frozen_patch_embed = True
  c.views.large.crop_area = (0.8, 1.0)
  for side in ("even", "odd"):
    c.augment[side].update(brightness=0.4, contrast=0.4, saturation=0.4,
                           hue=0.1)
  c.projector.update(hidden_dims=(256,), out_dim=64)
  c.predictor.update(hidden_dims=(256,), out_dim=64)
  c.optim.update(name="adamw", base_lr=5e-3, lr_scaling="linear",
                 weight_decay=0.05, weight_decay_schedule="constant",
                 warmup_steps=20, warmup_epochs=-1.0, grad_clip_norm=3.0)
  c.ema.base = 0.99
  c.total_steps = 120
  c.log_every = 10
  c.checkpoint.update(every_steps=60, keep=2)
  return c
