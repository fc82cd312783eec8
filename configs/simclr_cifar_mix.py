r"""Multi-domain SimCLR baseline on CIFAR-10/100, SVHN, STL-10 (seed 000, Table 1).

  python -m mdssl_jax.main --config=configs/simclr_cifar_mix.py \
      --workdir=runs/simclr_cifar_mix --config.data.data_dir=$TFDS_DATA_DIR

NT-Xent over the union batch (negatives from every domain): identical to
configs/mdssl_cifar_mix.py except for the loss. Hardware/runtime as there.
Expected (paper Table 1): per-domain linear top-1 CIFAR-10 82.3, STL-10 61.4,
SVHN 66.7, CIFAR-100 73.4 (avg 70.9). `:runlocal` for a CPU smoke run.
"""

from mdssl_jax import config_lib


def get_config(arg=None):
  mix = config_lib.load_sibling(__file__, "mdssl_cifar_mix")
  return mix.base_config("simclr", arg)
