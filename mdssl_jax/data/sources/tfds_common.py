"""Pieces shared by the in-memory and the streaming TFDS loaders.

Builders and split sizes, clear errors for unprepared data and bad splits
or feature keys, and the tf.data lookups of a class subset.
``tensorflow_datasets`` is imported where it is used: importing the
training pipeline should not pay for it when no domain comes from TFDS.
"""

from __future__ import annotations

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
