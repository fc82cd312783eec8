r"""Barlow Twins (Zbontar et al. 2021) on the shared trainer (METHODS §5.4).

  python -m mdssl_jax.main --config=configs/barlow_twins.py \
      --workdir=runs/barlow_c100 --config.data.data_dir=$TFDS_DATA_DIR
  python -m mdssl_jax.main \
      --config=configs/barlow_twins.py:in100 \
      --workdir=runs/barlow_in100 --config.data.data_dir=$TFDS_DATA_DIR
  python -m mdssl_jax.main --config=configs/barlow_twins.py:demo \
      --workdir=/tmp/barlow
  python -m mdssl_jax.main --config=configs/barlow_twins.py:shared --workdir=...

Default (reference scale): solo-learn's ResNet-18 CIFAR-100 recipe — TFDS
cifar100 at 32 px, CIFAR stem, projector 512→2048→2048→2048 (BN + ReLU on the
hidden layers), λ = 5e-3 off-diagonal weight, loss scale 0.1, LARS base lr 0.3
× B/256 (B = 256), wd 1e-4, 10 warm-up epochs then cosine, 1000 epochs,
solo-learn "asymmetric" augmentation. The optimiser is solo-learn's LARS
(METHODS §1.2: η = 0.02, clip_lr; the demo/shared variants use plain η = 1e-3).
Hardware: one GPU, about a day. Expected: solo-learn reports 70.90% top-1 on
CIFAR-100 (92.10% on CIFAR-10) from its online linear probe (ResNet-18, 1000
epochs); its offline probe, which this project's probe evaluator runs, comes
out slightly lower. Brightness is multiplicative (torchvision ColorJitter, as
in solo-learn).

Variants (config arguments, comma-separated):
  in100    ImageNet-100 at 224 px (TFDS imagenet2012 streamed with
           class_subset="imagenet100"; or .npz via `in100_dir=`,
           see configs/msbreg.py),
           400 epochs, blur 1.0 / 0.1. Expected (solo-learn, online
           linear probe): 80.38% top-1 (offline probe 80.16%).
  demo     Offline built-in domains at 32 px, width-¼ ResNet-18, projector
           256 → 256 → 256, 32 images per domain per step, 300 steps.
           2 CPU cores: about 8 minutes including compilation and evaluation
           (measured 0.80 steps/s). Measured (per-view BN, reference-order
           LARS; 4.5 min end to end on an AVX-512 Intel host): loss 11.9 (first
           25 steps) → 4.36 (last 25); kNN top-1 digits 89.4, photos 94.6,
           textures 39.9, mean 74.6% (chance 12.9%); probe mean 80.5%. The
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


def get_config(arg=None):
  """Barlow Twins config; see the module docstring for the variants."""
  arg = config_lib.parse_arg(
      arg, in100=False, demo=False, shared=False, steps=-1,
      in100_dir=os.environ.get("IMAGENET100_DIR", ""),
      shared_dir=presets.DEFAULT_SHARED_DIR)
  c = config_lib.get_default_config("barlow_twins")
  c.method_args.update(lambd=5e-3, scale=0.1)
  c.projector.update(hidden_dims=(2048, 2048), out_dim=2048, norm="batch")
  c.optim.update(name="lars", base_lr=0.3, weight_decay=1e-4,
                 warmup_epochs=10.0, trust_coefficient=0.02,
                 clip_lr=True)
  c.views.large.crop_area = (0.08, 1.0)
  c.log_every = 100
  c.checkpoint.every_steps = 5000
  if arg.in100:
    presets.imagenet100_data(c, arg.in100_dir)
    presets.solo_asymmetric(c, image_size=224)
    c.total_epochs = 400.0
  else:
    presets.cifar100_data(c)
    presets.solo_asymmetric(c, image_size=32)
    c.total_epochs = 1000.0
  if arg.demo or arg.shared:
    if arg.demo:
      presets.demo_variant(c)
      c.optim.update(base_lr=1.0, weight_decay=1e-5, warmup_steps=20)
    else:
      presets.shared_variant(c, arg.shared_dir)
      c.optim.update(base_lr=1.0, weight_decay=1e-5, warmup_steps=100)
    c.projector.update(hidden_dims=(256, 256), out_dim=256)
  if arg.steps > 0:
    c.total_steps = arg.steps
  return c
