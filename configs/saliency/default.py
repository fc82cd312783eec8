r"""Saliency masks for a real dataset: TFDS ImageNet, or any .npz domain.

  python -m mdssl_jax.saliency --config=configs/saliency/default.py \
      --workdir=/data/masks/imagenet2012 \
      --config.data.data_dir=/data/tfds \
      --config.refine.init_workdir=runs/relicv2_r50/<run>   # optional
  python -m mdssl_jax.saliency \
      --config=configs/saliency/default.py:npz,path=../shared/data/cifar10 \
      --workdir=/tmp/cifar10_masks

Then train with the masks (the last line printed is the masks_path):
  python -m mdssl_jax.main --config=configs/relicv2_r50.py:masks=DIR/tfds_masks
  (npz: the domain's masks_path=DIR/masks.npz).

Data: the TFDS split `train` of `imagenet2012` (fixed file order; masks are
keyed by each example's tfds_id and stored in one sidecar record file per
TFDS shard, <workdir>/tfds_masks), or `:npz,path=DIR` (DIR/train.npz;
<workdir>/masks.npz, a `masks` array aligned by index).
Method (seed 004 App. B.2.1, DeepUSPS): 2,500 training images at 64 px,
frequency-tuned + RBD + manifold-ranking maps fused into pseudo-labels, a
ResNet-18 (width 1/4) + top-down decoder refined in 3 rounds of 25 epochs
(Adam, lr 1e-3 doubled each round, batch 10); then every image is masked.
The paper used a SwAV ResNet-50 2x backbone; `refine.init_workdir` starts
the encoder from an SSL run of this project (refine.model must then match
that run's config.model).
Hardware / runtime: the 2,500-image refinement takes ~10-20 min on a CPU
(not measured here), minutes on a GPU; masking 1.28M ImageNet images is
I/O bound (decode + a 64 px forward pass each; hours on one host).
"""

from mdssl_jax import config_lib
from mdssl_jax.saliency import config as saliency_config

VARIANTS = ("", "npz,path=/data/cifar10")


def get_config(arg=None):
  """TFDS imagenet2012 by default; `npz,path=DIR` for a .npz domain."""
  arg = config_lib.parse_arg(arg, npz=False, path="",
                             tfds_name="imagenet2012")
  c = saliency_config.base_config()
  if arg.npz:
    c.data.source = "npz"
    c.data.path = arg.path or None
  else:
    c.data.source = "tfds"
    c.data.tfds_name = arg.tfds_name
    c.data.split = "train"
  c.refine.train_examples = 2500
  c.refine.image_size = 64
  c.refine.rounds = 3
  c.refine.epochs_per_round = 25
  c.refine.batch_size = 10
  c.refine.lr = 1e-3
  c.refine.lr_growth = 2.0
  c.output.chunk_size = 4096
  return c
