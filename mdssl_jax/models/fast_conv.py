"""2-D convolution whose kernel gradient is one matrix product (issue #5).

Synopsis::

  conv_cls = get_conv(config.model.conv_impl)  # "xla", "matmul" or "auto"
  model = resnet(18, stem="cifar", conv=conv_cls)  # same parameters as nn.Conv
  y = FastConv(64, (3, 3), padding=((1, 1), (1, 1)))(x)  # x: [B, H, W, C]

Why: XLA:CPU runs a convolution's forward pass and its input gradient (a
convolution of dY with the flipped kernel) at close to matmul speed, but
its kernel gradient is a convolution whose "window" is the whole H×W image
and whose output is only kh×kw, which runs several times slower and
dominated the backward pass of a ResNet-18 SimCLR step (benchmarks/
RESULTS.md).

`FastConv` keeps XLA's convolution for the forward pass and the input
gradient, and computes the kernel gradient
dW[i, j, c, o] = Σ_{n,h,w} x_pad[n, s·h + i, s·w + j, c] · dY[n, h, w, o]
as one GEMM over stacked taps:

* stride 1 ("tap shifting"): the kw horizontal taps of the padded input are
  laid side by side, xw[n, h, w, (j, c)] = x_pad[n, h, w + j, c] (kw× the
  input), and the kh vertical taps are applied to dY instead, shifted down
  by i rows inside each image, d[n, h, w, (i, o)] = dY[n, h − i, w, o]
  (kh× dY). One [R, kw·C]ᵀ × [R, kh·F] product over R = N·(Ho+kh−1)·Wo rows
  yields all kh·kw taps: 3× + 3× the activations for a 3×3 kernel instead
  of the 9× of a full im2col.
* stride > 1, 1×1 kernels, maps of < 8 rows and narrow inputs (kw·C < 64,
  e.g. an RGB stem): full im2col of the strided taps (2.25× the input for a
  3×3/2 conv, a subsample for 1×1/2), then one [M, kh·kw·C]ᵀ × [M, F]
  product.

Taps are stacked as a sum of zero-padded slices cut straight from x and dY,
which XLA fuses into one elementwise loop per operand; `jnp.concatenate` of
slices of a padded copy was slower (separate copies plus a concatenation).
kernel_grad="auto" is the measured best choice: today the GEMM on every
layer (with host memory kept, see mdssl_jax/host_memory.py, it beat XLA's
kernel gradient on every ResNet-18 CIFAR layer of benchmarks/RESULTS.md,
from 1.2× on 4×4 maps to 14× on 32×32×64).

Parameters are exactly nn.Conv's ("kernel" [kh, kw, in, out], optional
"bias" [out]), so checkpoints move freely between `conv_impl`s.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Padding2D = tuple[tuple[int, int], tuple[int, int]]
PaddingLike = str | int | Sequence[int | tuple[int, int]]

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")

KERNEL_GRAD_MODES = ("auto", "gemm", "xla")

# Tap shifting pads the rows of each image from Ho to Ho + kh - 1; on small
# maps that overhead (1.5× at 4×4) makes im2col the better GEMM layout.
_MIN_ROWS_FOR_SHIFTING = 8
# Narrow inputs (a 3-channel stem: 3 × 3 = 9 stacked columns) make a poor
# GEMM; im2col's kh·kw·C columns (27) measured 1.5× faster there.
_MIN_COLUMNS_FOR_SHIFTING = 64


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
  if isinstance(value, int):
    return (value, value)
  value = tuple(value)
  if len(value) != 2 or not all(isinstance(v, int) for v in value):
    raise ValueError(
        f"{name} must be an int or a pair of ints for a 2-D convolution, "
        f"got {value!r}.")
  return value  # type: ignore[return-value]


def resolve_padding(
    padding: PaddingLike,
    input_hw: tuple[int, int],
    kernel_hw: tuple[int, int],
    strides: tuple[int, int],
) -> Padding2D:
  """Turns nn.Conv-style padding into explicit ((top, bottom), (left, right)).

  Args:
    padding: "SAME", "VALID", an int (all sides), or two ints / (lo, hi) pairs
      (one per spatial dim). "CIRCULAR"/"REFLECT" are handled by `FastConv`
      before this call.
    input_hw: (H, W) of the input.
    kernel_hw: (kh, kw).
    strides: (sh, sw).

  Returns:
    ((top, bottom), (left, right)) as Python ints.
  """
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      raise ValueError(
          f"Unsupported padding {padding!r}; use 'SAME', 'VALID', "
          "'CIRCULAR', 'REFLECT', an int, or ((top, bottom), (left, right)).")
    pads = lax.padtype_to_pads(input_hw, kernel_hw, strides, padding.upper())
    return tuple((int(lo), int(hi)) for lo, hi in pads)  # type: ignore
  if isinstance(padding, int):
    return ((padding, padding), (padding, padding))
  padding = tuple(padding)
  if len(padding) != 2:
    raise ValueError(
        f"Explicit padding needs one entry per spatial dim (2), got "
        f"{padding!r}; write e.g. ((1, 1), (1, 1)).")
  out = []
  for p in padding:
    if isinstance(p, int):
      out.append((p, p))
    elif isinstance(p, Sequence) and len(p) == 2:
      out.append((int(p[0]), int(p[1])))
    else:
      raise ValueError(
          f"Invalid padding entry {p!r} in {padding!r}; each entry must be "
          "an int or a (low, high) pair.")
  return tuple(out)  # type: ignore[return-value]


def _xla_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
              padding: Padding2D, precision: Any) -> jax.Array:
  return lax.conv_general_dilated(
      x, kernel, strides, padding, dimension_numbers=_DIMENSION_NUMBERS,
      precision=precision)


def _stack_taps(taps: Sequence[jax.Array]) -> jax.Array:
  """Stacks equal-shape [..., C] arrays into [..., T, C].

  Written as a sum of zero-padded slices so XLA fuses the whole stack into
  one elementwise loop instead of copies plus a concatenation.
  """
  if len(taps) == 1:
    return taps[0][..., None, :]
  n = len(taps)
  lead = [(0, 0, 0)] * (taps[0].ndim - 1)
  return functools.reduce(operator.add, (
      lax.pad(t[..., None, :], jnp.zeros((), t.dtype),
              lead + [(k, n - 1 - k, 0), (0, 0, 0)])
      for k, t in enumerate(taps)))


def _tn_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
  """aᵀ @ b for a [R, P], b [R, Q] -> float32 [P, Q]."""
  return lax.dot_general(a, b, (((0,), (0,)), ((), ())),
                         preferred_element_type=jnp.float32)


def _pad_crop(x: jax.Array, rows: tuple[int, int],
              cols: tuple[int, int]) -> jax.Array:
  """Zero-pads (or crops, for negative values) the H and W axes of NHWC x."""
  return lax.pad(x, jnp.zeros((), x.dtype),
                 [(0, 0, 0), (*rows, 0), (*cols, 0), (0, 0, 0)])


def _kernel_grad_shifted(x: jax.Array, dy: jax.Array, kernel_hw: tuple[int,
                                                                      int],
                         padding: Padding2D) -> jax.Array:
  """Stride-1 kernel gradient by tap shifting (see module docstring).

  With x_pad of H_pad = Ho + kh - 1 rows:
    xw[n, h, w, (j, c)] = x_pad[n, h, w + j, c]   for h < H_pad, w < Wo,
    d[n, h, w, (i, o)] = dY[n, h - i, w, o]        (0 outside the image),
  and Σ_{n,h,w} xw · d = Σ x_pad[n, h + i, w + j, c] dY[n, h, w, o] = dW.
  Taps are cut straight from x and dY (pads with negative crops) so XLA
  fuses each side into one loop without materialising x_pad.
  """
  kh, kw = kernel_hw
  (pt, pb), (pl, pr) = padding
  n, _, _, c = x.shape
  _, ho, wo, f = dy.shape
  hp = ho + kh - 1
  xw = _stack_taps([_pad_crop(x, (pt, pb), (pl - j, pr - (kw - 1 - j)))
                    for j in range(kw)])
  d = _stack_taps([_pad_crop(dy, (i, kh - 1 - i), (0, 0))
                   for i in range(kh)])
  rows = n * hp * wo
  g = _tn_matmul(xw.reshape(rows, kw * c), d.reshape(rows, kh * f))
  return g.reshape(kw, c, kh, f).transpose(2, 0, 1, 3)  # [(j,c),(i,o)]


def _kernel_grad_im2col(x: jax.Array, dy: jax.Array,
                        kernel_hw: tuple[int, int], strides: tuple[int, int],
                        padding: Padding2D) -> jax.Array:
  """Kernel gradient from the full im2col of strided taps."""
  kh, kw = kernel_hw
  sh, sw = strides
  (pt, _), (pl, _) = padding
  n, h, w, c = x.shape
  _, ho, wo, f = dy.shape
  span_h, span_w = sh * (ho - 1) + 1, sw * (wo - 1) + 1

  def tap(i: int, j: int) -> jax.Array:
    # x_pad[:, i:i + span_h:sh, j:j + span_w:sw] without building x_pad.
    t = _pad_crop(x, (pt - i, span_h - (h + pt - i)),
                  (pl - j, span_w - (w + pl - j)))
    return t[:, ::sh, ::sw]

  patches = _stack_taps([tap(i, j) for i in range(kh) for j in range(kw)])
  m = n * ho * wo
  g = _tn_matmul(patches.reshape(m, kh * kw * c), dy.reshape(m, f))
  return g.reshape(kh, kw, c, f)


def conv_kernel_grad(
    x: jax.Array,
    dy: jax.Array,
    *,
    kernel_hw: tuple[int, int],
    strides: tuple[int, int],
    padding: Padding2D,
) -> jax.Array:
  """Gradient of a 2-D NHWC convolution with respect to its kernel.

  Args:
    x: [N, H, W, C] convolution input.
    dy: [N, Ho, Wo, F] cotangent of the convolution output.
    kernel_hw: (kh, kw).
    strides: (sh, sw).
    padding: ((top, bottom), (left, right)); negative values crop.

  Returns:
    float32 [kh, kw, C, F], equal to the kernel cotangent of
    `lax.conv_general_dilated(x, kernel, strides, padding)`.
  """
  kernel_hw = tuple(kernel_hw)
  if (tuple(strides) == (1, 1) and kernel_hw != (1, 1)
      and dy.shape[1] >= _MIN_ROWS_FOR_SHIFTING
      and kernel_hw[1] * x.shape[-1] >= _MIN_COLUMNS_FOR_SHIFTING):
    return _kernel_grad_shifted(x, dy, kernel_hw, padding)
  return _kernel_grad_im2col(x, dy, kernel_hw, tuple(strides), padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def fast_conv2d(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                padding: Padding2D, precision: Any = None,
                kernel_grad: str = "auto") -> jax.Array:
  """NHWC/HWIO convolution with XLA's forward and a GEMM kernel gradient.

  Args:
    x: [N, H, W, C] input.
    kernel: [kh, kw, C, F] kernel, same dtype as x.
    strides: (sh, sw) Python ints.
    padding: ((top, bottom), (left, right)) Python ints.
    precision: passed to `lax.conv_general_dilated` (None = default).
    kernel_grad: "auto" or "gemm" (`conv_kernel_grad`; "auto" is the
      measured best choice, today the same as "gemm") or "xla" (XLA's own
      kernel gradient).

  Returns:
    [N, Ho, Wo, F], identical to `lax.conv_general_dilated`; only the
    kernel gradient of the backward pass differs. Being a `custom_vjp`,
    it supports reverse-mode differentiation only (no `jax.jvp`).
  """
  return _xla_conv(x, kernel, strides, padding, precision)


def _fast_conv2d_fwd(x, kernel, strides, padding, precision, kernel_grad):
  del kernel_grad  # Only used in the backward pass.
  y = _xla_conv(x, kernel, strides, padding, precision)
  return y, (x, kernel)


def _fast_conv2d_bwd(strides, padding, precision, kernel_grad, residuals,
                     dy):
  x, kernel = residuals
  conv_x = lambda x_: _xla_conv(x_, kernel, strides, padding, precision)
  if kernel_grad == "xla":
    _, vjp = jax.vjp(
        lambda x_, k_: _xla_conv(x_, k_, strides, padding, precision),
        x, kernel)
    return vjp(dy)
  # The input gradient is a plain convolution of dY, which XLA does well;
  # the forward convolution traced by vjp is dead code and gets removed.
  (dx,) = jax.vjp(conv_x, x)[1](dy)
  dw = conv_kernel_grad(x, dy, kernel_hw=kernel.shape[:2], strides=strides,
                        padding=padding)
  return dx, dw.astype(kernel.dtype)


fast_conv2d.defvjp(_fast_conv2d_fwd, _fast_conv2d_bwd)


class FastConv(nn.Module):
  """Drop-in 2-D `nn.Conv` whose kernel gradient is a single GEMM.

  Same constructor fields (for the 2-D, ungrouped, undilated case) and the
  same parameters as `flax.linen.Conv`; the forward output is bit-identical
  to nn.Conv's, the gradients agree to float32 rounding.

  Attributes:
    features: number of output channels F.
    kernel_size: int or (kh, kw).
    strides: int or (sh, sw).
    padding: "SAME", "VALID", "CIRCULAR", "REFLECT", an int, or per-dim ints
      or (low, high) pairs, as in nn.Conv.
    use_bias: add a learned bias [F].
    dtype: compute dtype (None: promote input and parameter dtypes).
    param_dtype: dtype of the parameters.
    precision: `lax.Precision` for the forward convolution.
    kernel_init: initializer of "kernel" [kh, kw, C, F].
    bias_init: initializer of "bias" [F].
    kernel_grad: "auto" (the measured best choice, today the GEMM kernel
      gradient on every layer), "gemm" (always) or "xla" (never: plain
      `lax.conv_general_dilated`, exactly what nn.Conv computes, forward-mode
      AD included).
  """
  features: int
  kernel_size: int | Sequence[int]
  strides: int | Sequence[int] = 1
  padding: PaddingLike = "SAME"
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Callable[..., jax.Array] = nn.initializers.lecun_normal()
  bias_init: Callable[..., jax.Array] = nn.initializers.zeros_init()
  kernel_grad: str = "auto"

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    """Applies the convolution.

    Args:
      inputs: [*batch, H, W, C] (NHWC; any number of leading batch dims,
        including none).

    Returns:
      [*batch, Ho, Wo, features].
    """
    if self.kernel_grad not in KERNEL_GRAD_MODES:
      raise ValueError(
          f"Unknown kernel_grad={self.kernel_grad!r}; valid values are "
          f"{list(KERNEL_GRAD_MODES)}.")
    kernel_hw = _pair(self.kernel_size, "kernel_size")
    strides = _pair(self.strides, "strides")
    if min(kernel_hw) < 1 or min(strides) < 1:
      raise ValueError(
          f"kernel_size {kernel_hw} and strides {strides} must be >= 1.")
    if inputs.ndim < 3:
      raise ValueError(
          f"FastConv expects [*batch, H, W, C] inputs, got shape "
          f"{inputs.shape}.")
    batch_shape = inputs.shape[:-3]
    x = inputs.reshape((-1,) + inputs.shape[-3:])

    padding = self.padding
    if isinstance(padding, str) and padding.upper() in ("CIRCULAR",
                                                        "REFLECT"):
      mode = {"CIRCULAR": "wrap", "REFLECT": "reflect"}[padding.upper()]
      x = jnp.pad(x, [(0, 0)] + [((k - 1) // 2, k // 2) for k in kernel_hw]
                  + [(0, 0)], mode=mode)
      padding = "VALID"
    pads = resolve_padding(padding, x.shape[1:3], kernel_hw, strides)

    kernel = self.param("kernel", self.kernel_init,
                        kernel_hw + (x.shape[-1], self.features),
                        self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,),
                       self.param_dtype) if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias,
                                              dtype=self.dtype)
    if self.kernel_grad == "xla":
      y = _xla_conv(x, kernel, strides, pads, self.precision)
    else:
      y = fast_conv2d(x, kernel, strides, pads, self.precision,
                      self.kernel_grad)
    if bias is not None:
      y = y + bias
    return y.reshape(batch_shape + y.shape[1:])


CONV_IMPLS: dict[str, type[nn.Module]] = {
    "xla": nn.Conv,
    "matmul": FastConv,
}


def get_conv(name: str) -> type[nn.Module]:
  """Returns the conv module class for a `conv_impl` config string.

  Args:
    name: "xla" (plain `flax.linen.Conv`), "matmul" (`FastConv`: XLA
      forward and input gradient, GEMM kernel gradient where it pays), or
      "auto" ("matmul" when JAX's default backend is the CPU, where it was
      measured; "xla" on GPU/TPU, whose native convolutions it is not meant
      to replace).

  Returns:
    A module class with nn.Conv's constructor fields and parameters.
  """
  if name == "auto":
    name = "matmul" if jax.default_backend() == "cpu" else "xla"
  if name not in CONV_IMPLS:
    raise ValueError(
        f"Unknown conv_impl {name!r}; valid values are "
        f"{sorted(CONV_IMPLS) + ['auto']}.")
  return CONV_IMPLS[name]
