"""Projector / predictor MLPs, SwAV prototypes and the DINO head.

All heads take [..., D] features and return float32 outputs, whatever the
compute dtype. BatchNorm statistics live in the "batch_stats" collection.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mdssl_jax.losses.common import l2_normalize
from mdssl_jax.losses.swav import normalize_prototypes
from mdssl_jax.models.common import check_choice

_NORMS = ("batch", "layer", "none")
_LAST_NORMS = ("none", "batch_noaffine", "batch", "layer")
# Exact (erf) GELU as in torch.nn.GELU / DINO, not flax's tanh default.
_gelu = functools.partial(nn.gelu, approximate=False)
_ACTIVATIONS = {"relu": nn.relu, "gelu": _gelu}
_BN_EPS = 1e-5
_BN_MOMENTUM = 0.9


def _check_dims(name: str, dims: Sequence[int]) -> None:
  if any(int(d) < 1 for d in dims):
    raise ValueError(f"{name} must be positive integers, got {dims!r}.")


def _check_features(x: jax.Array, module: str) -> None:
  if x.ndim < 2:
    raise ValueError(
        f"{module} expects features [B, D] (or [..., D]), got shape "
        f"{x.shape}; pool or flatten the encoder output first.")


class MLP(nn.Module):
  """[Dense → Norm → Act] × len(hidden_dims) → Dense(out_dim) [→ last norm].

  Hidden Dense layers have a bias only when `norm` is not "batch" (BatchNorm
  cancels it).

  Attributes:
    hidden_dims: widths of the hidden layers ([] gives a single linear map).
    out_dim: output width.
    norm: hidden-layer norm, "batch", "layer" or "none".
    last_norm: norm on the output, "none", "batch_noaffine" (BatchNorm
      without scale/bias, MoCo v3 projector), "batch" or "layer".
    use_bias_last: bias on the output Dense.
    activation: "relu" or "gelu" (exact erf form).
    bn_momentum: running-average decay of BatchNorm statistics.
    dtype: compute dtype; parameters stay float32.
  """
  hidden_dims: Sequence[int]
  out_dim: int
  norm: str = "batch"
  last_norm: str = "none"
  use_bias_last: bool = True
  activation: str = "relu"
  bn_momentum: float = _BN_MOMENTUM
  dtype: Any = jnp.float32

  def __post_init__(self):
    check_choice("norm", self.norm, _NORMS)
    check_choice("last_norm", self.last_norm, _LAST_NORMS)
    check_choice("activation", self.activation, sorted(_ACTIVATIONS))
    _check_dims("hidden_dims", self.hidden_dims)
    _check_dims("out_dim", [self.out_dim])
    super().__post_init__()

  def _norm(self, kind: str, train: bool, name: str) -> nn.Module:
    if kind == "layer":
      return nn.LayerNorm(epsilon=_BN_EPS, dtype=self.dtype, name=name)
    affine = kind == "batch"
    return nn.BatchNorm(
        use_running_average=not train, momentum=self.bn_momentum,
        epsilon=_BN_EPS, use_bias=affine, use_scale=affine,
        dtype=self.dtype, name=name)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Applies the MLP.

    Args:
      x: [B, D] (or [..., D]) features.
      train: BatchNorm uses batch statistics and updates "batch_stats" when
        True, running averages when False.

    Returns:
      [B, out_dim] (or [..., out_dim]) float32.
    """
    _check_features(x, "MLP")
    act = _ACTIVATIONS[self.activation]
    x = x.astype(self.dtype)
    for i, width in enumerate(self.hidden_dims):
      x = nn.Dense(int(width), use_bias=self.norm != "batch",
                   dtype=self.dtype, name=f"dense{i}")(x)
      if self.norm != "none":
        x = self._norm(self.norm, train, name=f"norm{i}")(x)
      x = act(x)
    x = nn.Dense(self.out_dim, use_bias=self.use_bias_last, dtype=self.dtype,
                 name=f"dense{len(self.hidden_dims)}")(x)
    if self.last_norm != "none":
      x = self._norm(self.last_norm, train, name="last_norm")(x)
    return x.astype(jnp.float32)


def _unit_column_init(key: jax.Array, shape: Sequence[int],
                      dtype: Any = jnp.float32) -> jax.Array:
  return normalize_prototypes(jax.random.normal(key, shape)).astype(dtype)


class Prototypes(nn.Module):
  """SwAV prototypes: scores S = z C with C = kernel [d, K] (no bias).

  SwAV renormalises the columns of C before every step (METHODS §5.7), as a
  parameter update rather than inside the graph; call
  `Prototypes.normalize(params)` on this module's params for that. The
  kernel is initialised with unit columns.

  Attributes:
    num_prototypes: K.
  """
  num_prototypes: int

  def __post_init__(self):
    _check_dims("num_prototypes", [self.num_prototypes])
    super().__post_init__()

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    """Scores of features against the prototypes.

    Args:
      z: [B, d] (normally ℓ2-normalised) features.

    Returns:
      [B, K] float32 scores z · C.
    """
    _check_features(z, "Prototypes")
    kernel = self.param("kernel", _unit_column_init,
                        (z.shape[-1], self.num_prototypes), jnp.float32)
    return jnp.dot(z.astype(jnp.float32), kernel)

  @staticmethod
  def normalize(params: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Returns this module's params with unit-norm kernel columns.

    Args:
      params: {"kernel": [d, K]}, i.e. the Prototypes' own param subtree.

    Returns:
      A new dict with the kernel replaced by `normalize_prototypes(kernel)`.
    """
    if "kernel" not in params:
      raise ValueError(
          "Prototypes.normalize expects the Prototypes params subtree "
          f"{{'kernel': [d, K]}}, got keys {list(params)}.")
    return {**params, "kernel": normalize_prototypes(params["kernel"])}


class DINOHead(nn.Module):
  """DINO projection head (METHODS §5.6).

  MLP (Dense → [BN] → exact GELU) × (num_layers − 1) → Dense(bottleneck_dim),
  then ℓ2-normalisation, then a weight-normalised linear layer to K logits
  with kernel W = g · v / ||v|| per output column. As in DINO, g is fixed to
  1 unless `norm_last_layer=False`, in which case g [K] is a parameter
  initialised to 1. The last layer's params live under "last_layer" so the
  trainer can freeze them during the first epoch.

  Attributes:
    out_dim: K.
    hidden_dim: MLP hidden width (2048 in DINO).
    bottleneck_dim: width before normalisation (256).
    num_layers: Dense layers in the MLP (3 in DINO, ≥ 1).
    use_bn: BatchNorm after hidden Dense layers (off in DINO / solo-learn).
    norm_last_layer: keep g fixed to 1.
    dtype: compute dtype of the MLP; normalisation and logits are float32.
  """
  out_dim: int
  hidden_dim: int = 2048
  bottleneck_dim: int = 256
  num_layers: int = 3
  use_bn: bool = False
  norm_last_layer: bool = True
  dtype: Any = jnp.float32

  def __post_init__(self):
    _check_dims("out_dim, hidden_dim, bottleneck_dim and num_layers",
                [self.out_dim, self.hidden_dim, self.bottleneck_dim,
                 self.num_layers])
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Computes DINO logits (before temperature/centring).

    Args:
      x: [B, D] backbone features.
      train: BatchNorm mode (only used when use_bn).

    Returns:
      [B, out_dim] float32 logits.
    """
    _check_features(x, "DINOHead")
    dense = lambda n, name: nn.Dense(
        n, dtype=self.dtype,
        kernel_init=nn.initializers.truncated_normal(0.02), name=name)
    x = x.astype(self.dtype)
    for i in range(self.num_layers - 1):
      x = dense(self.hidden_dim, f"dense{i}")(x)
      if self.use_bn:
        x = nn.BatchNorm(use_running_average=not train,
                         momentum=_BN_MOMENTUM, epsilon=_BN_EPS,
                         dtype=self.dtype, name=f"norm{i}")(x)
      x = _gelu(x)
    x = dense(self.bottleneck_dim, f"dense{self.num_layers - 1}")(x)
    x = l2_normalize(x)
    return WeightNormDense(self.out_dim, learn_scale=not self.norm_last_layer,
                           name="last_layer")(x)


class WeightNormDense(nn.Module):
  """Bias-free Dense with W = g · v / ||v|| per output column, in float32.

  Attributes:
    features: K outputs.
    learn_scale: whether g [K] is a parameter (init 1) or fixed to 1.
  """
  features: int
  learn_scale: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps [..., d] to [..., features] float32."""
    v = self.param("kernel", nn.initializers.truncated_normal(0.02),
                   (x.shape[-1], self.features), jnp.float32)
    w = l2_normalize(v, axis=0)
    if self.learn_scale:
      w = w * self.param("scale", nn.initializers.ones, (self.features,),
                         jnp.float32)
    return jnp.dot(x.astype(jnp.float32), w)
