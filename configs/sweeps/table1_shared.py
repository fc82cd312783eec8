r"""Study (a): seed 000 Table 1's layout on ../shared/data, at equal budget.

  python -m mdssl_jax.sweep --config=configs/sweeps/table1_shared.py \
      --workdir=runs/table1_shared
  python -m mdssl_jax.sweep --config=configs/sweeps/table1_shared.py \
      --dry_run --images_per_sec=110

Cells (every one sees C = `images=` images, 128,000 by default; the
width-¼ ResNet-18 of configs/shared_mix.py, 128-d features, 256 images per
step, so 500 steps): single-domain SimCLR on each of cifar10, mnist,
gtsrb, tinyimagenet; union ("multi-domain") SimCLR on all four (2 seeds);
MDSSL λ1 = 1, λ2 = 0.1 (2 seeds) and λ1 = 1, λ2 = 0.15 (1 seed); the same
encoder at initialisation. Every cell is scored by kNN (k = 20) and the
linear probe on the four training domains and on notmnist, never seen
in training (single-domain cells see the other three as unseen too).
Reduced from the paper: ResNet-18 at ¼ width instead of ResNet-50, 32 px
.npz subsets of 8–10k images per domain instead of the full sets, 500
steps instead of 48,000. 2 CPU cores: about 25 minutes per cell, ~4 hours
in all (resumable: rerun the command).
"""

import os

import ml_collections

from mdssl_jax import config_lib
from mdssl_jax import presets

VARIANTS = ("",)
TRAIN = ("cifar10", "mnist", "gtsrb", "tinyimagenet")
UNSEEN = "notmnist"


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, images=128_000, steps_per_warmup=25,
                             shared_dir=presets.DEFAULT_SHARED_DIR)
  path = lambda d: os.path.join(arg.shared_dir, d)
  domain = lambda d: {"name": d, "source": "npz", "path": path(d)}
  base = {"data.domains": [domain(d) for d in TRAIN],
          "budget.images_seen": arg.images, "total_steps": -1,
          "optim.warmup_steps": arg.steps_per_warmup,
          # A cell cut short (a session's end) resumes from its last
          # 100-step checkpoint instead of from step 0.
          "checkpoint.every_steps": 100}
  unseen = f"configs/eval/unseen.py:npz={path(UNSEEN)},seen=false"
  cells = []
  for d in TRAIN:
    others = "+".join(path(o) for o in TRAIN if o != d) + "+" + path(UNSEEN)
    cells.append(dict(
        name=f"simclr_single_{d}", config="configs/shared_mix.py:simclr",
        overrides={**base, "data.domains": [domain(d)],
                   "data.per_domain_batch": 256},
        tags={"model": f"SimCLR single ({d})", "seed": 0},
        eval_suite=f"configs/eval/unseen.py:npz={others},seen=false"))
  for seed in (0, 1):
    cells.append(dict(name=f"simclr_union_s{seed}",
                      config="configs/shared_mix.py:simclr",
                      overrides={**base, "seed": seed},
                      tags={"model": "SimCLR union", "seed": seed}))
    cells.append(dict(name=f"mdssl_l2-0.1_s{seed}",
                      config="configs/shared_mix.py",
                      overrides={**base, "seed": seed},
                      tags={"model": "MDSSL λ1=1 λ2=0.1", "seed": seed}))
  cells.append(dict(name="mdssl_l2-0.15_s0", config="configs/shared_mix.py",
                    overrides={**base, "method_args.lambda2": 0.15},
                    tags={"model": "MDSSL λ1=1 λ2=0.15", "seed": 0}))
  cells.append(dict(name="init", config="configs/shared_mix.py",
                    overrides=base, init=True,
                    tags={"model": "initialisation", "seed": 0}))
  c = ml_collections.ConfigDict()
  c.name = "table1_shared"
  c.cells = cells
  c.eval_suite = unseen
  c.metrics = ("probe", "knn")
  c.plots = [{"kind": "bars", "y": "probe"}, {"kind": "bars", "y": "knn"}]
  return c
