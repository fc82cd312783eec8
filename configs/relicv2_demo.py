r"""Offline RELICv2 demo: 4 large + 2 small views, EMA target, saliency masks.

  python -m mdssl_jax.main --config=configs/relicv2_demo.py \
      --workdir=/tmp/relicv2_demo
  python -m mdssl_jax.main --config=configs/relicv2_demo.py:tiny  # 1-2 min

Data: the three built-in domains (scikit-learn digits, crops of scikit-image
photos, procedurally generated textures) at 32×32; nothing is downloaded.
The textures domain ships saliency masks, so the RELICv2 masking stage runs
offline: each large view of a textures image is independently replaced, with
probability p_m = 0.1, by its foreground on a uniform grey background
(METHODS.md §3.7); digits and photos carry no masks and are never masked
(the log says which domains are masked).

Method (seed 004, METHODS.md §3): L = 4 large views at 32 px and S = 2 small
views at 16 px (odd/even augmentation columns, crop areas [0.2, 1] and
[0.05, 0.14]); online ResNet-18 (width ⅛, CIFAR stem) + projector +
predictor (256→64), EMA target of encoder + projector (γ cosine 0.99 → 1);
τ = 0.2, β = 1, n_e = 10 negatives out of the 48-image batch (16 per
domain). LARS with peak lr 2.0 (taken as the peak: linear batch scaling
would give a uselessly small lr at batch 48), wd 1e-5, 20 warm-up steps,
cosine over 300 steps.

Hardware / runtime: 2 CPU cores, about 4–6 minutes on a quiet machine
(measured: ≈ 370 s of CPU time in all — ~40 s compile, ~1 s per step,
~20 s evaluation).
Expected result (measured, seed 0): the loss falls from ≈ 2.5 (mean of the
first 25 steps) to ≈ 1.75, and per-domain kNN top-1 (chance 10% / 14% /
14%) ends at ≈ 86% digits, 95% photos, 35% textures (mean 72%; linear probe
mean 76%). For reference, the same encoder at random initialisation scores
kNN 84% / 73% / 36% (mean 64%): in 300 CPU steps training mainly helps the
photos domain. It is a demo of the mechanics, not a benchmark. `:tiny`
(width 1/16, 60 steps, ≈ 100 s of CPU time) is a smoke run.
"""

from mdssl_jax import config_lib
from mdssl_jax import presets


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False, steps=300)
  c = config_lib.get_default_config("relicv2")
  presets.demo_data(c, image_size=32, per_domain_batch=16)

  # Views (METHODS.md §3.6): large 1, 3 and small 1 use augment.odd,
  # large 2, 4 and small 2 use augment.even (the pipeline's defaults are
  # the paper's table: blur 0.1 / 1.0, solarize 0.2 / 0).
  c.views.large.count = 4
  c.views.large.size = 32
  c.views.large.crop_area = (0.2, 1.0)  # 0.08 is harsh on 32 px images.
  c.views.small.count = 2
  c.views.small.size = 16
  c.views.small.crop_area = (0.05, 0.14)
  c.saliency.prob = 0.1
  c.saliency.min_coverage = 0.05

  presets.cpu_model(c, width=0.125, proj_hidden=256, proj_out=64)
  c.method_args.temperature = 0.2
  c.method_args.beta = 1.0
  c.method_args.num_negatives = 10

  c.optim.name = "lars"
  c.optim.lr_scaling = "none"
  c.optim.base_lr = 2.0
  c.optim.weight_decay = 1e-5
  c.optim.warmup_steps = 20
  # A 300-step run needs a faster-moving target than ImageNet's 0.996.
  c.ema.base = 0.99
  c.ema.schedule = "cosine"
  c.total_steps = arg.steps
  c.log_every = 25
  c.checkpoint.every_steps = 100
  c.checkpoint.keep = 2
  presets.cpu_eval(c, probe_steps=1500, max_train=2000, max_test=1000)

  if arg.tiny:
    c.model.width_multiplier = 0.0625
    c.total_steps = 60 if arg.steps == 300 else arg.steps
    c.optim.warmup_steps = 5
    c.log_every = 10
    c.checkpoint.every_steps = 30
    presets.cpu_eval(c, probe_steps=300, max_train=500, max_test=300)
  return c
