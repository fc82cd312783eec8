"""Per-block outputs of a frozen ResNet encoder, for block-by-block CKA.

Synopsis::

  extractor = BlockExtractor(method.network, reduce="pooled",
                             batch_size=128)
  outs = extractor(params, batch_stats, images)
  # {"stem": [n, C0], "stage1_block1": [n, C1], ..., "stage4_block2": ...}

The blocks are captured with flax's `capture_intermediates` on the
encoder's residual blocks (`stage{i}_block{j}`) plus the stem output, in
eval mode (BatchNorm running averages). The last block of a stage is that
stage's output. Each [n, H, W, C] output is reduced per image by global
average pooling ("pooled", [n, C]) or flattening ("flattened",
[n, H·W·C]); METHODS §6.6 flattens, pooling is the cheaper choice.
"""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mdssl_jax.models import network as network_lib

REDUCTIONS = ("pooled", "flattened")
_BLOCK = re.compile(r"stage(\d+)_block(\d+)")


def _is_block(module: nn.Module, method_name: str) -> bool:
  return (method_name == "__call__"
          and _BLOCK.fullmatch(module.name or "") is not None)


def _order(name: str) -> tuple[int, int]:
  if name == "stem":
    return (0, 0)
  stage, block = _BLOCK.fullmatch(name).groups()
  return (int(stage), int(block))


def check_reduce(reduce: str) -> None:
  """Raises a ValueError unless `reduce` is one of REDUCTIONS."""
  if reduce not in REDUCTIONS:
    raise ValueError(
        f"block reduction must be one of {REDUCTIONS}, got {reduce!r}.")


class BlockExtractor:
  """Embeds images into every block's reduced output, in fixed batches.

  Attributes:
    reduce: "pooled" or "flattened" (what every output used).
    batch_size: rows per compiled call.
  """

  def __init__(self, network: network_lib.SSLNetwork, *, reduce: str,
               batch_size: int):
    """Jits the block forward pass once (compiled once per image shape).

    Args:
      network: the method's network (`Method.network`) with a ResNet
        encoder.
      reduce: "pooled" (global average pool, [n, C]) or "flattened"
        ([n, H·W·C]).
      batch_size: rows per call (>= 1); the last batch is zero-padded.

    Raises:
      ValueError: unknown reduce or batch_size < 1.
    """
    check_reduce(reduce)
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    self.reduce = reduce
    self.batch_size = int(batch_size)

    def blocks(params, batch_stats, images):
      (_, stages), state = network.apply(
          {"params": params, "batch_stats": batch_stats}, images,
          train=False, method=network_lib.SSLNetwork.intermediates,
          capture_intermediates=_is_block)
      captured = state["intermediates"]["encoder"]
      outs = {name: value["__call__"][0] for name, value in captured.items()}
      outs["stem"] = stages["stem"]
      return {name: self._reduce(out) for name, out in outs.items()}

    self._fn = jax.jit(blocks)

  def _reduce(self, out: jax.Array) -> jax.Array:
    out = out.astype(jnp.float32)
    if self.reduce == "pooled":
      return jnp.mean(out, axis=(1, 2))
    return out.reshape(out.shape[0], -1)

  def __call__(self, params: Any, batch_stats: Any,
               images: np.ndarray) -> dict[str, np.ndarray]:
    """Reduced block outputs of `images`.

    Args:
      params: the network's parameters (the method's full tree).
      batch_stats: its BatchNorm statistics.
      images: [n, H, W, 3] eval-transformed images, n >= 1.

    Returns:
      {name: [n, F_name] float32} in network order: "stem", then
      "stage1_block1", "stage1_block2", ...; F is C (pooled) or H·W·C
      (flattened).

    Raises:
      ValueError: images not [n, H, W, 3] with n >= 1.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] < 1:
      raise ValueError(
          f"images must be [n, H, W, 3] with n >= 1, got {images.shape}.")
    n = images.shape[0]
    batch = min(self.batch_size, n)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch):
      chunk = images[start:start + batch].astype(np.float32)
      rows = chunk.shape[0]
      if rows < batch:
        pad = np.zeros((batch - rows,) + chunk.shape[1:], np.float32)
        chunk = np.concatenate([chunk, pad])
      out = self._fn(params, batch_stats, chunk)
      for name, value in out.items():
        parts.setdefault(name, []).append(np.asarray(value)[:rows])
    return {name: np.concatenate(parts[name])
            for name in sorted(parts, key=_order)}
