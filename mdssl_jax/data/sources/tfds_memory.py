"""TFDS in memory: decode, resize and keep a dataset's splits as arrays.

Chosen by the "tfds" source when ``in_memory=True``, or when it is unset
and :func:`fits_in_memory` says so. Splits are read in TFDS's fixed file
order (``shuffle_files=False``), decoded and resized per example in tf.data
(``resize.fit_image_tf``) and cached as uint8 (CIFAR-size sets at 32 px take
tens of MB). ``max_train`` / ``max_test`` keep the first examples (after the
class subset); a set that exceeds ``config.data.max_in_memory_gb`` while
loading raises a ValueError.
"""

from __future__ import annotations

from typing import Any, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from mdssl_jax.data import class_subsets
from mdssl_jax.data import resize
from mdssl_jax.data.domain import check_memory
from mdssl_jax.data.domain import DomainData
from mdssl_jax.data.sources import tfds_common

_CHUNK = 1024  # Examples per batch while reading into memory.


def fits_in_memory(domain: dict[str, Any], data_cfg: Any) -> bool:
  """in_memory=None: stream when the split sizes say it will not fit.

  Uses the dataset info's split sizes (capped by max_train/max_test; a
  class subset is ignored, so the estimate is an upper bound). Unknown sizes
  (unprepared data, mock_data) mean in memory, whose loader then enforces
  max_in_memory_gb while reading.
  """
  name = domain["name"]
  size = int(data_cfg["image_size"])
  max_gb = float(data_cfg["max_in_memory_gb"])
  builder = tfds_common.builder(domain["tfds_name"], data_cfg["data_dir"],
                                name)
  total = 0
  for split_key, cap_key in (("split", "max_train"),
                             ("eval_split", "max_test")):
    n = tfds_common.split_num_examples(builder, domain[split_key])
    if n is None:
      if split_key == "split":
        return True
      continue
    cap = domain[cap_key]
    total += min(n, cap) if cap is not None else n
  need = total * size * size * 3
  if need <= max_gb * 2 ** 30:
    return True
  logging.info("Domain %r: %d images at %dx%d need %.1f GiB > "
               "config.data.max_in_memory_gb=%g: streaming from TFDS.", name,
               total, size, size, need / 2 ** 30, max_gb)
  return False


def _open_split(tfds_name: str, split: str, *, domain: str,
                data_dir: str | None, download: bool, with_ids: bool):
  """tfds.load(..., with_info=True) in the fixed order, with clear errors.

  with_ids adds each example's "tfds_id" (the key of mask sidecars).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    return tfds.load(tfds_name, split=split, data_dir=data_dir,
                     download=download, with_info=True, shuffle_files=False,
                     read_config=tfds.ReadConfig(add_tfds_id=with_ids))
  except tfds.core.registered.DatasetNotFoundError as e:
    raise tfds_common.unknown_builder_error(domain, tfds_name, e) from e
  except AssertionError as e:
    raise tfds_common.prepare_error(domain, tfds_name, data_dir) from e
  except (ValueError, KeyError) as e:
    raise tfds_common.split_error(domain, tfds_name, split, e) from e


def _known_count(info: Any, split: str) -> int | None:
  try:
    return info.splits[split].num_examples  # Empty under mock_data.
  except (KeyError, ValueError, TypeError):
    return None


def _prepare_fn(*, image_key: str, label_key: str, mask_key: str | None,
                lookup: tf.Tensor | None, size: int, mode: str,
                sidecar=None):
  """Example dict -> (image [S, S, 3] uint8, label int32[, mask]).

  sidecar: (masks_path, lookup by tfds_id) of precomputed masks, or None.
  """

  def prepare(ex):
    label = tf.cast(ex[label_key], tf.int64)
    if lookup is not None:
      label = tf.gather(lookup, label)
    out = (resize.fit_image_tf(ex[image_key], size, mode),
           tf.cast(label, tf.int32))
    if mask_key is not None:
      out += (resize.fit_mask_tf(ex[mask_key], size, mode),)
    if sidecar is not None:
      masks_path, by_id = sidecar
      mask = tfds_common.decode_sidecar_mask(by_id(ex["tfds_id"]),
                                             ex[image_key], masks_path)
      out += (resize.fit_mask_tf(mask, size, mode),)
    return out

  return prepare


def _collect(ds: tf.data.Dataset, *, domain: str, size: int, max_gb: float,
             mask_bytes: int, has_masks: bool):
  """Reads batches into lists, checking the memory budget as they come."""
  images, labels, masks, count = [], [], [], 0
  for batch in ds.as_numpy_iterator():
    count += len(batch[0])
    check_memory(domain, count, size, max_gb, mask_bytes)
    images.append(batch[0])
    labels.append(batch[1])
    if has_masks:
      masks.append(batch[2])
  return images, labels, masks


def _read_split(tfds_name: str, split: str, *, domain: str, size: int,
                mode: str, data_dir: str | None, download: bool,
                max_count: int | None, max_gb: float, image_key: str,
                label_key: str,
                class_subset: Sequence[str | int] | None = None,
                mask_key: str | None = None, masks_path: str | None = None):
  """Loads one TFDS split into memory.

  Masks come from the feature mask_key, or from the sidecar masks_path
  (joined by tfds_id; see tfds_common).

  Returns:
    ([n,S,S,3] uint8 images, [n] int32 labels, num_classes, [n,S,S] float32
    masks or None). With a class subset, only its classes are kept (then
    the first max_count of those) and labels are remapped to 0..k-1.
  """
  ds, info = _open_split(tfds_name, split, domain=domain, data_dir=data_dir,
                         download=download, with_ids=masks_path is not None)
  features = info.features
  tfds_common.check_features(features, ((image_key, "image_key"),
                                        (label_key, "label_key"),
                                        (mask_key, "mask_key")),
                             domain, tfds_name)
  names, num_classes = tfds_common.label_info(features, label_key)
  lookup = None
  if class_subset is not None:
    class_ids = class_subsets.resolve_class_subset(
        class_subset, names=names, num_classes=num_classes,
        what=f"Domain {domain!r}")
    lookup = tfds_common.subset_lookup(class_ids)
    num_classes = len(class_ids)
  sidecar = None
  if masks_path is not None:
    hint = tfds_common.sidecar_hint(tfds_name, split)
    side_info = tfds_common.read_sidecar_info(
        masks_path, tfds_name=tfds_name, split=split,
        num_examples=_known_count(info, tfds_common.base_split(split)))
    sidecar = (masks_path,
               tfds_common.sidecar_lookup(masks_path, side_info, hint))
  has_masks = mask_key is not None or sidecar is not None
  known = _known_count(info, split)
  mask_bytes = 4 * size * size if has_masks else 0
  if known and lookup is None:  # A class subset keeps an unknown share.
    check_memory(domain, min(known, max_count or known), size, max_gb,
                 mask_bytes)
  if lookup is not None:
    ds = ds.filter(lambda ex: tfds_common.in_subset(ex[label_key], lookup))
  if max_count is not None:
    ds = ds.take(max_count)
  ds = ds.map(_prepare_fn(image_key=image_key, label_key=label_key,
                          mask_key=mask_key, lookup=lookup, size=size,
                          mode=mode, sidecar=sidecar),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  try:
    images, labels, masks = _collect(
        ds.batch(_CHUNK).prefetch(2), domain=domain, size=size,
        max_gb=max_gb, mask_bytes=mask_bytes, has_masks=has_masks)
  except tf.errors.InvalidArgumentError as e:
    if sidecar is None:
      raise
    raise ValueError(f"Domain {domain!r}: {e.message.splitlines()[0]}. "
                     f"{hint}") from e
  if not images:
    raise ValueError(f"Domain {domain!r}: split {split!r} of TFDS "
                     f"{tfds_name!r} is empty"
                     + (" for this class_subset." if lookup is not None
                        else "."))
  labels = np.concatenate(labels)
  if num_classes is None:
    num_classes = int(labels.max(initial=0)) + 1
  return (np.concatenate(images), labels, int(num_classes),
          np.concatenate(masks) if masks else None)


def load(domain: dict[str, Any], data_cfg: Any) -> DomainData:
  """Both splits of a TFDS domain as arrays, with train masks if set.

  Args:
    domain: the resolved domain entry (``resize`` set).
    data_cfg: ``config.data`` (``image_size``, ``data_dir``, ``download``,
      ``max_in_memory_gb``).

  Returns:
    An in-memory DomainData.
  """
  subset = domain["class_subset"]
  kwargs = dict(domain=domain["name"], size=int(data_cfg["image_size"]),
                mode=domain["resize"], data_dir=data_cfg["data_dir"],
                download=bool(data_cfg["download"]),
                max_gb=float(data_cfg["max_in_memory_gb"]),
                image_key=domain["image_key"], label_key=domain["label_key"],
                class_subset=None if subset is None
                else class_subsets.read_class_subset(subset))
  tfds_name = domain["tfds_name"]
  masks_path = domain["masks_path"]
  train_images, train_labels, num_classes, train_masks = _read_split(
      tfds_name, domain["split"], max_count=domain["max_train"],
      mask_key=domain["mask_key"],
      masks_path=masks_path and tfds_common.expand_path(masks_path), **kwargs)
  test_images, test_labels, _, _ = _read_split(
      tfds_name, domain["eval_split"], max_count=domain["max_test"],
      **kwargs)
  return DomainData(name=domain["name"], train_images=train_images,
                    train_labels=train_labels, test_images=test_images,
                    test_labels=test_labels, num_classes=num_classes,
                    train_masks=train_masks)
