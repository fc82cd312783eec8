r"""MSBReg (seed 002) on the shared trainer (METHODS.md §4).

  python -m mdssl_jax.main --config=configs/msbreg.py:in100_dir=$IN100 \
      --workdir=runs/msbreg_in100
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
and solarize p = 0.2 on every view (supplement Table 1).
Hardware: 8 GPUs in the paper (V100 16 GB); about 2 days on one A100.
Expected: 80.4% linear top-1 (Table 5, K = 4; K = 2 without L_s, L_b, i.e.
BYOL, gives 71.9%).

ImageNet-100. The data layer has no class-subset option for TFDS, so
ImageNet-100 (the 100 classes of CMC, Tian et al. 2019, used by solo-learn
and MSBReg; `IMAGENET100_CLASSES` below) is supplied as a directory holding
`train.npz`, `test.npz` (arrays `images` [N, S, S, 3] uint8 and `labels`
0–99) and `class_names.txt`. Build it once from a prepared TFDS
imagenet2012 (the official validation split becomes `test.npz`; ~20 GB of
224 px images, ~40 GB of RAM while building):

  python configs/msbreg.py --build_in100=/data/in100 \
      --tfds_data_dir=$TFDS_DATA_DIR

then pass `in100_dir=/data/in100` (or set $IMAGENET100_DIR). Without it the
config stops at start-up with this explanation instead of silently training
on all 1000 classes; labels ≥ 100 are rejected when the data load. Every
`:in100` variant of the zoo configs uses this helper.

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
              jobs running). Measured: loss 0.89 (first 25 steps) → 0.12
              (last 25); kNN top-1 digits 91.1, photos 96.0, textures 31.9,
              mean 73.0% (chance 12.9%); probe mean 74.1%. The encoder at
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
import sys

import ml_collections

from mdssl_jax import config_lib
from mdssl_jax import presets

# CMC's ImageNet-100 (github.com/HobbitLong/CMC), as used by solo-learn.
IMAGENET100_CLASSES = tuple("""
n02869837 n01749939 n02488291 n02107142 n13037406 n02091831 n04517823 n04589890
n03062245 n01773797 n01735189 n07831146 n07753275 n03085013 n04485082 n02105505
n01983481 n02788148 n03530642 n04435653 n02086910 n02859443 n13040303 n03594734
n02085620 n02099849 n01558993 n04493381 n02109047 n04111531 n02877765 n04429376
n02009229 n01978455 n02106550 n01820546 n01692333 n07714571 n02974003 n02114855
n03785016 n03764736 n03775546 n02087046 n07836838 n04099969 n04592741 n03891251
n02701002 n03379051 n02259212 n07715103 n03947888 n04026417 n02326432 n03637318
n01980166 n02113799 n02086240 n03903868 n02483362 n04127249 n02089973 n03017168
n02093428 n02804414 n02396427 n04418357 n02172182 n01729322 n02113978 n03787032
n02089867 n02119022 n03777754 n04238763 n02231487 n03032252 n02138441 n02104029
n03837869 n03494278 n04136333 n03794056 n03492542 n02018207 n04067472 n03930630
n03584829 n02123045 n04229816 n02100583 n03642806 n04336792 n03259280 n02116738
n02108089 n03424325 n01855672 n02090622
""".split())
# ImageNet-100 train images (1,300 or fewer per class): converts epoch-based
# method settings (DINO/SwAV warm-ups) to steps at config time.
IMAGENET100_TRAIN_SIZE = 126_689
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet100_data(c: ml_collections.ConfigDict, in100_dir: str, *,
                     per_domain_batch: int = 256) -> None:
  """ImageNet-100 from `in100_dir` (.npz, see the module docstring), 224 px.

  Raises:
    config_lib.ConfigError: when no directory is given, with the recipe.
  """
  if not in100_dir:
    raise config_lib.ConfigError(
        "ImageNet-100 needs its data directory: the data layer has no TFDS "
        "class-subset option, so the 100-class subset is read from .npz "
        "files. Build them once from a prepared TFDS imagenet2012 with\n"
        "  python configs/msbreg.py --build_in100=DIR "
        "--tfds_data_dir=$TFDS_DATA_DIR\n"
        "and pass the config argument `in100_dir=DIR` (e.g. "
        "--config=configs/byol.py:in100,in100_dir=DIR) or set "
        "$IMAGENET100_DIR.")
  c.data.domains = [{"name": "imagenet100", "source": "npz",
                     "path": in100_dir, "num_classes": 100}]
  c.data.image_size = 224
  c.data.resize = "resize"
  c.data.per_domain_batch = per_domain_batch
  c.data.mean, c.data.std = _IMAGENET_MEAN, _IMAGENET_STD
  c.data.max_in_memory_gb = 24.0  # ~20 GB of uint8 images at 224 px.
  c.views.large.size = 224
  c.model.update(depth=18, width_multiplier=1.0, stem="imagenet")
  c.eval.update(probe_steps=49_500, probe_batch_size=256, probe_lr=0.1,
                probe_momentum=0.9, probe_schedule="cosine",
                max_train_per_domain=130_000, max_test_per_domain=5_000)


def build_imagenet100_npz(out_dir: str, *, tfds_data_dir: str | None,
                          size: int = 224, max_per_split: int | None = None
                          ) -> dict[str, int]:
  """Writes ImageNet-100 as train.npz / test.npz / class_names.txt.

  Reads TFDS imagenet2012 (train → train.npz, validation → test.npz), keeps
  the `IMAGENET100_CLASSES`, relabels them 0–99 in that order and stores the
  central square of every image resized to size×size (uint8).

  Args:
    out_dir: output directory (created).
    tfds_data_dir: where imagenet2012 is prepared (None: TFDS default).
    size: stored side in pixels.
    max_per_split: read at most this many examples per split (tests).

  Returns:
    {"train": n_train, "test": n_test} images written.

  Raises:
    FileNotFoundError: imagenet2012 is not prepared in tfds_data_dir.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  builder = tfds.builder("imagenet2012", data_dir=tfds_data_dir)
  label_feature = builder.info.features["label"]
  table = np.full(label_feature.num_classes, -1, np.int64)
  for new, wnid in enumerate(IMAGENET100_CLASSES):
    table[label_feature.str2int(wnid)] = new
  lookup = tf.constant(table)

  def prepare(example):
    image = example["image"]
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    side = tf.minimum(h, w)
    image = tf.image.crop_to_bounding_box(image, (h - side) // 2,
                                          (w - side) // 2, side, side)
    image = tf.image.resize(image, (size, size), antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    return image, tf.gather(lookup, example["label"])

  os.makedirs(out_dir, exist_ok=True)
  counts = {}
  for split, name in (("train", "train"), ("validation", "test")):
    try:
      ds = builder.as_dataset(split=split, shuffle_files=False)
    except AssertionError as e:  # TFDS's "could not find data".
      where = tfds_data_dir or "~/tensorflow_datasets"
      raise FileNotFoundError(
          f"TFDS imagenet2012 is not prepared in {where}. Put "
          "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
          f"{where}/downloads/manual and run `tfds build imagenet2012 "
          f"--data_dir={where}` first.") from e
    if max_per_split:
      ds = ds.take(max_per_split)
    ds = ds.filter(lambda ex: tf.gather(lookup, ex["label"]) >= 0)
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    images, labels = [], []
    for x, y in ds.batch(1024).as_numpy_iterator():
      images.append(x)
      labels.append(y)
    images = (np.concatenate(images) if images
              else np.zeros((0, size, size, 3), np.uint8))
    labels = np.concatenate(labels) if labels else np.zeros((0,), np.int64)
    np.savez(os.path.join(out_dir, f"{name}.npz"), images=images,
             labels=labels)
    counts[name] = len(labels)
  with open(os.path.join(out_dir, "class_names.txt"), "w") as f:
    f.write("\n".join(IMAGENET100_CLASSES) + "\n")
  return counts


def to_byol_baseline(c: ml_collections.ConfigDict) -> None:
  """Turns an MSBReg config into its BYOL baseline (K = 2, no L_s, L_b).

  MSBReg's peak lr is base × B/256 × K; the baseline keeps that rule at
  K = 2 (BYOL has no ×K factor, so base_lr doubles).
  """
  from mdssl_jax import methods  # pylint: disable=g-import-not-at-top
  c.method = "byol"
  c.method_args = methods.get_method("byol").default_args()
  c.views.large.count = 2
  c.optim.base_lr *= 2.0


def get_config(arg=None):
  """MSBReg config; see the module docstring for the variants."""
  arg = config_lib.parse_arg(
      arg, in100=False, stl10=False, demo=False, shared=False, norm="batch",
      steps=-1, in100_dir=os.environ.get("IMAGENET100_DIR", ""),
      shared_dir=presets.DEFAULT_SHARED_DIR)
  zoo = config_lib.load_sibling(__file__, "byol")
  c = config_lib.get_default_config("msbreg")
  c.method_args.update(lambda_s=0.004, lambda_b=0.5)
  c.views.large.count = 4
  c.views.large.crop_area = (0.08, 1.0)
  for col in ("odd", "even"):  # Supplement Table 1: the same for all views.
    c.augment[col].update(
        flip_p=0.5, jitter_p=0.8, brightness=0.4, contrast=0.4,
        saturation=0.2, hue=0.1, gray_p=0.2, blur_p=1.0, solarize_p=0.2)
  c.projector.update(hidden_dims=(512,), out_dim=128, norm="batch")
  c.predictor.update(hidden_dims=(512,), out_dim=128, norm="batch")
  c.ema.update(base=0.99, schedule="cosine")
  c.optim.update(name="lars", base_lr=0.4, weight_decay=1e-5,
                 warmup_epochs=10.0, trust_coefficient=1e-3)
  c.total_epochs = 320.0
  c.log_every = 100
  c.checkpoint.every_steps = 5000
  if arg.stl10:
    c.data.domains = [{"name": "stl10", "source": "tfds",
                       "tfds_name": "stl10", "split": "train",
                       "eval_split": "test"}]
    c.data.image_size = 96
    c.data.per_domain_batch = 256
    c.data.mean, c.data.std = _IMAGENET_MEAN, _IMAGENET_STD
    c.views.large.size = 96
    c.model.update(depth=18, width_multiplier=1.0, stem="imagenet")
    c.method_args.lambda_b = 0.05
    c.optim.base_lr = 0.5
    c.eval.update(probe_steps=2_000, probe_batch_size=256, probe_lr=0.1,
                  probe_schedule="cosine", max_train_per_domain=5_000,
                  max_test_per_domain=8_000)
  elif arg.demo:
    zoo.demo_variant(c)
    c.optim.update(base_lr=0.25, weight_decay=1e-5, warmup_steps=20)
  elif arg.shared:
    zoo.shared_variant(c, arg.shared_dir)
    c.optim.update(base_lr=0.25, weight_decay=1e-5, warmup_steps=100)
  else:
    imagenet100_data(c, arg.in100_dir, per_domain_batch=512)
  c.projector.norm = c.predictor.norm = arg.norm
  if arg.steps > 0:
    c.total_steps = arg.steps
  return c


def _main(argv: list[str]) -> None:
  """`python configs/msbreg.py --build_in100=DIR [--tfds_data_dir=D]`."""
  opts = dict(a[2:].split("=", 1) for a in argv if a.startswith("--")
              and "=" in a)
  unknown = set(opts) - {"build_in100", "tfds_data_dir", "size"}
  if "build_in100" not in opts or unknown:
    raise SystemExit("usage: python configs/msbreg.py --build_in100=DIR "
                     "[--tfds_data_dir=TFDS_DATA_DIR] [--size=224]")
  counts = build_imagenet100_npz(opts["build_in100"],
                                 tfds_data_dir=opts.get("tfds_data_dir"),
                                 size=int(opts.get("size", 224)))
  print(f"Wrote ImageNet-100 to {opts['build_in100']}: {counts}")


if __name__ == "__main__":
  _main(sys.argv[1:])
