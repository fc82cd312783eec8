"""Pieces shared by the in-memory and the streaming TFDS loaders.

Builders and split sizes, clear errors for unprepared data and bad splits
or feature keys, the tf.data lookups of a class subset, and the reader of
precomputed saliency-mask sidecars (``masks_path``).
``tensorflow_datasets`` is imported where it is used: importing the
training pipeline should not pay for it when no domain comes from TFDS.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from mdssl_jax.data.domain import DatasetNotFoundError


def _needs_manual_download(tfds_name: str) -> bool:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    cls = tfds.builder_cls(tfds_name.split("/")[0].split(":")[0])
  except Exception:  # pylint: disable=broad-except
    return False
  return bool(getattr(cls, "MANUAL_DOWNLOAD_INSTRUCTIONS", None))


def prepare_error(domain: str, tfds_name: str,
                  data_dir: str | None) -> DatasetNotFoundError:
  """The error for a dataset that is not prepared (with the commands).

  Datasets whose files cannot be downloaded by TFDS (e.g. imagenet2012)
  get the manual-download steps instead of a `download=True` hint.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  where = data_dir or tfds.core.constants.DATA_DIR
  head = (f"Domain {domain!r}: TFDS dataset {tfds_name!r} is not prepared "
          f"in data_dir={where!r}.")
  if _needs_manual_download(tfds_name):
    return DatasetNotFoundError(
        f"{head} It is a manual download: get its archives from the "
        "dataset's own site (for imagenet2012: ILSVRC2012_img_train.tar "
        "and ILSVRC2012_img_val.tar), put them in\n"
        f"  {where}/downloads/manual/\n"
        f"and prepare it once with\n"
        f"  tfds build {tfds_name} --data_dir={where}")
  return DatasetNotFoundError(
      f"{head} Download is off. Prepare it once with\n"
      f"  tfds build {tfds_name} --data_dir={where}\n"
      f"or\n  python -c \"import tensorflow_datasets as tfds; "
      f"tfds.builder('{tfds_name}', data_dir='{where}')"
      f".download_and_prepare()\"\n"
      "or rerun with --config.data.download=True (needs network access).")


def split_error(domain: str, tfds_name: str, split: str,
                e: Exception) -> ValueError:
  """The error for a split TFDS cannot read (e.g. no "test" split)."""
  return ValueError(
      f"Domain {domain!r}: cannot load split {split!r} of TFDS "
      f"{tfds_name!r}: {e}. For datasets with only a train split (e.g. "
      "eurosat) use split='train[:80%]', eval_split='train[80%:]'.")


def unknown_builder_error(domain: str, tfds_name: str,
                          e: Exception) -> ValueError:
  return ValueError(f"Domain {domain!r}: tfds_name={tfds_name!r} is not a "
                    f"TFDS builder ({e}); see tfds.list_builders().")


def check_features(features: Any, keys: Sequence[tuple[str | None, str]],
                   domain: str, tfds_name: str) -> None:
  """Raises if a (key, what) pair names a feature the dataset lacks."""
  for key, what in keys:
    if key is not None and key not in features:
      raise ValueError(f"Domain {domain!r}: TFDS {tfds_name!r} has no feature "
                       f"{key!r} ({what}); available: {sorted(features)}.")


def label_info(features: Any, label_key: str):
  """(class names or None, num_classes or None) of a label feature."""
  feature = features[label_key]
  num_classes = getattr(feature, "num_classes", None)
  names = getattr(feature, "names", None) if num_classes else None
  return names, num_classes


def builder(tfds_name: str, data_dir: str | None, domain: str):
  """tfds.builder with a clear error for an unknown name."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    return tfds.builder(tfds_name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise unknown_builder_error(domain, tfds_name, e) from e


def split_num_examples(tfds_builder: Any, split: str) -> int | None:
  """Examples in a split from the dataset info (None if unknown)."""
  try:
    n = tfds_builder.info.splits[split].num_examples
  except Exception:  # pylint: disable=broad-except
    return None  # Unprepared, mock_data (no splits) or a bad split string.
  return int(n) if n else None


def subset_lookup(class_ids: np.ndarray) -> tf.Tensor:
  """[max_id + 1] int64: new label of each original id, -1 if dropped."""
  lookup = np.full(int(class_ids.max()) + 1, -1, np.int64)
  lookup[class_ids] = np.arange(len(class_ids))
  return tf.constant(lookup)


def in_subset(label: tf.Tensor, lookup: tf.Tensor) -> tf.Tensor:
  """Whether an original label is kept by the :func:`subset_lookup`."""
  label = tf.cast(label, tf.int64)
  size = tf.shape(lookup, out_type=tf.int64)[0]
  inside = tf.logical_and(label >= 0, label < size)
  return tf.logical_and(
      inside, tf.gather(lookup, tf.clip_by_value(label, 0, size - 1)) >= 0)


# ---- Precomputed saliency masks: the sidecar of a TFDS split -----------------
#
# `python -m mdssl_jax.saliency` writes, for a TFDS split, a directory with
# SIDECAR_INFO (JSON: format, tfds_name, split, num_examples, and each TFDS
# shard's record count) and one TFRecord file `<shard file name>.masks` per
# TFDS shard holding that shard's masks in its own order, each a
# tf.train.Example {"tfds_id": the example's tfds_id, "mask": PNG [h, w, 1]
# uint8 at the image's size}. A domain's `masks_path` names the directory;
# masks are joined to images by tfds_id, never by position alone.

SIDECAR_INFO = "masks_info.json"
SIDECAR_FORMAT = "mdssl_jax.saliency.tfds_masks/1"
SIDECAR_SUFFIX = ".masks"
# Defaults: an empty record parses, then fails the tfds_id check by name.
SIDECAR_FEATURES = {
    "tfds_id": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "mask": tf.io.FixedLenFeature([], tf.string, default_value=""),
}


def expand_path(path: str) -> str:
  """``~`` and environment variables expanded."""
  return os.path.expanduser(os.path.expandvars(path))


def base_split(split: str) -> str:
  """"train[:50%]" -> "train" (masks cover the whole split)."""
  return split.split("[")[0].strip()


def sidecar_hint(tfds_name: str, split: str) -> str:
  """How to (re)make the sidecar; every sidecar error names it."""
  return (f"Recompute it with `python -m mdssl_jax.saliency "
          f"--config=configs/saliency/default.py:tfds_name={tfds_name} "
          f"--config.data.split={base_split(split)} --workdir=DIR` and set "
          "masks_path=DIR/tfds_masks.")


def sidecar_shard(masks_path: str, tfds_id_prefix: str) -> str:
  """The sidecar file of one TFDS shard (tfds_id without "__<index>")."""
  return os.path.join(masks_path, tfds_id_prefix + SIDECAR_SUFFIX)


def read_sidecar_info(masks_path: str, *, tfds_name: str, split: str,
                      num_examples: int | None) -> dict[str, Any]:
  """The sidecar's info, checked against the domain (start-up errors).

  Args:
    masks_path: the sidecar directory.
    tfds_name: the domain's TFDS name.
    split: the domain's (possibly sliced) training split.
    num_examples: examples in the whole split per the dataset info, or None
      when unknown (mock data).

  Returns:
    The parsed info dict.

  Raises:
    ValueError: a missing, corrupt, foreign or wrongly sized sidecar.
  """
  hint = sidecar_hint(tfds_name, split)
  path = os.path.join(masks_path, SIDECAR_INFO)
  try:
    with open(path) as f:
      info = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f"masks_path: cannot read {path} ({type(e).__name__}: "
                     f"{e}); it is not a mask sidecar of this tool. "
                     f"{hint}") from e
  expected = {"format": SIDECAR_FORMAT, "tfds_name": tfds_name,
              "split": base_split(split)}
  if not isinstance(info, dict) or any(info.get(k) != v
                                       for k, v in expected.items()):
    got = ({k: info.get(k) for k in expected} if isinstance(info, dict)
           else info)
    raise ValueError(f"{path}: a sidecar for {got}, not {expected}. {hint}")
  shards = info.get("shards") or {}
  total = sum(int(n) for n in shards.values())
  if total != info.get("num_examples") or (
      num_examples is not None and total != num_examples):
    raise ValueError(
        f"{path}: holds {total} masks (info says "
        f"{info.get('num_examples')}) but split {expected['split']!r} of "
        f"{tfds_name!r} has {num_examples} examples. {hint}")
  missing = [name for name in shards
             if not os.path.isfile(sidecar_shard(masks_path, name))]
  if missing:
    raise ValueError(f"{masks_path}: shard files missing: "
                     f"{[m + SIDECAR_SUFFIX for m in missing[:3]]}. {hint}")
  return info


def parse_sidecar_record(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
  """One sidecar record -> {"tfds_id", "mask" (PNG bytes)}."""
  return tf.io.parse_single_example(serialized, SIDECAR_FEATURES)


def sidecar_lookup(masks_path: str, info: dict[str, Any], hint: str):
  """All masks of a sidecar in memory, looked up by tfds_id.

  For in-memory domains and the fixed-order streaming fallback (small
  data): the PNG bytes are held as one string tensor.

  Returns:
    lookup(tfds_id) -> PNG bytes; a tfds_id without a mask fails the
    tf.data iteration with a message naming the sidecar and the hint.

  Raises:
    ValueError: an unreadable (corrupt) or incomplete shard file.
  """
  ids, pngs = [], []
  for name, count in info["shards"].items():
    path = sidecar_shard(masks_path, name)
    try:
      records = list(tf.data.TFRecordDataset(path).map(
          parse_sidecar_record).as_numpy_iterator())
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
      raise ValueError(f"{path}: corrupt mask records ({e.message}). "
                       f"{hint}") from e
    if len(records) != int(count):
      raise ValueError(f"{path}: {len(records)} masks, the info says "
                       f"{count}. {hint}")
    ids += [r["tfds_id"] for r in records]
    pngs += [r["mask"] for r in records]
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(
          tf.constant(ids, tf.string),
          tf.range(len(ids), dtype=tf.int64)), default_value=-1)
  pngs = tf.constant(pngs, tf.string)

  def lookup(tfds_id: tf.Tensor) -> tf.Tensor:
    row = table.lookup(tfds_id)
    with tf.control_dependencies([tf.debugging.Assert(
        row >= 0, [f"{masks_path} has no mask for tfds_id", tfds_id])]):
      return tf.gather(pngs, tf.maximum(row, 0))

  return lookup


def decode_sidecar_mask(png: tf.Tensor, image: tf.Tensor,
                        masks_path: str) -> tf.Tensor:
  """PNG bytes -> [h, w] uint8, checked to match the image's [h, w]."""
  mask = tf.io.decode_png(png, channels=1)[..., 0]
  with tf.control_dependencies([tf.debugging.assert_equal(
      tf.shape(mask), tf.shape(image)[:2],
      message=f"{masks_path}: a mask's size differs from its image")]):
    return tf.identity(mask)
