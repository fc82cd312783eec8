r"""Multi-domain SimCLR on CIFAR-10/100, SVHN, STL-10 (seed 000, Table 1).

  python -m mdssl_jax.main --config=configs/simclr_cifar_mix.py \
      --workdir=runs/simclr_cifar_mix --config.data.data_dir=$TFDS_DATA_DIR

NT-Xent over the union batch (negatives from every domain): identical to
configs/mdssl_cifar_mix.py except for the loss (multiplicative brightness,
as there). Hardware/runtime as there.
Expected (paper Table 1): per-domain linear top-1 CIFAR-10 82.3, STL-10 61.4,
SVHN 66.7, CIFAR-100 73.4 (avg 70.9). `:runlocal` for a CPU smoke run.
"""

from mdssl_jax import config_lib
from mdssl_jax import presets

# Config arguments that select a setup; tests load and validate each.
VARIANTS = ("", "runlocal")


def get_config(arg=None):
  """Multi-domain SimCLR on the Table-1 mixture; `:runlocal` on a CPU."""
  arg = config_lib.parse_arg(arg, runlocal=False)
  c = config_lib.get_default_config("simclr")
  return presets.cifar_mix(c, runlocal=arg.runlocal)
