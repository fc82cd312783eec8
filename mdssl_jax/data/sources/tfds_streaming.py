"""TFDS streaming: read and decode a dataset on the fly (ImageNet at 224 px).

Chosen by the "tfds" source when ``in_memory=False``, or when it is unset
and the splits would not fit in ``config.data.max_in_memory_gb``. A
streaming domain keeps only a :class:`StreamSpec` and ``num_train``; its
records are read with the image (and mask) left encoded
(``tfds.decode.SkipDecoding``) and decoded in the training pipeline, one
pass (epoch) at a time:

* prepared tfrecord datasets: the split's shards (TFDS file instructions)
  are permuted per epoch with a stateless seed and read 16 at a time
  (tf.data interleave, deterministic);
* otherwise (e.g. under ``tfds.testing.mock_data``, where no files exist,
  or a non-tfrecord file format): ``builder.as_dataset(shuffle_files=
  False)``, i.e. the same shard order every epoch (only the shuffle buffer
  mixes).

Precomputed saliency masks (``masks_path``, the sidecar that ``python -m
mdssl_jax.saliency`` writes) are read alongside: in the shuffled reader each
TFDS shard is zipped with its sidecar shard (same record order) and every
pair's tfds_id is checked, so a shifted or shuffled join fails loudly; the
fixed-order reader looks masks up by tfds_id. Such a domain's spec is a
:class:`SidecarStreamSpec` whose ``mask_key`` names the virtual feature
:data:`SIDECAR_MASK_KEY`.

Views are cropped from the full-resolution image (see
``mdssl_jax.data.pipeline``); ``pipeline.make_eval_arrays`` decodes only
capped evaluation subsets. A class subset of a streamed split costs one pass
over its labels at start-up to count the kept examples.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from absl import logging
import numpy as np
import tensorflow as tf

from mdssl_jax.data import class_subsets
from mdssl_jax.data import resize
from mdssl_jax.data.domain import DomainData
from mdssl_jax.data.domain import StreamSpec
from mdssl_jax.data.sources import tfds_common

_STREAM_CYCLE = 16  # Shards read concurrently per epoch.
# The record key of sidecar masks (PNG bytes), a virtual feature.
SIDECAR_MASK_KEY = "saliency_sidecar_mask"


@dataclasses.dataclass(frozen=True)
class SidecarStreamSpec(StreamSpec):
  """A StreamSpec whose masks come from a precomputed sidecar.

  Attributes:
    masks_path: the sidecar directory (see tfds_common); ``mask_key`` is
      :data:`SIDECAR_MASK_KEY`.
  """
  masks_path: str = ""


def _sidecar(spec: StreamSpec) -> str | None:
  return spec.masks_path if isinstance(spec, SidecarStreamSpec) else None


def _stream_decoders(builder: Any, spec: StreamSpec) -> dict[str, Any]:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  decoders = {spec.image_key: tfds.decode.SkipDecoding()}
  if spec.mask_key is not None and not _sidecar(spec) and isinstance(
      builder.info.features[spec.mask_key], tfds.features.Image):
    decoders[spec.mask_key] = tfds.decode.SkipDecoding()
  return decoders


def _select_fn(spec: StreamSpec, with_mask: bool = True):
  """Example dict -> {"image", "label" (int64, remapped), ["mask"]}."""
  lookup = (None if spec.class_ids is None
            else tfds_common.subset_lookup(
                np.asarray(spec.class_ids, np.int64)))

  def select(ex):
    label = tf.cast(ex[spec.label_key], tf.int64)
    if lookup is not None:
      label = tf.gather(lookup, label)
    out = {"image": ex[spec.image_key], "label": label}
    if spec.mask_key is not None and with_mask:
      out["mask"] = ex[spec.mask_key]
    return out

  def keep(ex):
    return tfds_common.in_subset(ex[spec.label_key], lookup)

  return select, (None if lookup is None else keep)


def _ordered_records(builder: Any, spec: StreamSpec, split: str, *,
                     domain: str) -> tf.data.Dataset:
  """builder.as_dataset(shuffle_files=False) with clear errors."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  options = tf.data.Options()
  options.deterministic = True
  try:
    return builder.as_dataset(
        split=split, shuffle_files=False,
        decoders=_stream_decoders(builder, spec),
        read_config=tfds.ReadConfig(options=options,
                                    add_tfds_id=bool(_sidecar(spec))))
  except AssertionError as e:
    raise tfds_common.prepare_error(domain, spec.tfds_name,
                                    spec.data_dir) from e
  except (ValueError, KeyError) as e:
    raise tfds_common.split_error(domain, spec.tfds_name, split, e) from e


def stream_records(spec: StreamSpec, split: str, *,
                   domain: str = "") -> tf.data.Dataset:
  """One pass over a split in TFDS's fixed order, images still encoded.

  This is the order ``tfds.load(..., shuffle_files=False)`` gives (the one
  the in-memory path and ``max_train``/``max_test`` caps use).

  Args:
    spec: the domain's StreamSpec.
    split: TFDS split string (spec.split or spec.eval_split).
    domain: display name for errors.

  Returns:
    tf.data.Dataset of dicts: "image" encoded bytes (tf.string), "label"
    int64 in [0, num_classes) after the class subset, and "mask" (encoded
    bytes, or the decoded tensor for non-image features) when
    spec.mask_key names a feature (sidecar masks join training epochs
    only, :func:`stream_epoch_fn`).
  """
  builder = tfds_common.builder(spec.tfds_name, spec.data_dir, domain)
  select, keep = _select_fn(spec, with_mask=not _sidecar(spec))
  ds = _ordered_records(builder, spec, split, domain=domain)
  if keep is not None:
    ds = ds.filter(keep)
  return ds.map(select, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)


def _file_instructions(builder: Any, split: str) -> list[Any] | None:
  """The split's tfrecord shards (None: mock data, other file formats)."""
  try:
    fmt = builder.info.file_format
    fmt = str(getattr(fmt, "value", fmt) or "tfrecord")
    if fmt == "tfrecord":
      return list(builder.info.splits[split].file_instructions)
  except Exception:  # pylint: disable=broad-except
    pass  # mock_data (no splits), other formats.
  return None


def _sidecar_files(spec: SidecarStreamSpec, instructions, *,
                   domain: str) -> list[str]:
  """The sidecar shard of each TFDS shard, checked against its info."""
  info = tfds_common.read_sidecar_info(
      spec.masks_path, tfds_name=spec.tfds_name, split=spec.split,
      num_examples=None)
  names = [os.path.basename(os.fspath(fi.filename)) for fi in instructions]
  unknown = [n for n in names if n not in info["shards"]]
  if unknown:
    raise ValueError(
        f"Domain {domain!r}: {spec.masks_path} was written for other TFDS "
        f"shards (no masks for {unknown[:2]}). "
        + tfds_common.sidecar_hint(spec.tfds_name, spec.split))
  return [tfds_common.sidecar_shard(spec.masks_path, n) for n in names]


def _shuffled_epoch_fn(builder: Any, spec: StreamSpec, instructions,
                       select, keep, *, domain: str):
  """epoch_fn reading the shards in a seed-dependent order."""
  features = builder.info.features
  decoders = _stream_decoders(builder, spec)
  masks_path = _sidecar(spec)
  columns = [[os.fspath(fi.filename) for fi in instructions]]
  if masks_path:
    columns.append(_sidecar_files(spec, instructions, domain=domain))
  columns = [tf.constant(c) for c in columns] + [
      tf.constant([fi.skip for fi in instructions], tf.int64),
      tf.constant([fi.take for fi in instructions], tf.int64)]
  num_files = len(instructions)

  def read_shard(path, *rest):
    skip, take = rest[-2:]
    records = tf.data.TFRecordDataset(path).skip(skip).take(take)
    if not masks_path:
      return records
    # The tfds_id each record must carry: "<shard file>__<index>".
    ids = tf.data.Dataset.range(skip, skip + take).map(
        lambda i: tf.strings.join([
            tf.strings.split(path, "/")[-1], "__", tf.strings.as_string(i)]))
    # A short sidecar shard yields empty records, which fail to parse,
    # instead of silently ending the zip early.
    masks = tf.data.TFRecordDataset(rest[0]).skip(skip).concatenate(
        tf.data.Dataset.from_tensors(tf.constant(b"")).repeat()).take(take)
    return tf.data.Dataset.zip((records, masks, ids))

  def parse(serialized, mask_record=None, tfds_id=None):
    ex = features.deserialize_example(serialized, decoders=decoders)
    out = {k: ex[k] for k in (spec.image_key, spec.label_key,
                              spec.mask_key)
           if k is not None and k != SIDECAR_MASK_KEY}
    if masks_path:
      rec = tfds_common.parse_sidecar_record(mask_record)
      with tf.control_dependencies([tf.debugging.assert_equal(
          rec["tfds_id"], tfds_id, message=f"Domain {domain!r}: "
          f"{masks_path} is out of step with the TFDS shards. "
          + tfds_common.sidecar_hint(spec.tfds_name, spec.split))]):
        out[SIDECAR_MASK_KEY] = tf.identity(rec["mask"])
    return out

  def shuffled_epoch(file_seed):
    order = tf.random.experimental.stateless_shuffle(
        tf.range(num_files, dtype=tf.int64), file_seed)
    files = tf.data.Dataset.from_tensor_slices(
        tuple(tf.gather(c, order) for c in columns))
    ds = files.interleave(read_shard, cycle_length=min(_STREAM_CYCLE,
                                                       num_files),
                          block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=True)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    if keep is not None:
      ds = ds.filter(keep)
    return ds.map(select)

  return shuffled_epoch


def shard_split(spec: StreamSpec, split: str) -> Any:
  """`split` (spec.split or spec.eval_split), or its input shard
  (``tfds.even_splits``) when the spec is one process's shard."""
  if spec.shard is None:
    return split
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  index, count = spec.shard
  return tfds.even_splits(split, n=count)[index]


def shard_num_train(spec: StreamSpec, domain: str = "") -> int:
  """Training examples in the spec's input shard (a pass over the shard
  when a class subset makes the dataset info's count useless).

  Raises:
    ValueError: the shard is empty.
  """
  split = shard_split(spec, spec.split)
  n = None
  if spec.class_ids is None:
    builder = tfds_common.builder(spec.tfds_name, spec.data_dir, domain)
    n = tfds_common.split_num_examples(builder, split)
  if n is None:
    n = count_stream_examples(spec, split, domain=domain)
  if n == 0:
    raise ValueError(f"Domain {domain!r}: input shard {spec.shard} of "
                     f"{spec.split!r} has no examples; lower "
                     "data.input_shards.")
  return int(n)


def stream_epoch_fn(spec: StreamSpec, *, domain: str = ""):
  """A function giving one training pass (epoch) for a per-epoch seed.

  Builds the TFDS reading pieces once; the returned function only assembles
  tf.data ops, so it can run inside ``Dataset.flat_map`` over epoch numbers.

  Args:
    spec: the domain's StreamSpec (reads ``spec.split``, or its input
      shard ``spec.shard``).
    domain: display name for errors.

  Returns:
    (epoch_fn, shuffles_files): epoch_fn(file_seed) maps a [2] int64 seed to
    a finite tf.data.Dataset with the records of :func:`stream_records`
    (class subset applied), shards in a seed-dependent order when
    shuffles_files is True (prepared tfrecord data), else in the fixed order.
  """
  builder = tfds_common.builder(spec.tfds_name, spec.data_dir, domain)
  select, keep = _select_fn(spec)
  split = shard_split(spec, spec.split)
  ordered = _ordered_records(builder, spec, split, domain=domain)
  instructions = _file_instructions(builder, split)
  if instructions:
    return _shuffled_epoch_fn(builder, spec, instructions, select, keep,
                              domain=domain), True
  masks_path = _sidecar(spec)
  if masks_path:
    by_id = tfds_common.sidecar_lookup(
        masks_path, tfds_common.read_sidecar_info(
            masks_path, tfds_name=spec.tfds_name, split=spec.split,
            num_examples=None),
        tfds_common.sidecar_hint(spec.tfds_name, spec.split))
    ordered = ordered.map(
        lambda ex: {**ex, SIDECAR_MASK_KEY: by_id(ex["tfds_id"])})
  logging.warning(
      "Domain %r: streaming %s[%s] without shard shuffling (no tfrecord "
      "file list); each epoch reads the shards in the same order and only "
      "the shuffle buffer mixes examples.", domain, spec.tfds_name,
      spec.split)

  def fixed_epoch(file_seed):
    del file_seed
    ds = ordered.filter(keep) if keep is not None else ordered
    return ds.map(select)

  return fixed_epoch, False


def count_stream_examples(spec: StreamSpec, split: str, *,
                          domain: str = "") -> int:
  """Counts a split's examples after the class subset (one pass, no decoding).

  Reads every record of the split once (I/O bound: minutes for ImageNet);
  only needed when the dataset info has no count (mock data) or a class
  subset keeps an unknown share.
  """
  start = time.time()
  ds = stream_records(spec, split, domain=domain)
  count = int(ds.map(lambda ex: tf.constant(1, tf.int64)).reduce(
      tf.constant(0, tf.int64), lambda a, b: a + b).numpy())
  logging.info("Domain %r: counted %d examples in %s[%s] (%.1f s).", domain,
               count, spec.tfds_name, split, time.time() - start)
  return count


def decode_stream_image(encoded: tf.Tensor, *, image_size: int,
                        mode: str) -> tf.Tensor:
  """Encoded image bytes (JPEG, PNG, ...) -> [h, w, 3] uint8.

  In "pad" mode an image no larger than image_size is zero-padded centrally
  to image_size × image_size, as the in-memory path does (28 -> 32 for
  MNIST-like sets); otherwise the image keeps its size (views are cropped
  from the full-resolution image).

  Args:
    encoded: scalar tf.string.
    image_size: config.data.image_size.
    mode: "pad" or "resize".

  Returns:
    [h, w, 3] uint8.
  """
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  return resize.pad_small_tf(image, image_size, mode)


def decode_stream_mask(value: tf.Tensor, *, image_size: int,
                       mode: str) -> tf.Tensor:
  """A streamed mask (encoded image or tensor) -> [h, w] float32 in [0, 1].

  Padded like :func:`decode_stream_image`, so it stays aligned with it.
  """
  if value.dtype == tf.string:
    value = tf.io.decode_image(value, channels=1, expand_animations=False)
  mask = resize.mask_to_unit_tf(value)[..., None]
  return resize.pad_small_tf(mask, image_size, mode)[..., 0]


def _spec(domain: dict[str, Any], builder: Any,
          data_cfg: Any) -> tuple[StreamSpec, int | None]:
  """The domain's StreamSpec (num_train 1 for now) and num_classes.

  With masks_path it is a SidecarStreamSpec, its sidecar checked here.
  """
  name, tfds_name = domain["name"], domain["tfds_name"]
  features = builder.info.features
  tfds_common.check_features(
      features, ((domain["image_key"], "image_key"),
                 (domain["label_key"], "label_key"),
                 (domain["mask_key"], "mask_key")), name, tfds_name)
  names, num_classes = tfds_common.label_info(features, domain["label_key"])
  class_ids = None
  if domain["class_subset"] is not None:
    class_ids = tuple(int(i) for i in class_subsets.resolve_class_subset(
        class_subsets.read_class_subset(domain["class_subset"]), names=names,
        num_classes=num_classes, what=f"Domain {name!r}"))
    num_classes = len(class_ids)
  fields = dict(
      tfds_name=tfds_name, split=domain["split"],
      eval_split=domain["eval_split"], data_dir=data_cfg["data_dir"],
      image_key=domain["image_key"], label_key=domain["label_key"],
      mask_key=domain["mask_key"], class_ids=class_ids, num_train=1,
      image_size=int(data_cfg["image_size"]), resize=domain["resize"])
  masks_path = domain["masks_path"]
  if not masks_path:
    return StreamSpec(**fields), num_classes
  masks_path = tfds_common.expand_path(masks_path)
  # Start-up check of the sidecar against the whole split's size.
  tfds_common.read_sidecar_info(
      masks_path, tfds_name=tfds_name, split=domain["split"],
      num_examples=tfds_common.split_num_examples(
          builder, tfds_common.base_split(domain["split"])))
  fields["mask_key"] = SIDECAR_MASK_KEY
  return SidecarStreamSpec(**fields, masks_path=masks_path), num_classes


def load(domain: dict[str, Any], data_cfg: Any) -> DomainData:
  """A streaming DomainData: opens both splits (fails early), counts train.

  Args:
    domain: the resolved domain entry (``resize`` set).
    data_cfg: ``config.data`` (``image_size``, ``data_dir``, ``download``).

  Returns:
    DomainData with ``stream`` set and no arrays.
  """
  name, tfds_name = domain["name"], domain["tfds_name"]
  if domain["max_train"] is not None:
    raise ValueError(
        f"Domain {name!r}: max_train is not supported for a streaming TFDS "
        "domain; take a split slice instead (e.g. split='train[:50000]'), or "
        "set in_memory=True if the capped set fits in memory.")
  builder = tfds_common.builder(tfds_name, data_cfg["data_dir"], name)
  if data_cfg["download"]:
    builder.download_and_prepare()
  spec, num_classes = _spec(domain, builder, data_cfg)
  # Opening both splits raises the not-prepared / bad-split errors now.
  _ordered_records(builder, spec, spec.split, domain=name)
  _ordered_records(builder, spec, spec.eval_split, domain=name)
  num_train = None if spec.class_ids is not None else (
      tfds_common.split_num_examples(builder, spec.split))
  if num_train is None:
    num_train = count_stream_examples(spec, spec.split, domain=name)
  if num_train == 0:
    raise ValueError(f"Domain {name!r}: split {spec.split!r} of TFDS "
                     f"{tfds_name!r} has no examples"
                     + (" of the class_subset." if spec.class_ids else "."))
  if num_classes is None:
    raise ValueError(f"Domain {name!r}: the label feature "
                     f"{domain['label_key']!r} of TFDS {tfds_name!r} is not "
                     "a ClassLabel; streaming needs the number of classes "
                     "from the dataset info.")
  spec = dataclasses.replace(spec, num_train=int(num_train))
  logging.info("Domain %r: streaming %s[%s] (%d examples, %d classes) from "
               "TFDS, decoding on the fly.", name, tfds_name, spec.split,
               spec.num_train, num_classes)
  return DomainData(name=name, train_images=None, train_labels=None,
                    test_images=None, test_labels=None,
                    num_classes=int(num_classes), stream=spec)
