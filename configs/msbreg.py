r"""MSBReg (seed 002) on the shared trainer (METHODS.md §4).

  python -m mdssl_jax.main --config=configs/msbreg.py \
      --workdir=runs/msbreg_in100 --config.data.data_dir=$TFDS_DATA_DIR
  python -m mdssl_jax.main --config=configs/msbreg.py:stl10 \
      --workdir=runs/msbreg_stl10 --config.data.data_dir=$TFDS_DATA_DIR
  python -m mdssl_jax.main --config=configs/msbreg.py:demo --workdir=/tmp/msb
  python -m mdssl_jax.main --config=configs/msbreg.py:shared --workdir=...

Default (reference scale, the paper's ResNet-18 setting): ImageNet-100 at
224 px, ImageNet stem, K = 4 views, λ_s = 0.004, λ_b = 0.5 (Table 5's best
K = 4 cell), projector and predictor 2-layer MLPs 512 hidden → 128 out with
BN + ReLU, EMA τ 0.99 → 1 cosine [assumed: the supplement gives none], LARS
(η = 1e-3, biases and norm parameters excluded) with peak lr = 0.4 × B/256 ×
K, B = 512, wd 1e-5, 10 warm-up epochs then cosine, 320 epochs, blur p = 1.0
and solarize p = 0.2 on every view (supplement Table 1), additive brightness
x + δ, δ ~ U[−0.4, 0.4] in every variant: that table is BYOL's (Grill et al.
2020 App. B: a uniformly random brightness offset, as deepmind BYOL's code
adds), and SimCLR v1, which the supplement says it follows, uses
tf.image.random_brightness.
Hardware: 8 GPUs in the paper (V100 16 GB); about 2 days on one A100.
Expected: 80.4% linear top-1 (Table 5, K = 4; K = 2 without L_s, L_b, i.e.
BYOL, gives 71.9%).

ImageNet-100 (the 100 classes of CMC, Tian et al. 2019, used by solo-learn
and MSBReg; the list ships as mdssl_jax/data/imagenet100_classes.txt) is
streamed from a prepared TFDS imagenet2012 in `config.data.data_dir`
(`class_subset="imagenet100"`; the official validation split is the test
set); if ImageNet is not prepared there the run stops at start-up with the
`tfds build imagenet2012` command. Alternatively pass `in100_dir=DIR` (or set
$IMAGENET100_DIR) to read `train.npz`/`test.npz` (arrays `images`
[N, S, S, 3] uint8 and `labels` 0–99 in the order of that list) from DIR.
Every `:in100` variant of the zoo configs uses
`presets.imagenet100_data`.

Variants (config arguments, comma-separated):
  stl10       STL-10 (TFDS stl10, 96 px, ImageNet stem) as in Table 4:
              B = 256, base lr 0.5, λ_b = 0.05, 320 epochs. Pretrains on the
              5,000 labelled train images: the paper also uses the 100k
              `unlabelled` split, which the data layer cannot yet separate
              from the labelled images that the kNN/probe evaluation needs.
              Expected (Table 4, with train+unlabelled): 91.4% (BN).
  norm=layer  LayerNorm instead of BatchNorm in the projector and predictor,
              i.e. `--config.projector.norm=layer
              --config.predictor.norm=layer`. This is the one switch behind
              seed 002 Table 4's claim: with LayerNorm heads MSBReg still
              trains (82.3% at λ_b = 5e-3) while BYOL collapses (10.6%).
              Reproduce it with
                configs/msbreg.py:stl10,norm=layer \
                    --config.method_args.lambda_b=5e-3
                configs/byol.py:stl10,norm=layer
              (the supplement does not say whether the encoder's BatchNorm
              was replaced too; add --config.model.norm=layer for that).
  demo        Offline built-in domains at 32 px, width-¼ ResNet-18, K = 4,
              32 images per domain per step, 300 steps. 2 CPU cores: about
              12–15 minutes including compilation and evaluation (K = 4
              views cost about twice BYOL; measured 0.46 steps/s with other
              jobs running). Measured (per-view BN, additive brightness,
              reference-order LARS; 7.3 min end to end on an AVX-512 Intel
              host): loss 0.816 (first 25 steps) → 0.176 (last 25); kNN top-1
              digits 88.9, photos 94.8, textures 35.9, mean 73.2% (chance
              12.9%); probe mean 73.6%. The encoder at
              initialisation scores 70.4% kNN / 78.2% probe here (random
              conv features are strong on these domains).
  shared      The four ../shared/data domains, width-¼ ResNet-18, K = 4,
              64 images per domain per step, 2,000 steps: about 4–5 hours on
              2 CPU cores (estimated from the demo's step rate; use a GPU).
              Expected: kNN and probe top-1 far above chance on every
              domain.
  steps=N     Overrides total_steps.
"""

import os

from mdssl_jax import config_lib
from mdssl_jax import presets

# Config arguments that select a setup; tests load and validate each.
VARIANTS = ("", "stl10", "norm=layer", "stl10,norm=layer", "demo", "shared")


def get_config(arg=None):
  """MSBReg config; see the module docstring for the variants."""
  arg = config_lib.parse_arg(
      arg, in100=False, stl10=False, demo=False, shared=False, norm="batch",
      steps=-1, in100_dir=os.environ.get("IMAGENET100_DIR", ""),
      shared_dir=presets.DEFAULT_SHARED_DIR)
  c = config_lib.get_default_config("msbreg")
  presets.msbreg_recipe(c)
  if arg.stl10:
    presets.msbreg_stl10(c)
  elif arg.demo:
    presets.demo_variant(c)
    c.optim.update(base_lr=0.25, weight_decay=1e-5, warmup_steps=20)
  elif arg.shared:
    presets.shared_variant(c, arg.shared_dir)
    c.optim.update(base_lr=0.25, weight_decay=1e-5, warmup_steps=100)
  else:
    presets.imagenet100_data(c, arg.in100_dir, per_domain_batch=512)
  c.projector.norm = c.predictor.norm = arg.norm
  if arg.steps > 0:
    c.total_steps = arg.steps
  return c
