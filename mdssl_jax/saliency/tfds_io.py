"""TFDS input and the sidecar output of the precompute tool.

A split is read in TFDS's fixed order (``shuffle_files=False``) with each
example's tfds_id. The network is refined on examples drawn from the first
``POOL_FACTOR × refine.train_examples`` of that order (TFDS shuffles
examples when it prepares a dataset, so they are a fair sample, and the
tool need not read all of ImageNet to pick 2,500 images). The masks are
written as the sidecar that ``data/sources/tfds_common.py`` describes and
the TFDS loaders join by tfds_id: one TFRecord file per TFDS shard, then
``masks_info.json`` last (so a partial sidecar is never mistaken for a
complete one).
"""

from __future__ import annotations

import json
import os
from typing import Iterator

import ml_collections
import numpy as np
import tensorflow as tf

from mdssl_jax import atomic_file
from mdssl_jax.data.sources import tfds_common

POOL_FACTOR = 10
SIDECAR_DIR = "tfds_masks"


class TfdsSource:
  """One TFDS split, read in the fixed order (images decoded on demand)."""

  def __init__(self, data: ml_collections.ConfigDict):
    # pylint: disable-next=g-import-not-at-top
    import tensorflow_datasets as tfds
    self.tfds_name, self.split = data.tfds_name, data.split
    self.where = f"TFDS {data.tfds_name}[{data.split}]"
    self.masks = None
    self._image_key = data.image_key
    builder = tfds_common.builder(data.tfds_name, data.data_dir,
                                  "saliency")
    try:
      self._ds = builder.as_dataset(
          split=data.split, shuffle_files=False,
          decoders={data.image_key: tfds.decode.SkipDecoding()},
          read_config=tfds.ReadConfig(add_tfds_id=True))
    except AssertionError as e:
      raise tfds_common.prepare_error("saliency", data.tfds_name,
                                      data.data_dir) from e
    self.num = tfds_common.split_num_examples(builder, data.split)
    if self.num is None:  # Mock data: count.
      self.num = int(self._ds.reduce(0, lambda n, _: n + 1).numpy())

  def pool_size(self, n: int) -> int:
    return min(self.num, POOL_FACTOR * n)

  def _records(self, start: int) -> Iterator[tuple[bytes, bytes]]:
    ds = self._ds.skip(start).map(
        lambda ex: (ex["tfds_id"], ex[self._image_key]))
    return ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()

  @staticmethod
  def _decode(encoded: bytes) -> np.ndarray:
    return tf.io.decode_image(encoded, channels=3,
                              expand_animations=False).numpy()

  def take(self, indices: np.ndarray) -> list[np.ndarray]:
    """Decoded images at sorted example indices (one pass up to the last)."""
    wanted, out = set(int(i) for i in indices), []
    for i, (_, encoded) in enumerate(self._records(0)):
      if i in wanted:
        out.append(self._decode(encoded))
      if i >= indices[-1]:
        break
    return out

  def chunks(self, size: int, start: int
             ) -> Iterator[tuple[int, list[np.ndarray]]]:
    """(first index, decoded images) of consecutive chunks from start."""
    batch = []
    for _, encoded in self._records(start):
      batch.append(self._decode(encoded))
      if len(batch) == size:
        yield start, batch
        start, batch = start + size, []
    if batch:
      yield start, batch

  def ids(self) -> Iterator[str]:
    for tfds_id, _ in self._records(0):
      yield tfds_id.decode()


def _record(tfds_id: str, mask: np.ndarray) -> bytes:
  png = tf.io.encode_png(mask[..., None]).numpy()
  return tf.train.Example(features=tf.train.Features(feature={
      "tfds_id": tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[tfds_id.encode()])),
      "mask": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
  })).SerializeToString()


def write_sidecar(source: TfdsSource, masks: Iterator[np.ndarray],
                  workdir: str) -> str:
  """Writes ``<workdir>/tfds_masks``: per-shard records, then the info.

  Args:
    source: the split the masks belong to.
    masks: [h, w] uint8 masks in the split's fixed order.
    workdir: the tool's workdir.

  Returns:
    The sidecar directory (the domain's ``masks_path``).
  """
  out = os.path.join(workdir, SIDECAR_DIR)
  os.makedirs(out, exist_ok=True)
  shards: dict[str, int] = {}
  writer, shard = None, None
  count = 0
  try:
    for tfds_id, mask in zip(source.ids(), masks, strict=True):
      prefix, index = tfds_id.rsplit("__", 1)
      if prefix != shard:
        if writer is not None:
          writer.close()
        if prefix in shards:
          raise RuntimeError(f"{source.where}: shard {prefix} is not "
                             "contiguous in the fixed order.")
        shard, shards[prefix] = prefix, 0
        writer = tf.io.TFRecordWriter(
            tfds_common.sidecar_shard(out, prefix) + ".tmp")
      if int(index) != shards[prefix]:
        raise RuntimeError(f"{source.where}: {tfds_id} out of order.")
      writer.write(_record(tfds_id, mask))
      shards[prefix] += 1
      count += 1
  finally:
    if writer is not None:
      writer.close()
  for prefix in shards:
    path = tfds_common.sidecar_shard(out, prefix)
    os.replace(path + ".tmp", path)
  info = {"format": tfds_common.SIDECAR_FORMAT, "tfds_name": source.tfds_name,
          "split": tfds_common.base_split(source.split),
          "num_examples": count, "shards": shards}
  with atomic_file.atomic_open(os.path.join(out, tfds_common.SIDECAR_INFO)
                               ) as f:
    json.dump(info, f, indent=1)
  return out
