"""Batched feature extraction with a frozen encoder, compiled once per run.

Synopsis::

  extractor = FeatureExtractor(method.features, batch_size=256,
                               sharding=batch_sharding)      # once per run
  feats = extractor(state.params, state.batch_stats, images)  # [n, F] f32

The parameters are arguments of the jitted function, not constants captured
in it, so evaluating new parameters (periodic evaluation) reuses the
compiled program. Every batch has the same shape (the last one is
zero-padded and the pad rows are dropped): one compilation per image shape
and batch size for the whole run.
"""

from __future__ import annotations

import collections
import math
from typing import Any, Callable

import jax
from jax.experimental import multihost_utils
import numpy as np

from mdssl_jax import sharding as sharding_lib

# Batches dispatched ahead of the one being fetched.
_PREFETCH = 2

FeaturesFn = Callable[[Any, Any, jax.Array], jax.Array]


def _batch_shards(sharding: jax.sharding.NamedSharding) -> int:
  """Number of pieces the batch (leading) axis is split into by `sharding`."""
  spec = sharding.spec
  if len(spec) == 0 or spec[0] is None:
    return 1
  axes = spec[0] if isinstance(spec[0], tuple) else (spec[0],)
  return math.prod(sharding.mesh.shape[a] for a in axes)


class FeatureExtractor:
  """Embeds image arrays in fixed-size batches with `features_fn`.

  Each padded batch is built on the host and placed with `sharding` (if
  given). On several processes (`jax.distributed`) each process passes its
  own rows: every batch takes batch/P rows from each process
  (`jax.make_array_from_process_local_data`), the features are gathered
  to every host, and the call returns the features of all processes' rows
  in process order (gather labels likewise: `sharding.allgather_rows`).

  Attributes:
    features_fn: the wrapped (un-jitted, differentiable) function.
    batch_size: requested rows per call (see `__call__`).
    sharding: the input sharding, or None.
  """

  def __init__(self, features_fn: FeaturesFn, *, batch_size: int,
               sharding: jax.sharding.NamedSharding | None = None):
    """Jits `features_fn` once.

    Args:
      features_fn: `(params, batch_stats, images [b, H, W, 3] float32) ->
        features [b, F]`, e.g. `Method.features`; it must treat rows
        independently (eval mode, no batch statistics), since pad rows
        share its batches.
      batch_size: rows per call; reduced to n for n smaller images, then
        rounded up to a multiple of the batch shards of `sharding`.
      sharding: optional `NamedSharding` for the [batch, H, W, 3] input;
        each padded batch is `device_put` with it.

    Raises:
      ValueError: for batch_size < 1.
    """
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    self.features_fn = features_fn
    self.batch_size = int(batch_size)
    self.sharding = sharding
    self._num_shards = 1 if sharding is None else _batch_shards(sharding)
    self._fn = jax.jit(features_fn)

  def _batch_for(self, n: int) -> int:
    batch = min(self.batch_size, max(n, 1))
    return -(-batch // self._num_shards) * self._num_shards

  def _out_dim(self, params, batch_stats, batch_shape) -> int:
    # Same input sharding as the real call, so the trace is shared with it.
    spec = jax.ShapeDtypeStruct(batch_shape, np.float32,
                                sharding=self.sharding)
    out = self._fn.eval_shape(params, batch_stats, spec)
    if not isinstance(out, jax.ShapeDtypeStruct):
      raise ValueError(
          f"features_fn must return one [batch, F] array, got a "
          f"{type(out).__name__}; select the features inside it, e.g. "
          "lambda p, s, x: model.apply(...)[0].")
    if len(out.shape) != 2 or out.shape[0] != batch_shape[0]:
      raise ValueError(
          f"features_fn must map [{batch_shape[0]}, ...] images to "
          f"[{batch_shape[0]}, F] features, got output shape {out.shape}; "
          "pool/flatten inside it.")
    return out.shape[1]

  def __call__(self, params: Any, batch_stats: Any,
               images: np.ndarray) -> np.ndarray:
    """Features of `images` under `params` / `batch_stats`.

    Args:
      params: the encoder's parameters (any pytree `features_fn` takes).
      batch_stats: its BatchNorm statistics (pytree; may be empty).
      images: [n, H, W, 3] array (any numeric dtype; cast to float32 per
        batch).

    Returns:
      [n, F] float32 NumPy features, row i from images[i] (several
      processes: [Σ n_p, F], process 0's rows first).

    Raises:
      ValueError: for images without a batch axis or a `features_fn` whose
        output is not [batch, F].
    """
    # Cast per batch, not here: a uint8 dataset would otherwise be copied 4x.
    images = np.asarray(images)
    if images.ndim < 2:
      raise ValueError(
          f"images must have a leading batch axis, e.g. [n, H, W, 3]; got "
          f"shape {images.shape}.")
    if self.sharding is not None and jax.process_count() > 1:
      return self._gathered(params, batch_stats, images)
    n = images.shape[0]
    batch = self._batch_for(n)
    dim = self._out_dim(params, batch_stats, (batch,) + images.shape[1:])
    feats = np.empty((n, dim), np.float32)
    in_flight = collections.deque()  # (start, device result)

    def fetch_oldest():
      first, result = in_flight.popleft()
      rows = min(batch, n - first)
      feats[first:first + rows] = np.asarray(result, dtype=np.float32)[:rows]

    for start in range(0, n, batch):
      chunk = images[start:start + batch].astype(np.float32)
      if chunk.shape[0] < batch:
        pad = np.zeros((batch - chunk.shape[0],) + chunk.shape[1:],
                       np.float32)
        chunk = np.concatenate([chunk, pad], axis=0)
      if self.sharding is not None:
        chunk = jax.device_put(chunk, self.sharding)
      in_flight.append((start, self._fn(params, batch_stats, chunk)))
      # A short queue lets dispatch run ahead of fetches without keeping
      # every batch's features in device memory.
      if len(in_flight) > _PREFETCH:
        fetch_oldest()
    while in_flight:
      fetch_oldest()
    return feats

  def _gathered(self, params: Any, batch_stats: Any,
                images: np.ndarray) -> np.ndarray:
    """`__call__` over several processes (see the class docstring)."""
    procs = jax.process_count()
    counts = sharding_lib.process_row_counts(images.shape[0])
    batch = self._batch_for(int(counts.max()) * procs)
    local = batch // procs
    dim = self._out_dim(params, batch_stats, (batch,) + images.shape[1:])
    steps = -(-int(counts.max()) // local)
    out = np.empty((procs, steps * local, dim), np.float32)
    for t in range(steps):
      chunk = np.zeros((local,) + images.shape[1:], np.float32)
      rows = images[t * local:(t + 1) * local]
      chunk[:len(rows)] = rows
      x = jax.make_array_from_process_local_data(self.sharding, chunk)
      feats = multihost_utils.process_allgather(
          self._fn(params, batch_stats, x), tiled=True)
      out[:, t * local:(t + 1) * local] = np.asarray(
          feats, np.float32).reshape(procs, local, dim)
    return np.concatenate([out[p, :c] for p, c in enumerate(counts)])
