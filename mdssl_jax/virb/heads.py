"""End-task heads on a frozen encoder (seed 001 §3.3, App. B; METHODS §6.7).

Every head reads precomputed encoder outputs, so the encoder stays frozen
by construction:

* LinearHead: pooled features [B, F] -> logits [B, K].
* FusionHead: pooled features of T inputs [B, T, F] -> a linear module per
  input, concatenated, ReLU, then a fusion layer -> logits [B, K].
* UNetDecoder: block outputs (fine to coarse, [B, h_i, w_i, C_i]) ->
  [B, S, S, out]: from the coarsest block up, upsample, concatenate the
  next finer block, a 3×3 conv (one, not U-Net's two: CPU-sized); a 1×1
  conv, upsampled to S.
* DeepLabHead (DeepLabv3+): ASPP (1×1, atrous 3×3 convs, image pooling) on
  the last block, upsampled and joined with a reduced low-level block
  (the finest block), a 3×3 conv (DeepLabv3+ has two; CPU-sized), 1×1
  logits upsampled to S.
* SiameseUNet: the block outputs of two frames, concatenated level by
  level, into a U-Net decoder (the encoder is shared, hence Siamese).

The block outputs are the encoder's intermediates dict
(`encoders.select_levels`): ResNet stage outputs, or ViT patch-token
grids (all one resolution; resizing makes the decoders work unchanged).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def _resize(x: jax.Array, hw: tuple[int, int]) -> jax.Array:
  """Bilinear resize of [B, h, w, C] to [B, *hw, C] (identity if equal)."""
  if x.shape[1:3] == tuple(hw):
    return x
  return jax.image.resize(x, (x.shape[0], *hw, x.shape[3]), "bilinear")


class LinearHead(nn.Module):
  """A single linear layer on pooled features.

  Attributes:
    num_classes: K.
  """
  num_classes: int

  @nn.compact
  def __call__(self, feats: jax.Array) -> jax.Array:
    """[B, F] -> logits [B, K]."""
    return nn.Dense(self.num_classes)(feats)


class FusionHead(nn.Module):
  """Per-input linear modules, concatenated, then a fusion layer.

  Attributes:
    num_classes: K.
    dim: width of each per-input linear module.
  """
  num_classes: int
  dim: int

  @nn.compact
  def __call__(self, feats: jax.Array) -> jax.Array:
    """[B, T, F] -> logits [B, K]."""
    parts = [nn.Dense(self.dim, name=f"input{t}")(feats[:, t])
             for t in range(feats.shape[1])]
    joined = nn.relu(jnp.concatenate(parts, axis=-1))
    return nn.Dense(self.num_classes, name="fusion")(joined)


class _ConvRelu(nn.Module):
  features: int
  kernel: int = 3
  dilation: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.relu(nn.Conv(self.features, (self.kernel, self.kernel),
                           kernel_dilation=self.dilation, padding="SAME")(x))


class UNetDecoder(nn.Module):
  """U-Net decoder over an encoder's block outputs.

  Attributes:
    out_channels: output channels (regressed values or class logits).
    width: channels of every decoder stage.
  """
  out_channels: int
  width: int

  @nn.compact
  def __call__(self, levels: Sequence[jax.Array],
               out_size: int) -> jax.Array:
    """Decodes block outputs into a dense map.

    Args:
      levels: block outputs fine to coarse, each [B, h_i, w_i, C_i].
      out_size: side S of the output.

    Returns:
      [B, S, S, out_channels] float32.
    """
    x = _ConvRelu(self.width, 1)(levels[-1].astype(jnp.float32))
    for skip in reversed(levels[:-1]):
      x = _resize(x, skip.shape[1:3])
      x = jnp.concatenate([x, skip.astype(jnp.float32)], axis=-1)
      x = _ConvRelu(self.width)(x)
    x = nn.Conv(self.out_channels, (1, 1))(x)
    return _resize(x, (out_size, out_size))


class DeepLabHead(nn.Module):
  """DeepLabv3+ head: ASPP on the last block plus a low-level skip.

  Attributes:
    num_classes: K.
    width: channels of the ASPP branches and the decoder.
    rates: atrous rates of the 3×3 ASPP branches (small maps need small
      rates: 4×4 blocks at 32 px).
  """
  num_classes: int
  width: int
  rates: tuple[int, ...]

  @nn.compact
  def __call__(self, levels: Sequence[jax.Array],
               out_size: int) -> jax.Array:
    """Per-pixel class logits.

    Args:
      levels: block outputs fine to coarse, each [B, h_i, w_i, C_i]; the
        last feeds ASPP, the first (a ResNet's first stage, stride 4 with
        the ImageNet stem as in DeepLabv3+) is the low-level skip.
      out_size: side S of the output.

    Returns:
      [B, S, S, K] float32 logits.
    """
    top = levels[-1].astype(jnp.float32)
    branches = [_ConvRelu(self.width, 1)(top)]
    branches += [_ConvRelu(self.width, 3, rate)(top) for rate in self.rates]
    pooled = _ConvRelu(self.width, 1)(jnp.mean(top, (1, 2), keepdims=True))
    branches.append(jnp.broadcast_to(pooled, branches[0].shape))
    aspp = _ConvRelu(self.width, 1)(jnp.concatenate(branches, axis=-1))
    low = _ConvRelu(max(1, self.width // 2), 1)(
        levels[0].astype(jnp.float32))
    x = jnp.concatenate([_resize(aspp, low.shape[1:3]), low], axis=-1)
    x = _ConvRelu(self.width)(x)
    x = nn.Conv(self.num_classes, (1, 1))(x)
    return _resize(x, (out_size, out_size))


class SiameseUNet(nn.Module):
  """A U-Net decoder on the block outputs of two frames.

  Attributes:
    out_channels: output channels.
    width: channels of every decoder stage.
  """
  out_channels: int
  width: int

  @nn.compact
  def __call__(self, levels: Sequence[Sequence[jax.Array]],
               out_size: int) -> jax.Array:
    """Decodes two frames' block outputs into one dense map.

    Args:
      levels: (frame-1 levels, frame-2 levels), each fine to coarse
        [B, h_i, w_i, C_i] (the same shared encoder on both frames).
      out_size: side S of the output.

    Returns:
      [B, S, S, out_channels] float32.
    """
    first, second = levels
    joined = [jnp.concatenate([a, b], axis=-1)
              for a, b in zip(first, second)]
    return UNetDecoder(self.out_channels, self.width)(joined, out_size)
