r"""Study (b): seed 003 Table 1's layout — data diversity at a fixed budget.

  python -m mdssl_jax.sweep --config=configs/sweeps/diversity_shared.py \
      --workdir=runs/diversity_shared
  python -m mdssl_jax.sweep --config=configs/sweeps/diversity_shared.py \
      --dry_run --images_per_sec=110

10 / 50 / 100 % of ../shared/data cifar10 (N = 1,000 / 5,000 / 10,000
images, nested subsets of one fixed shuffled index) pretrained with the
same budget C = `images=` images seen (64,000 by default: 500 steps of
128), so E = C/N = 64 / 12.8 / 6.4 epochs and D = N/C = 0.016 / 0.078 /
0.156, for SimCLR, BYOL and VICReg (each method's `:shared` recipe: width-¼
ResNet-18, 128-d features, its reference BatchNorm and plain LARS), plus
the same encoder at initialisation. Scored by kNN (k = 20) and the linear
probe on cifar10's test split. Reduced from the paper: ResNet-18 at ¼
width instead of ResNet-50, 32 px, C = 64k instead of 50M, one seed.
Seed 003's claim: at fixed C, higher D (more unique images) helps, with
diminishing returns. 2 CPU cores: about 15 minutes per cell, ~2.5 hours.
"""

import os

import ml_collections

from mdssl_jax import config_lib
from mdssl_jax import presets

VARIANTS = ("",)
METHODS = ("simclr", "byol", "vicreg")
FRACTIONS = (0.1, 0.5, 1.0)


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, images=64_000, dataset="cifar10",
                             shared_dir=presets.DEFAULT_SHARED_DIR)
  path = os.path.join(arg.shared_dir, arg.dataset)
  base = {"budget.images_seen": arg.images, "total_steps": -1,
          "data.per_domain_batch": 128, "optim.warmup_steps": 25}
  cells = []
  for method in METHODS:
    for fraction in FRACTIONS:
      domain = {"name": arg.dataset, "source": "npz", "path": path,
                "fraction": fraction}
      cells.append(dict(
          name=f"{method}_f{fraction}", config=f"configs/{method}.py:shared",
          overrides={**base, "data.domains": [domain]},
          tags={"method": method, "fraction": fraction, "seed": 0}))
  cells.append(dict(
      name="init", config="configs/simclr.py:shared", init=True,
      overrides={**base, "data.domains": [
          {"name": arg.dataset, "source": "npz", "path": path}]},
      tags={"method": "initialisation", "fraction": 1.0, "seed": 0}))
  c = ml_collections.ConfigDict()
  c.name = "diversity_shared"
  c.cells = cells
  c.eval_suite = ""
  c.metrics = ("probe", "knn")
  c.plots = [{"x": "diversity", "y": "probe", "series": "method"},
             {"x": "diversity", "y": "knn", "series": "method"}]
  return c
