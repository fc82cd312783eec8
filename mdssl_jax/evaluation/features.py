"""Batched feature extraction with a frozen encoder.

Synopsis::

  embed_fn = lambda x: model.apply(variables, x, train=False)[0]
  feats = extract_features(embed_fn, images, batch_size=256)  # [n, F] float32

Every batch has the same shape (the last one is zero-padded and the pad rows
are dropped), so `embed_fn` is compiled exactly once per image shape.
"""

from __future__ import annotations

import collections
import math
from typing import Callable

import jax
import numpy as np

# Batches dispatched ahead of the one being fetched.
_PREFETCH = 2


def _batch_shards(sharding: jax.sharding.NamedSharding) -> int:
  """Number of pieces the batch (leading) axis is split into by `sharding`."""
  spec = sharding.spec
  if len(spec) == 0 or spec[0] is None:
    return 1
  axes = spec[0] if isinstance(spec[0], tuple) else (spec[0],)
  return math.prod(sharding.mesh.shape[a] for a in axes)


def extract_features(
    embed_fn: Callable[[jax.Array], jax.Array],
    images: np.ndarray,
    *,
    batch_size: int = 256,
    num_devices: int | None = None,
    sharding: jax.sharding.NamedSharding | None = None,
) -> np.ndarray:
  """Embeds `images` in fixed-size batches and returns the features.

  Single-process only: each padded batch is built on the host and placed with
  `sharding` (if given), so every device in it must be addressable.

  Args:
    embed_fn: jit-able function images [b, H, W, 3] float32 -> features
      [b, F]; it must treat rows independently (eval mode, no batch stats),
      since pad rows share its batches.
    images: [n, H, W, 3] array (any numeric dtype; cast to float32).
    batch_size: rows per call; reduced to n if n is smaller, then rounded up
      to a multiple of the device count.
    num_devices: devices the batch axis is split over; defaults to the
      number of shards of `sharding` along the batch axis, else 1.
    sharding: optional `NamedSharding` for the [batch, H, W, 3] input; each
      padded batch is `device_put` with it.

  Returns:
    [n, F] float32 NumPy features, row i from images[i].

  Raises:
    ValueError: for a bad batch size / device count, images without a batch
      axis, or an `embed_fn` whose output is not [batch, F].
  """
  # Cast per batch, not here: a uint8 dataset would otherwise be copied 4x.
  images = np.asarray(images)
  if images.ndim < 2:
    raise ValueError(
        f"images must have a leading batch axis, e.g. [n, H, W, 3]; got "
        f"shape {images.shape}.")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  if num_devices is None:
    num_devices = _batch_shards(sharding) if sharding is not None else 1
  if num_devices < 1:
    raise ValueError(f"num_devices must be >= 1, got {num_devices}.")
  n = images.shape[0]
  batch = min(int(batch_size), max(n, 1))
  batch = -(-batch // num_devices) * num_devices

  fn = jax.jit(embed_fn)
  batch_shape = (batch,) + images.shape[1:]
  out = jax.eval_shape(fn, jax.ShapeDtypeStruct(batch_shape, np.float32))
  if not isinstance(out, jax.ShapeDtypeStruct):
    raise ValueError(
        f"embed_fn must return one [batch, F] array, got a "
        f"{type(out).__name__}; select the features inside embed_fn, e.g. "
        "lambda x: model.apply(v, x)[0].")
  out_shape = out.shape
  if len(out_shape) != 2 or out_shape[0] != batch:
    raise ValueError(
        f"embed_fn must map [{batch}, ...] images to [{batch}, F] features, "
        f"got output shape {out_shape}; pool/flatten inside embed_fn.")
  if n == 0:
    return np.zeros((0, out_shape[1]), np.float32)

  feats = np.empty((n, out_shape[1]), np.float32)
  in_flight = collections.deque()  # (start, device result)

  def fetch_oldest():
    first, result = in_flight.popleft()
    rows = min(batch, n - first)
    feats[first:first + rows] = np.asarray(result, dtype=np.float32)[:rows]

  for start in range(0, n, batch):
    chunk = images[start:start + batch].astype(np.float32)
    if chunk.shape[0] < batch:
      pad = np.zeros((batch - chunk.shape[0],) + chunk.shape[1:], np.float32)
      chunk = np.concatenate([chunk, pad], axis=0)
    x = jax.device_put(chunk, sharding) if sharding is not None else chunk
    in_flight.append((start, fn(x)))
    # A short queue lets dispatch run ahead of fetches without keeping every
    # batch's features in device memory.
    if len(in_flight) > _PREFETCH:
      fetch_oldest()
  while in_flight:
    fetch_oldest()
  return feats
