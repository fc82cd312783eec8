"""TFDS-backed end tasks (eurosat, dtd, cifar100, pets masks, NYU depth).

Synopsis::

  task = tfds_tasks.load_task("pets_seg", config.tfds)

Data come from `config.tfds.data_dir` and are never downloaded unless
`config.tfds.download` is True; a missing dataset raises
`DatasetNotFoundError` with the `tfds build ... --data_dir=...` command.
Each task reads the first `num_train` / `num_test` examples of its splits
(TFDS's fixed order), centre-cropped to a square and resized to
`config.tfds.image_size` (bilinear; masks nearest).

| task | TFDS name | splits | head, metric |
|---|---|---|---|
| eurosat | eurosat/rgb | train[:80%] / train[80%:] | linear, top-1 |
| dtd | dtd | train / test | linear, top-1 |
| cifar100 | cifar100 | train / test | linear, top-1 |
| pets_seg | oxford_iiit_pet (segmentation_mask: pet, background, border) |
  train / test | DeepLabv3+, mIoU |
| nyu_depth | nyu_depth_v2 (depth, metres) | train / validation | U-Net, -L1 |
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
import numpy as np

from mdssl_jax.virb import tasks as tasks_lib


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
  """Where one TFDS task's data live and what it predicts."""
  tfds_name: str
  train_split: str
  test_split: str
  target_key: str
  kind: str  # "label", "mask" or "depth"
  category: str
  head: str
  metric: str


SPECS = {
    "eurosat": TfdsSpec("eurosat/rgb", "train[:80%]", "train[80%:]", "label",
                        "label", tasks_lib.SEMANTIC_IMAGE, "linear", "top1"),
    "dtd": TfdsSpec("dtd", "train", "test", "label", "label",
                    tasks_lib.SEMANTIC_IMAGE, "linear", "top1"),
    "cifar100": TfdsSpec("cifar100", "train", "test", "label", "label",
                         tasks_lib.SEMANTIC_IMAGE, "linear", "top1"),
    "pets_seg": TfdsSpec("oxford_iiit_pet", "train", "test",
                         "segmentation_mask", "mask",
                         tasks_lib.SEMANTIC_PIXEL, "deeplab", "miou"),
    "nyu_depth": TfdsSpec("nyu_depth_v2", "train", "validation", "depth",
                          "depth", tasks_lib.STRUCTURAL_PIXEL, "unet",
                          "neg_l1"),
}
_PET_CLASSES = 3  # Trimap values 1 (pet), 2 (background), 3 (border).


def _square(x, size: int, method: str):
  """Centre square crop of [h, w, c] resized to [size, size, c] (tf)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  h, w = tf.shape(x)[0], tf.shape(x)[1]
  side = tf.minimum(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  crop = x[top:top + side, left:left + side]
  return tf.image.resize(tf.cast(crop, tf.float32), (size, size),
                         method=method, antialias=method == "bilinear")


def _prepare(spec: TfdsSpec, size: int):
  """Example dict -> (image [S, S, 3] float32 in [0, 1], target) (tf)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def prepare(ex):
    image = ex["image"]
    if image.shape[-1] == 1:
      image = tf.tile(image, [1, 1, 3])
    image = _square(image[..., :3], size, "bilinear") / 255.0
    target = ex[spec.target_key]
    if spec.kind == "label":
      target = tf.cast(target, tf.int32)
    elif spec.kind == "mask":  # Trimap 1..3 -> classes 0..2.
      mask = tf.reshape(target, tf.concat([tf.shape(target)[:2], [1]], 0))
      target = tf.cast(_square(mask, size, "nearest")[..., 0], tf.int32) - 1
    else:
      depth = tf.reshape(target, tf.concat([tf.shape(target)[:2], [1]], 0))
      target = _square(depth, size, "bilinear")
    return tf.clip_by_value(image, 0.0, 1.0), target

  return prepare


def prepare_error(task: str, tfds_name: str,
                  data_dir: str | None) -> Exception:
  """The DatasetNotFoundError of an unprepared dataset, with the commands."""
  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds
  from mdssl_jax.data.domain import DatasetNotFoundError
  # pylint: enable=g-import-not-at-top
  where = data_dir or tfds.core.constants.DATA_DIR
  return DatasetNotFoundError(
      f"ViRB task {task!r}: TFDS dataset {tfds_name!r} is not prepared in "
      f"data_dir={where!r} and download is off. Prepare it once with\n"
      f"  tfds build {tfds_name} --data_dir={where}\n"
      "or rerun with --config.tfds.download=True (needs network access).")


def _split(spec: TfdsSpec, split: str, num: int,
           tfds_cfg: ml_collections.ConfigDict, task: str
           ) -> tuple[np.ndarray, np.ndarray, Any]:
  """The first `num` prepared examples of one split, and the TFDS info."""
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  import tensorflow_datasets as tfds
  from mdssl_jax import cli
  from mdssl_jax.data.sources import tfds_common
  # pylint: enable=g-import-not-at-top
  cli.hide_gpus_from_tf()
  data_dir = tfds_cfg.data_dir
  try:
    ds, info = tfds.load(spec.tfds_name, split=split, data_dir=data_dir,
                         download=tfds_cfg.download, with_info=True,
                         shuffle_files=False)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise tfds_common.unknown_builder_error(task, spec.tfds_name, e) from e
  except AssertionError as e:
    raise prepare_error(task, spec.tfds_name, data_dir) from e
  except (ValueError, KeyError) as e:
    raise tfds_common.split_error(task, spec.tfds_name, split, e) from e
  tfds_common.check_features(info.features, [("image", "input image"),
                                             (spec.target_key, "target")],
                             task, spec.tfds_name)
  ds = ds.take(num).map(_prepare(spec, int(tfds_cfg.image_size)),
                        num_parallel_calls=tf.data.AUTOTUNE)
  images, targets = [], []
  for image, target in tfds.as_numpy(ds):
    images.append(image)
    targets.append(target)
  if not images:
    raise ValueError(f"TFDS task {task!r}: split {split!r} of "
                     f"{spec.tfds_name!r} is empty.")
  return (np.stack(images).astype(np.float32), np.stack(targets), info)


def load_task(name: str, tfds_cfg: ml_collections.ConfigDict
              ) -> tasks_lib.Task:
  """One TFDS-backed task (see the module docstring's table).

  Args:
    name: a key of SPECS.
    tfds_cfg: the battery's `config.tfds` (data_dir, download,
      image_size, num_train, num_test).

  Returns:
    The Task ([0, 1] RGB images; int32 labels or masks, float32 depth
    [n, S, S, 1]).

  Raises:
    ValueError: unknown task, bad split or missing feature.
    DatasetNotFoundError: the data are not prepared and download is off.
  """
  if name not in SPECS:
    raise ValueError(f"unknown TFDS task {name!r}; choose from "
                     f"{sorted(SPECS)}.")
  spec = SPECS[name]
  train_x, train_y, info = _split(spec, spec.train_split,
                                  int(tfds_cfg.num_train), tfds_cfg, name)
  test_x, test_y, _ = _split(spec, spec.test_split, int(tfds_cfg.num_test),
                             tfds_cfg, name)
  if spec.kind == "label":
    outputs = int(info.features[spec.target_key].num_classes)
  elif spec.kind == "mask":
    outputs = _PET_CLASSES
    train_y, test_y = (np.clip(y, 0, _PET_CLASSES - 1)
                       for y in (train_y, test_y))
  else:
    outputs = 1
  return tasks_lib.Task(name, spec.category, spec.head, spec.metric, outputs,
                        train_x, train_y, test_x, test_y)
