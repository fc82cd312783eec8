r"""ViRB-style end-task battery on frozen encoders (seed 001; METHODS §6.7).

  python -m mdssl_jax.virb --workdirs=RUN1,RUN2 \
      --config=configs/virb/offline.py [--output_dir=./virb/]
  python -m mdssl_jax.virb --workdirs=RUN1 \
      --config=configs/virb/offline.py:smoke          # about a minute
  python -m mdssl_jax.virb --workdirs=RUN1,RUN2 \
      --config=configs/virb/offline.py:tfds --config.tfds.data_dir=DIR

Tasks (default, offline, generated from `seed`; `mdssl_jax.virb.tasks`):
shape_class and the demo photos / textures domains (semantic image-level,
linear), count and egomotion (structural image-level, linear / fusion),
fg_seg and class_seg (semantic pixelwise, DeepLabv3+, mIoU), depth and
flow (structural pixelwise, U-Net / Siamese U-Net, -L1), each with 1000
train and 300 test examples at 32 px. `:tfds` adds eurosat, dtd, cifar100,
oxford_iiit_pet masks and nyu_depth_v2 from `tfds.data_dir` (no download
unless `tfds.download=True`).
Heads: Adam, lr 3e-4, batch 32; 1500 steps (image-level) / 400 steps
(pixelwise) on the frozen encoder's outputs, computed once per task.
Every run adds a random-initialisation baseline of the first workdir's
architecture; normalised scores subtract its score.
Hardware / runtime: 2 CPU cores; the default battery on two width-1/8
ResNet-18 demo encoders plus the baseline is sized for < 15 minutes
(`benchmarks/virb_speed.py`); `:smoke` about a minute.
"""

from mdssl_jax import config_lib
from mdssl_jax.virb import config as virb_config

# Config arguments that select a setup; tests load and validate each.
VARIANTS = ("", "smoke", "tfds")


def get_config(arg=None):
  """The offline battery; `smoke` is a small test run, `tfds` adds TFDS."""
  arg = config_lib.parse_arg(arg, smoke=False, tfds=False)
  c = virb_config.base_config()
  c.domains = [
      {"name": "photos", "source": "demo", "demo_name": "photos"},
      {"name": "textures", "source": "demo", "demo_name": "textures"},
  ]
  if arg.tfds:
    c.tfds.tasks = ("eurosat", "dtd", "cifar100", "pets_seg", "nyu_depth")
  if arg.smoke:
    c.num_train = 96
    c.num_test = 48
    c.max_train_per_domain = 96
    c.max_test_per_domain = 48
    c.domains = [c.domains[0]]
    c.tfds.num_train = 32
    c.tfds.num_test = 16
    c.tfds.image_size = 32
    c.heads.image_steps = 100
    c.heads.pixel_steps = 50
    c.heads.decoder_width = 16
    c.heads.fusion_dim = 32
  return c
