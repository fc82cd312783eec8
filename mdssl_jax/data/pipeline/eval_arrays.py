"""Evaluation arrays: eval-transformed images per domain (kNN, probes)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from mdssl_jax import cli
from mdssl_jax.data import augment
from mdssl_jax.data import class_subsets
from mdssl_jax.data.domain import DomainData
from mdssl_jax.data.pipeline import views
from mdssl_jax.data.sources import tfds_streaming


def _eval_images(images: np.ndarray, size: int, mean, std,
                 chunk: int = 2048) -> np.ndarray:
  out = [augment.eval_transform(images[i:i + chunk], out_size=size,
                                mean=mean, std=std).numpy()
         for i in range(0, len(images), chunk)]
  if not out:
    return np.zeros((0, size, size, 3), np.float32)
  return np.concatenate(out)


def _stream_eval_split(dom: DomainData, split: str, max_count: int | None,
                       *, size: int, mean, std, max_gb: float,
                       what: str) -> tuple[np.ndarray, np.ndarray]:
  """The first max_count examples of a streamed split, eval-transformed."""
  spec = dom.stream
  ds = tfds_streaming.stream_records(
      spec, tfds_streaming.shard_split(spec, split), domain=dom.name)
  if max_count is not None:
    ds = ds.take(max_count)

  def prepare(rec):
    image = tfds_streaming.decode_stream_image(
        rec["image"], image_size=spec.image_size, mode=spec.resize)
    return (augment.eval_transform(image, out_size=size, mean=mean, std=std),
            tf.cast(rec["label"], tf.int32))

  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True).batch(256).prefetch(2)
  images, labels, count = [], [], 0
  limit = max_gb * 2 ** 30
  for image_batch, label_batch in ds.as_numpy_iterator():
    count += len(image_batch)
    if count * image_batch[0].nbytes > limit:
      raise ValueError(
          f"Domain {dom.name!r}: evaluation {what} images of the streamed "
          f"split {split!r} exceed config.data.max_in_memory_gb={max_gb} as "
          f"float32 at {size}x{size}; cap them with "
          f"config.eval.max_{what}_per_domain.")
    images.append(image_batch)
    labels.append(label_batch)
  if not images:
    return (np.zeros((0, size, size, 3), np.float32),
            np.zeros((0,), np.int32))
  return np.concatenate(images), np.concatenate(labels)


def _memory_arrays(d: DomainData, max_train: int | None,
                   max_test: int | None, *, size: int, mean, std,
                   seed: int, full_split: bool) -> dict[str, Any]:
  images, labels = d.train_images, d.train_labels
  if full_split and d.eval_train_images is not None:
    images, labels = d.eval_train_images, d.eval_train_labels
  # Unlabelled rows (label -1: the added sets of a "mix") train only.
  labelled = np.flatnonzero(labels >= 0)
  tr = labelled[class_subsets.subsample_indices(labels[labelled],
                                                max_train, seed)]
  te = class_subsets.subsample_indices(d.test_labels, max_test, seed + 1)
  return {
      "name": d.name,
      "train_images": _eval_images(images[tr], size, mean, std),
      "train_labels": labels[tr].astype(np.int32),
      "test_images": _eval_images(d.test_images[te], size, mean, std),
      "test_labels": d.test_labels[te].astype(np.int32),
      "num_classes": int(d.num_classes),
  }


def _stream_arrays(d: DomainData, max_train: int | None,
                   max_test: int | None, **kw) -> dict[str, Any]:
  train_x, train_y = _stream_eval_split(d, d.stream.split, max_train,
                                        what="train", **kw)
  test_x, test_y = _stream_eval_split(d, d.stream.eval_split, max_test,
                                      what="test", **kw)
  return {"name": d.name, "train_images": train_x, "train_labels": train_y,
          "test_images": test_x, "test_labels": test_y,
          "num_classes": int(d.num_classes)}


def make_eval_arrays(config: Any, domains: Sequence[DomainData], *,
                     max_train: int | None = None,
                     max_test: int | None = None) -> list[dict[str, Any]]:
  """Eval-transformed arrays per domain (for linear probes and kNN).

  Images are resized to the large-view size (central square) and
  normalised; never augmented or masked. The train split is the domain's
  whole dataset (``DomainData.eval_train_images``) when a ``fraction`` or
  ``mix`` narrowed pretraining, unless ``config.eval.train_split`` is
  "pretraining". In-memory domains are subsampled
  class-stratified and deterministically (data seed). Streaming domains
  read the first ``max_train`` examples of their train split and the first
  ``max_test`` of their ``eval_split`` (TFDS's fixed order, class subset
  applied), decoding only those; uncapped reads that would exceed
  ``config.data.max_in_memory_gb`` as float32 raise a ValueError.

  Args:
    config: full config (``data.mean``, ``data.std``, ``views.large.size``,
      ``data.seed``, ``data.max_in_memory_gb``, ``eval.train_split``).
    domains: loaded domains.
    max_train: keep at most this many train images per domain.
    max_test: keep at most this many test images per domain.

  Returns:
    One dict per domain: "name", "train_images" [n, s, s, 3] float32,
    "train_labels" [n] int32, "test_images" [m, s, s, 3] float32,
    "test_labels" [m] int32, "num_classes" int.
  """
  cli.hide_gpus_from_tf()  # tf.data only: keep TF off the accelerators.
  size = views.view_size(config, "large")
  mean = tuple(float(m) for m in config.data.mean)
  std = tuple(float(s) for s in config.data.std)
  max_gb = float(config.data.max_in_memory_gb)
  full_split = config.eval.get("train_split", "full") == "full"
  out = []
  for d in domains:
    if d.is_streaming:
      out.append(_stream_arrays(d, max_train, max_test, size=size,
                                mean=mean, std=std, max_gb=max_gb))
    else:
      out.append(_memory_arrays(d, max_train, max_test, size=size,
                                mean=mean, std=std,
                                seed=int(config.data.seed),
                                full_split=full_split))
  return out
