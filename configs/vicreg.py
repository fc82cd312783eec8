r"""VICReg (Bardes et al. 2022) on the shared trainer (METHODS.md §5.5).

  python -m mdssl_jax.main --config=configs/vicreg.py --workdir=runs/vicreg \
      --config.data.data_dir=$TFDS_DATA_DIR
  python -m mdssl_jax.main --config=configs/vicreg.py:in100 \
      --workdir=runs/vicreg_in100 --config.data.data_dir=$TFDS_DATA_DIR
  python -m mdssl_jax.main --config=configs/vicreg.py:demo --workdir=/tmp/vicreg
  python -m mdssl_jax.main --config=configs/vicreg.py:shared --workdir=...

Default (reference scale): solo-learn's ResNet-18 CIFAR-100 recipe — TFDS
cifar100 at 32 px, CIFAR stem, expander 512→2048→2048→2048 (BN + ReLU on the
hidden layers), invariance/variance/covariance weights 25/25/1, LARS base lr
0.3 × B/256 (B = 256), wd 1e-4, 10 warm-up epochs then cosine, 1000 epochs,
solo-learn's VICReg augmentation (crop area 0.2–1, jitter 0.4/0.4/0.2/0.1 at p
= 0.8, grayscale 0.2, no blur at 32 px, solarize 0.1 on both views). The
optimiser is solo-learn's LARS (METHODS §1.2: η = 0.02, clip_lr; the
demo/shared variants use plain η = 1e-3).
Hardware: one GPU, about a day. Expected: solo-learn reports 68.54% top-1 on
CIFAR-100 (92.07% on CIFAR-10) from its online linear probe (ResNet-18, 1000
epochs); its offline probe, which this project's probe evaluator runs, comes
out slightly lower. Brightness is multiplicative (torchvision ColorJitter, as
in solo-learn).

Variants (config arguments, comma-separated):
  in100    ImageNet-100 at 224 px (TFDS imagenet2012 streamed with
           class_subset="imagenet100"; or .npz via `in100_dir=`,
           see configs/msbreg.py),
           blur 0.5, 400 epochs. Expected (solo-learn, online linear
           probe): 79.22% top-1 (offline probe 79.40%).
  demo     Offline built-in domains at 32 px, width-¼ ResNet-18, expander
           256 → 256 → 256, 32 images per domain per step, 300 steps.
           2 CPU cores: about 8 minutes including compilation and evaluation
           (measured 0.82 steps/s). Measured (per-view BN, reference-order
           LARS; 3.8 min end to end on an AVX-512 Intel host): loss 36.5 (first
           25 steps) → 30.3 (last 25); kNN top-1 digits 92.5, photos 96.6,
           textures 39.5, mean 76.2% (chance 12.9%); probe mean 80.2%. The
           encoder at
           initialisation scores 69.8% kNN / 78.0% probe here (random conv
           features are strong on these domains).
  shared   The four ../shared/data domains, width-¼ ResNet-18, 64 images per
           domain per step, 2,000 steps: about 1.5–2 hours on 2 CPU cores
           (estimated from the demo's step rate).
  steps=N  Overrides total_steps.
"""

import os

from mdssl_jax import config_lib
from mdssl_jax import presets


# Config arguments that select a setup; tests load and validate each.
VARIANTS = ("", "in100", "demo", "shared")


def vicreg_augment(c, *, blur_p: float) -> None:
  """solo-learn's VICReg augmentation (the same for both views).

  torchvision ColorJitter: multiplicative brightness.
  """
  c.views.large.crop_area = (0.2, 1.0)
  for col in ("odd", "even"):
    c.augment[col].update(
        flip_p=0.5, jitter_p=0.8, brightness=0.4, contrast=0.4,
        saturation=0.2, hue=0.1, gray_p=0.2, blur_p=blur_p, solarize_p=0.1,
        brightness_mode="multiplicative")


def get_config(arg=None):
  """VICReg config; see the module docstring for the variants."""
  arg = config_lib.parse_arg(
      arg, in100=False, demo=False, shared=False, steps=-1,
      in100_dir=os.environ.get("IMAGENET100_DIR", ""),
      shared_dir=presets.DEFAULT_SHARED_DIR)
  c = config_lib.get_default_config("vicreg")
  c.method_args.update(sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0)
  c.projector.update(hidden_dims=(2048, 2048), out_dim=2048, norm="batch")
  c.optim.update(name="lars", base_lr=0.3, weight_decay=1e-4,
                 warmup_epochs=10.0, trust_coefficient=0.02,
                 clip_lr=True)
  c.log_every = 100
  c.checkpoint.every_steps = 5000
  if arg.in100:
    presets.imagenet100_data(c, arg.in100_dir)
    vicreg_augment(c, blur_p=0.5)
    c.total_epochs = 400.0
  else:
    presets.cifar100_data(c)
    vicreg_augment(c, blur_p=0.0)
    c.total_epochs = 1000.0
  if arg.demo or arg.shared:
    if arg.demo:
      presets.demo_variant(c)
      c.optim.update(base_lr=1.0, weight_decay=1e-5, warmup_steps=20)
    else:
      presets.shared_variant(c, arg.shared_dir)
      c.optim.update(base_lr=1.0, weight_decay=1e-5, warmup_steps=100)
    c.projector.update(hidden_dims=(256, 256), out_dim=256)
    c.views.large.crop_area = (0.2, 1.0)
  if arg.steps > 0:
    c.total_steps = arg.steps
  return c
