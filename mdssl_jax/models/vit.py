"""Vision Transformer encoders (Dosovitskiy et al. 2021) in Flax linen.

The layout is timm's `VisionTransformer` without the classifier head, so
parameter counts match it (ViT-S/16 21.67 M, ViT-B/16 85.80 M): a p×p/p
patch projection, a class token, position embeddings for 1 + (S/p)² tokens
at the native image size S, `depth` pre-norm blocks (LayerNorm → multi-head
self-attention → residual, LayerNorm → GELU MLP → residual) and a final
LayerNorm. Linear layers use Xavier-uniform weights and zero biases (MoCo v3,
MAE), the class token N(0, 1e-6²) and learned position embeddings
N(0, 0.02²) (timm).

Like the ResNet encoder it returns ``(features, intermediates)``: float32
features [B, C] (the class token, or the mean of the patch tokens, after the
final LayerNorm) and a dict of NHWC grids of patch tokens [B, H/p, W/p, C]:
"stem" (embedded patches plus position embeddings) and "stage1_block{j}"
for block j = 1..depth (all blocks form one stage at one resolution). Each
block's grid is emitted by a parameter-free module of that name, so
`mdssl_jax.evaluation.blocks.BlockExtractor` and CKA see ViT blocks exactly
as they see residual blocks.

Position embeddings are resampled (bicubic, antialiased, as timm) to the
grid of other input sizes, e.g. DINO's small local crops; at the native
size they are used as stored.

Example::

  model = vit("tiny", patch_size=4, image_size=32)
  variables = model.init(key, x, train=False)   # x: [B, 32, 32, 3]
  feats, blocks = model.apply(variables, x, train=False)
  # feats [B, 192]; blocks["stage1_block12"] [B, 8, 8, 192]
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mdssl_jax.models.common import check_choice

# (width C, blocks, heads) of the standard sizes (Touvron et al. 2021 for
# Ti and S; Dosovitskiy et al. 2021 for B and L), and "micro", a 2-block
# test model (as resnet_tiny is for ResNets): a ViT-Ti step compiles in
# ~20 s on a CPU, a micro step in ~2 s.
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "micro": (32, 2, 2),
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}
POS_EMBEDS = ("learned", "sincos")
POOLINGS = ("cls", "mean")
_LN_EPS = 1e-6  # timm, MoCo v3 and DINO ViTs.
_gelu = functools.partial(nn.gelu, approximate=False)  # torch.nn.GELU.
_dense_init = nn.initializers.xavier_uniform()


def sincos_2d(grid_hw: tuple[int, int], width: int,
              temperature: float = 10_000.0) -> np.ndarray:
  """Fixed 2-D sin-cos position embeddings of MoCo v3, [h·w, width].

  Quarter of the channels each: sin and cos of the column index, then sin
  and cos of the row index, at frequencies temperature^(-k / (width / 4)).

  Args:
    grid_hw: (h, w) patch grid.
    width: embedding width C, a multiple of 4.
    temperature: frequency base.

  Returns:
    float32 [h·w, C], row-major over the grid.
  """
  if width % 4:
    raise ValueError(f"sin-cos position embeddings need a width divisible "
                     f"by 4, got {width}; use pos_embed='learned'.")
  h, w = grid_hw
  rows, cols = np.meshgrid(np.arange(h, dtype=np.float64),
                           np.arange(w, dtype=np.float64), indexing="ij")
  quarter = width // 4
  omega = 1.0 / temperature ** (np.arange(quarter) / quarter)
  out_w = cols.reshape(-1, 1) * omega
  out_h = rows.reshape(-1, 1) * omega
  table = np.concatenate([np.sin(out_w), np.cos(out_w), np.sin(out_h),
                          np.cos(out_h)], axis=1)
  return table.astype(np.float32)


def resample_pos_embed(table: jax.Array, native_hw: tuple[int, int],
                       grid_hw: tuple[int, int]) -> jax.Array:
  """Resamples patch position embeddings to another grid.

  Args:
    table: [h·w, C] embeddings of the native grid (class token excluded).
    native_hw: (h, w) of `table`.
    grid_hw: the wanted (h', w').

  Returns:
    [h'·w', C]: `table` itself at the native grid, else its bicubic,
    antialiased resize (timm's `resample_abs_pos_embed`).
  """
  if tuple(grid_hw) == tuple(native_hw):
    return table
  width = table.shape[-1]
  grid = table.reshape(*native_hw, width).astype(jnp.float32)
  grid = jax.image.resize(grid, (*grid_hw, width), method="bicubic",
                          antialias=True)
  return grid.reshape(-1, width).astype(table.dtype)


class PatchEmbed(nn.Module):
  """Non-overlapping p×p patches → width C: a p×p/p conv as one matmul.

  Parameters are a conv's ("kernel" [p, p, 3, C], "bias" [C]); a frozen
  projection names them "frozen_kernel" / "frozen_bias" and stops their
  gradient. `mdssl_jax.optim` never decays parameters named `frozen_*`, so
  they keep their random initialisation (MoCo v3's frozen patch projection).

  Attributes:
    width: C.
    patch_size: p.
    frozen: keep the random projection fixed.
    dtype: compute dtype.
  """
  width: int
  patch_size: int
  frozen: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps [B, H, W, c] images to [B, H/p, W/p, C] patch embeddings."""
    p = self.patch_size
    b, h, w, c = x.shape
    prefix = "frozen_" if self.frozen else ""
    # MoCo v3: Xavier-uniform over the flattened (p·p·c) → C map.
    init = nn.initializers.xavier_uniform(in_axis=(0, 1, 2), out_axis=3)
    kernel = self.param(prefix + "kernel", init, (p, p, c, self.width))
    bias = self.param(prefix + "bias", nn.initializers.zeros, (self.width,))
    if self.frozen:
      kernel, bias = jax.lax.stop_gradient((kernel, bias))
    patches = x.reshape(b, h // p, p, w // p, p, c).astype(self.dtype)
    y = jnp.einsum("bhpwqc,pqcd->bhwd", patches, kernel.astype(self.dtype))
    return y + bias.astype(self.dtype)


class Attention(nn.Module):
  """Multi-head self-attention without masking (timm `Attention`).

  Attributes:
    num_heads: heads H; the width C must be divisible by H.
    dtype: compute dtype (softmax in float32).
  """
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps tokens [B, N, C] to [B, N, C]."""
    b, n, c = x.shape
    d = c // self.num_heads
    dense = functools.partial(nn.Dense, dtype=self.dtype,
                              kernel_init=_dense_init)
    qkv = dense(3 * c, name="qkv")(x).reshape(b, n, 3, self.num_heads, d)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * d ** -0.5
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(self.dtype), v)
    return dense(c, name="proj")(out.reshape(b, n, c))


class Block(nn.Module):
  """Pre-norm transformer block with stochastic depth on both branches.

  x ← x + DropPath(Attn(LN(x))); x ← x + DropPath(MLP(LN(x))), where the MLP
  is Dense(r·C) → GELU → Dense(C).

  Attributes:
    num_heads: attention heads.
    mlp_ratio: r.
    drop_path: probability of dropping each residual branch per sample in
      training (needs a "dropout" rng when > 0).
    dtype: compute dtype.
  """
  num_heads: int
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32

  def _drop_path(self, y: jax.Array, train: bool) -> jax.Array:
    if not train or self.drop_path == 0.0:
      return y
    if not self.has_rng("dropout"):
      raise ValueError(
          "Stochastic depth (drop_path > 0) in training needs a 'dropout' "
          "rng: apply(..., rngs={'dropout': key}).")
    keep = 1.0 - self.drop_path
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep,
                                (y.shape[0],) + (1,) * (y.ndim - 1))
    return jnp.where(mask, y / keep, 0.0).astype(y.dtype)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Maps tokens [B, N, C] to [B, N, C]."""
    c = x.shape[-1]
    norm = functools.partial(nn.LayerNorm, epsilon=_LN_EPS, dtype=self.dtype)
    dense = functools.partial(nn.Dense, dtype=self.dtype,
                              kernel_init=_dense_init)
    y = Attention(self.num_heads, dtype=self.dtype, name="attn")(
        norm(name="norm1")(x))
    x = x + self._drop_path(y, train)
    y = norm(name="norm2")(x)
    y = dense(int(c * self.mlp_ratio), name="fc1")(y)
    y = dense(c, name="fc2")(_gelu(y))
    return x + self._drop_path(y, train)


def _to_grid(tokens: jax.Array, grid_hw: tuple[int, int]) -> jax.Array:
  """The patch tokens of [B, 1 + h·w, C] as [B, h, w, C]."""
  return tokens[:, 1:].reshape(tokens.shape[0], *grid_hw, tokens.shape[-1])


class _Grid(nn.Module):
  """Parameter-free tap returning `_to_grid` of its input tokens.

  Named "stage1_block{j}" so that `capture_intermediates` (BlockExtractor)
  records NHWC block outputs, as for ResNet blocks.
  """
  grid_hw: tuple[int, int]

  def __call__(self, tokens: jax.Array) -> jax.Array:
    return _to_grid(tokens, self.grid_hw)


class ViT(nn.Module):
  """Vision Transformer encoder returning pooled features and block grids.

  Attributes:
    width: embedding width C.
    depth: number of blocks.
    num_heads: attention heads (C divisible by it).
    patch_size: p; input sizes must be multiples of it.
    image_size: native input size S (square); position embeddings cover
      (S/p)² patches and are resampled for other sizes.
    mlp_ratio: MLP hidden width / C.
    pos_embed: "learned" (parameter "pos_embed", class token included) or
      "sincos" (fixed 2-D sin-cos table, zero for the class token).
    pooling: "cls" (class token) or "mean" (mean of the patch tokens), both
      after the final LayerNorm.
    drop_path_rate: stochastic depth, rising linearly from 0 (block 1) to
      this rate (last block); > 0 needs a "dropout" rng in training.
    frozen_patch_embed: keep the random patch projection fixed (MoCo v3).
    dtype: compute dtype; parameters stay float32.
  """
  width: int
  depth: int
  num_heads: int
  patch_size: int
  image_size: int
  mlp_ratio: float = 4.0
  pos_embed: str = "learned"
  pooling: str = "cls"
  drop_path_rate: float = 0.0
  frozen_patch_embed: bool = False
  dtype: Any = jnp.float32

  def __post_init__(self):
    check_choice("pos_embed", self.pos_embed, POS_EMBEDS)
    check_choice("pooling", self.pooling, POOLINGS)
    if self.width % self.num_heads:
      raise ValueError(f"width={self.width} is not divisible by "
                       f"num_heads={self.num_heads}.")
    if self.patch_size < 1 or self.image_size % self.patch_size:
      raise ValueError(
          f"patch_size={self.patch_size} must be ≥ 1 and divide "
          f"image_size={self.image_size}.")
    if self.depth < 1:
      raise ValueError(f"depth must be ≥ 1, got {self.depth}.")
    if not 0.0 <= self.drop_path_rate < 1.0:
      raise ValueError(
          f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}.")
    super().__post_init__()

  @property
  def num_features(self) -> int:
    """Width C of the pooled output [B, C]."""
    return self.width

  @property
  def native_grid(self) -> tuple[int, int]:
    """(h, w) patch grid at the native image size."""
    side = self.image_size // self.patch_size
    return (side, side)

  def _pos_table(self) -> jax.Array:
    """[1 + h·w, C] position embeddings of the native grid."""
    h, w = self.native_grid
    if self.pos_embed == "learned":
      init = nn.initializers.truncated_normal(0.02)
      return self.param("pos_embed", init, (1 + h * w, self.width))
    patches = sincos_2d((h, w), self.width)
    return jnp.asarray(np.concatenate(
        [np.zeros((1, self.width), np.float32), patches]))

  @nn.compact
  def __call__(
      self, x: jax.Array, train: bool
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Encodes a batch of images.

    Args:
      x: [B, H, W, 3] images (NHWC), H and W multiples of patch_size.
      train: enables stochastic depth (no other train/eval difference).

    Returns:
      (features, intermediates): features [B, C] float32; intermediates
      maps "stem" and "stage1_block1" … "stage1_block{depth}" to patch
      token grids [B, H/p, W/p, C] in the compute dtype.
    """
    if x.ndim != 4:
      raise ValueError(
          f"ViT expects NHWC images [B, H, W, C], got shape {x.shape}; "
          "rearrange multi-view batches [B, V, H, W, C] to [V*B, H, W, C].")
    b, h, w, _ = x.shape
    p = self.patch_size
    if h % p or w % p:
      raise ValueError(
          f"Image size {h}×{w} is not a multiple of patch_size={p}; crop "
          "or resize views to multiples of the patch size.")
    grid_hw = (h // p, w // p)
    patches = PatchEmbed(self.width, p, frozen=self.frozen_patch_embed,
                         dtype=self.dtype, name="patch_embed")(x)
    cls = self.param("cls_token", nn.initializers.normal(1e-6),
                     (1, 1, self.width))
    table = self._pos_table()
    pos = jnp.concatenate([table[:1], resample_pos_embed(
        table[1:], self.native_grid, grid_hw)])
    tokens = jnp.concatenate(
        [jnp.broadcast_to(cls, (b, 1, self.width)).astype(self.dtype),
         patches.reshape(b, -1, self.width)], axis=1)
    tokens = tokens + pos.astype(self.dtype)
    intermediates = {"stem": _to_grid(tokens, grid_hw)}
    rates = np.linspace(0.0, self.drop_path_rate, self.depth)
    for j in range(self.depth):
      tokens = Block(self.num_heads, self.mlp_ratio, float(rates[j]),
                     dtype=self.dtype, name=f"block{j + 1}")(tokens, train)
      name = f"stage1_block{j + 1}"
      intermediates[name] = _Grid(grid_hw, name=name)(tokens)
    tokens = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype,
                          name="norm")(tokens)
    if self.pooling == "cls":
      features = tokens[:, 0]
    else:
      features = jnp.mean(tokens[:, 1:].astype(jnp.float32), axis=1)
    return features.astype(jnp.float32), intermediates


def vit(size: str, *, patch_size: int, image_size: int, **kw: Any) -> ViT:
  """Builds a standard-size ViT.

  Args:
    size: "tiny", "small", "base", "large" or "micro" (tests; see
      VIT_SIZES).
    patch_size: p (16 for 224 px; 4 or 8 for 32 px).
    image_size: native input size S, a multiple of p.
    **kw: other ViT fields (mlp_ratio, pos_embed, pooling, drop_path_rate,
      frozen_patch_embed, dtype, name).

  Returns:
    An unbound ViT; its pooled output has VIT_SIZES[size][0] channels.
  """
  check_choice("size", size, list(VIT_SIZES))
  width, depth, heads = VIT_SIZES[size]
  return ViT(width=width, depth=depth, num_heads=heads,
             patch_size=patch_size, image_size=image_size, **kw)
