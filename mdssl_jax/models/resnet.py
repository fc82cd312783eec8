"""ResNet encoders (He et al. 2016) in Flax linen, torchvision-compatible.

The layout follows torchvision's ResNet v1.5 (stride on the 3×3 conv of the
bottleneck), so parameter counts match torchvision exactly and weights can be
ported one-to-one: convolutions have no bias, kernels are [kh, kw, in, out]
with He-normal (fan_out) init, and padding is symmetric (k // 2) rather than
TF-style "SAME" (which pads stride-2 convs asymmetrically).

The encoder returns ``(pooled, intermediates)``: pooled float32 features
[B, C] and a dict of stage outputs (NHWC, compute dtype) used by CKA and
dense heads.

Example::

  model = resnet(18, width_multiplier=0.125, stem="cifar")
  variables = model.init(key, x, train=False)   # x: [B, 32, 32, 3]
  (feats, inter), updates = model.apply(
      variables, x, train=True, mutable=["batch_stats"])
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mdssl_jax.models.common import check_choice

ModuleDef = Any

RESNET_DEPTHS: dict[int, tuple[list[int], str]] = {
    18: ([2, 2, 2, 2], "basic"),
    34: ([3, 4, 6, 3], "basic"),
    50: ([3, 4, 6, 3], "bottleneck"),
    101: ([3, 4, 23, 3], "bottleneck"),
    152: ([3, 8, 36, 3], "bottleneck"),
    200: ([3, 24, 36, 3], "bottleneck"),
}

_BLOCKS = ("basic", "bottleneck")
_STEMS = ("imagenet", "cifar")
_NORMS = ("batch", "group", "layer")
_EXPANSION = {"basic": 1, "bottleneck": 4}
_BN_EPS = 1e-5  # torchvision's default; flax's GroupNorm default is 1e-6.
_GROUPS = 32

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu").
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def base_width(width_multiplier: float) -> int:
  """Channels of the stem and first stage: max(1, round(64 * w)).

  Args:
    width_multiplier: positive float, e.g. 1.0, 0.25, 0.125.

  Returns:
    int number of channels.
  """
  return max(1, int(round(64 * width_multiplier)))


def _check_width(width_multiplier: float) -> None:
  if not width_multiplier > 0:
    raise ValueError(
        f"width_multiplier must be > 0, got {width_multiplier!r}; use e.g. "
        "1.0 for the standard ResNet or 0.125 for a tiny test model.")


def feature_dim(depth: int, width_multiplier: float = 1.0) -> int:
  """Width of the pooled features of `resnet(depth, width_multiplier=w)`.

  Args:
    depth: one of RESNET_DEPTHS (18, 34, 50, 101, 152, 200).
    width_multiplier: channel multiplier.

  Returns:
    512·w (basic blocks) or 2048·w (bottleneck), with the rounding of
    `base_width`: 8 · base_width(w) · expansion.
  """
  check_choice("depth", depth, sorted(RESNET_DEPTHS))
  _check_width(width_multiplier)
  stage_sizes, block = RESNET_DEPTHS[depth]
  return (base_width(width_multiplier) * 2 ** (len(stage_sizes) - 1)
          * _EXPANSION[block])


def _pad(kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
  p = kernel // 2
  return ((p, p), (p, p))


def _conv(conv: ModuleDef, features: int, kernel: int, stride: int,
          name: str) -> nn.Module:
  """k×k conv with torchvision's symmetric padding k // 2."""
  return conv(features=features, kernel_size=(kernel, kernel),
              strides=(stride, stride), padding=_pad(kernel), name=name)


class BasicBlock(nn.Module):
  """3×3 → 3×3 residual block (ResNet-18/34).

  Attributes:
    features: output channels.
    strides: stride of the first conv and of the projection shortcut.
    conv: conv module class, pre-bound with dtype/init/no bias.
    norm: norm module class, pre-bound with train mode/dtype.
    zero_init_residual: zero-init the scale of the last norm so the block
      starts as the identity (Goyal et al. 2017).
  """
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps [B, H, W, Cin] to [B, H/s, W/s, features]."""
    y = _conv(self.conv, self.features, 3, self.strides, "conv1")(x)
    y = nn.relu(self.norm(name="norm1")(y))
    y = _conv(self.conv, self.features, 3, 1, "conv2")(y)
    last_scale = (nn.initializers.zeros if self.zero_init_residual
                  else nn.initializers.ones)
    y = self.norm(scale_init=last_scale, name="norm2")(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = _conv(self.conv, self.features, 1, self.strides, "shortcut_conv")(x)
      x = self.norm(name="shortcut_norm")(x)
    return nn.relu(x + y)


class BottleneckBlock(nn.Module):
  """1×1 → 3×3 (strided) → 1×1 (4× expansion) block (ResNet-50+, v1.5).

  Attributes: as `BasicBlock`; `features` is the bottleneck width and the
  block outputs 4 · features channels.
  """
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps [B, H, W, Cin] to [B, H/s, W/s, 4 · features]."""
    out = self.features * _EXPANSION["bottleneck"]
    y = _conv(self.conv, self.features, 1, 1, "conv1")(x)
    y = nn.relu(self.norm(name="norm1")(y))
    y = _conv(self.conv, self.features, 3, self.strides, "conv2")(y)
    y = nn.relu(self.norm(name="norm2")(y))
    y = _conv(self.conv, out, 1, 1, "conv3")(y)
    last_scale = (nn.initializers.zeros if self.zero_init_residual
                  else nn.initializers.ones)
    y = self.norm(scale_init=last_scale, name="norm3")(y)
    if self.strides != 1 or x.shape[-1] != out:
      x = _conv(self.conv, out, 1, self.strides, "shortcut_conv")(x)
      x = self.norm(name="shortcut_norm")(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """ResNet encoder returning pooled features and per-stage outputs.

  Attributes:
    stage_sizes: number of blocks per stage, e.g. [2, 2, 2, 2].
    block: "basic" or "bottleneck".
    width_multiplier: channel multiplier; stage i has base_width(w) · 2^i
      (· 4 for bottleneck) channels. Fractional values are allowed.
    stem: "imagenet" (7×7/2 conv + 3×3/2 max-pool) or "cifar" (3×3/1 conv,
      no pool; for 32 px inputs).
    dtype: compute dtype (e.g. jnp.bfloat16); parameters stay float32 and
      norm statistics are reduced in float32.
    norm: "batch" (default; running stats in collection "batch_stats"),
      "group" (gcd(32, C) groups) or "layer" (GroupNorm with one group, i.e.
      per-sample normalisation over H, W, C).
    bn_momentum: running-average decay of BatchNorm statistics.
    zero_init_residual: zero-init the last norm scale of every block.
    conv: conv module class with nn.Conv's constructor fields and parameter
      layout (kernel [kh, kw, in, out]); called with the keyword arguments
      features, kernel_size, strides, padding, use_bias, dtype, param_dtype,
      kernel_init and name (kernel_size and strides as 2-tuples, padding as
      ((p, p), (p, p)) with p = k // 2).
  """
  stage_sizes: Sequence[int]
  block: str
  width_multiplier: float = 1.0
  stem: str = "imagenet"
  dtype: Any = jnp.float32
  norm: str = "batch"
  bn_momentum: float = 0.9
  zero_init_residual: bool = False
  conv: ModuleDef = nn.Conv

  def __post_init__(self):
    check_choice("block", self.block, _BLOCKS)
    check_choice("stem", self.stem, _STEMS)
    check_choice("norm", self.norm, _NORMS)
    _check_width(self.width_multiplier)
    if not self.stage_sizes or any(int(n) < 1 for n in self.stage_sizes):
      raise ValueError(
          f"stage_sizes must be a non-empty list of positive block counts, "
          f"got {self.stage_sizes!r}.")
    if not 0.0 <= self.bn_momentum < 1.0:
      raise ValueError(
          f"bn_momentum must be in [0, 1), got {self.bn_momentum!r}.")
    super().__post_init__()

  @property
  def num_features(self) -> int:
    """Width C of the pooled output [B, C]."""
    return (base_width(self.width_multiplier)
            * 2 ** (len(self.stage_sizes) - 1) * _EXPANSION[self.block])

  def _norm_def(self, train: bool) -> ModuleDef:
    if self.norm == "batch":
      return functools.partial(
          nn.BatchNorm, use_running_average=not train,
          momentum=self.bn_momentum, epsilon=_BN_EPS, dtype=self.dtype)
    groups = _GROUPS if self.norm == "group" else 1
    return functools.partial(_AdaptiveGroupNorm, num_groups=groups,
                             dtype=self.dtype)

  @nn.compact
  def __call__(
      self, x: jax.Array, train: bool
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Encodes a batch of images.

    Args:
      x: [B, H, W, C] images (NHWC), any float dtype.
      train: BatchNorm uses batch statistics and updates the running
        averages in "batch_stats" (pass mutable=["batch_stats"]) when True;
        uses the running averages when False.

    Returns:
      (pooled, intermediates): pooled is [B, num_features] float32 (global
      average pool of stage 4); intermediates maps "stem", "stage1", …,
      "stageN" to NHWC outputs in the compute dtype. With the imagenet stem
      a 32 px input gives stage4 of spatial size 1×1; with the cifar stem
      4×4.
    """
    if x.ndim != 4:
      raise ValueError(
          f"ResNet expects NHWC images [B, H, W, C], got shape {x.shape}; "
          "rearrange multi-view batches [B, V, H, W, C] to [V*B, H, W, C].")
    conv = functools.partial(
        self.conv, use_bias=False, dtype=self.dtype,
        param_dtype=jnp.float32, kernel_init=conv_kernel_init)
    norm = self._norm_def(train)
    block_cls = BasicBlock if self.block == "basic" else BottleneckBlock
    width = base_width(self.width_multiplier)

    x = x.astype(self.dtype)
    if self.stem == "imagenet":
      x = _conv(conv, width, 7, 2, "stem_conv")(x)
    else:
      x = _conv(conv, width, 3, 1, "stem_conv")(x)
    x = nn.relu(norm(name="stem_norm")(x))
    if self.stem == "imagenet":
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=_pad(3))
    intermediates = {"stem": x}

    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        x = block_cls(
            features=width * 2 ** i,
            strides=2 if i > 0 and j == 0 else 1,
            conv=conv, norm=norm,
            zero_init_residual=self.zero_init_residual,
            name=f"stage{i + 1}_block{j + 1}")(x)
      intermediates[f"stage{i + 1}"] = x

    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return pooled, intermediates


class _AdaptiveGroupNorm(nn.Module):
  """GroupNorm over NHWC with gcd(num_groups, C) groups, float32 statistics.

  Fractional widths give channel counts (e.g. 8, 24) that 32 does not divide,
  hence the gcd. Parameters are "scale" and "bias" of shape [C], the same
  names and shapes as BatchNorm's.
  """
  num_groups: int
  dtype: Any = jnp.float32
  scale_init: Any = nn.initializers.ones

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Normalises [B, H, W, C] per sample and group; returns x's shape."""
    c = x.shape[-1]
    groups = math.gcd(self.num_groups, c)
    scale = self.param("scale", self.scale_init, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    xg = x.astype(jnp.float32).reshape(*x.shape[:-1], groups, c // groups)
    axes = tuple(range(1, x.ndim - 1)) + (x.ndim,)
    mean = jnp.mean(xg, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(xg - mean), axis=axes, keepdims=True)
    y = ((xg - mean) * jax.lax.rsqrt(var + _BN_EPS)).reshape(x.shape)
    return (y * scale + bias).astype(self.dtype)


def resnet(
    depth: int,
    *,
    width_multiplier: float = 1.0,
    stem: str = "imagenet",
    dtype: Any = jnp.float32,
    norm: str = "batch",
    conv: ModuleDef = nn.Conv,
    **kw: Any,
) -> ResNet:
  """Builds a standard-depth ResNet.

  Args:
    depth: 18, 34, 50, 101, 152 or 200 (see RESNET_DEPTHS).
    width_multiplier: channel multiplier (fractional allowed).
    stem: "imagenet" or "cifar".
    dtype: compute dtype.
    norm: "batch", "group" or "layer".
    conv: conv module class (see `ResNet.conv`).
    **kw: other ResNet fields (bn_momentum, zero_init_residual, name).

  Returns:
    An unbound ResNet module; its pooled output has feature_dim(depth,
    width_multiplier) channels.
  """
  check_choice("depth", depth, sorted(RESNET_DEPTHS))
  stage_sizes, block = RESNET_DEPTHS[depth]
  return ResNet(stage_sizes=tuple(stage_sizes), block=block,
                width_multiplier=width_multiplier, stem=stem, dtype=dtype,
                norm=norm, conv=conv, **kw)


def resnet_tiny(**kw: Any) -> ResNet:
  """Test/demo variant: ResNet-18 layout, width 1/8 (8..64 ch), cifar stem.

  Args:
    **kw: overrides of `resnet` keyword arguments.

  Returns:
    An unbound ResNet with 64 pooled features.
  """
  kw = {"width_multiplier": 0.125, "stem": "cifar", **kw}
  return resnet(18, **kw)


def resnet_by_name(name: str, **kw: Any) -> ResNet:
  """Builds an encoder from a config string.

  Args:
    name: "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
      "resnet200" or "resnet_tiny".
    **kw: keyword arguments for `resnet` / `resnet_tiny`.

  Returns:
    An unbound ResNet.
  """
  if name == "resnet_tiny":
    return resnet_tiny(**kw)
  valid = [f"resnet{d}" for d in sorted(RESNET_DEPTHS)] + ["resnet_tiny"]
  if not name.startswith("resnet") or not name[6:].isdigit():
    raise ValueError(f"Unknown encoder name {name!r}; valid names: {valid}.")
  depth = int(name[6:])
  if depth not in RESNET_DEPTHS:
    raise ValueError(f"Unknown encoder name {name!r}; valid names: {valid}.")
  return resnet(depth, **kw)
