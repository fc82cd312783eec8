"""Batched image ops with per-image parameters (TensorFlow, [B, H, W, 3]).

Colour jitter (torchvision ColorJitter semantics: brightness, contrast,
saturation, hue in a random order; brightness multiplicative as in
torchvision or additive as in TF / deepmind BYOL), grayscale
y = 0.2989 r + 0.5870 g + 0.1140 b, Gaussian blur (symmetric padding),
solarize, normalisation, and the argument checks shared by the public
augmentation functions.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from mdssl_jax.data.augment import slots

_GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)
# x·f with f ~ U[max(0, 1 − a), 1 + a] (torchvision ColorJitter), or x + δ
# with δ ~ U[−a, a] (tf.image.random_brightness, deepmind BYOL, RELICv2).
BRIGHTNESS_MODES = ("multiplicative", "additive")


def check_range(name: str, value: Sequence[float], lo: float,
                hi: float) -> tuple[float, float]:
  """A (min, max) pair with lo <= min <= max <= hi, as floats."""
  if len(value) != 2 or not lo <= value[0] <= value[1] <= hi:
    raise ValueError(f"{name} must be a (min, max) pair with {lo} <= min <= "
                     f"max <= {hi}, got {value!r}.")
  return float(value[0]), float(value[1])


def check_prob(name: str, value: float) -> None:
  if not 0.0 <= value <= 1.0:
    raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}.")


def check_brightness_mode(value: str) -> str:
  """`value` if it is one of BRIGHTNESS_MODES, else ValueError."""
  if value not in BRIGHTNESS_MODES:
    raise ValueError(f"brightness_mode must be one of {BRIGHTNESS_MODES}, "
                     f"got {value!r}.")
  return value


def check_norm(mean: Sequence[float], std: Sequence[float]) -> None:
  if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
    raise ValueError(f"mean/std must be 3 values each (std > 0) in [0, 1] "
                     f"units, got mean={mean!r}, std={std!r}.")


def normalize(x: tf.Tensor, mean: Sequence[float],
              std: Sequence[float]) -> tf.Tensor:
  return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def bcast(v: tf.Tensor, rank: int) -> tf.Tensor:
  """[B] -> [B, 1, ..., 1] with `rank` total dims."""
  return tf.reshape(v, [-1] + [1] * (rank - 1))


def blur_kernel_size(out_size: int, frac: float) -> int:
  """Odd Gaussian kernel side ≈ frac·out_size, at least 3 (23 at 224 px)."""
  k = int(frac * out_size)
  k = k + 1 if k % 2 == 0 else k
  return max(3, k)


def select_rows(cond: tf.Tensor, a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
  """Row-wise a if cond[i] else b for [B, ...] tensors (cond: [B] bool).

  The rank-1 ``Select`` op copies whole rows; it is ~4x cheaper on CPU than
  ``tf.where`` with a broadcast condition.
  """
  return tf.raw_ops.Select(condition=cond, x=a, y=b)


def _luma(x: tf.Tensor) -> tf.Tensor:
  """0.2989 r + 0.5870 g + 0.1140 b: [..., 3] -> [..., 1]."""
  return tf.linalg.matvec(x, tf.constant(_GRAY_WEIGHTS, x.dtype))[..., None]


def to_grayscale(x: tf.Tensor) -> tf.Tensor:
  """y = 0.2989 r + 0.5870 g + 0.1140 b, repeated to 3 channels: [..., 3]."""
  return tf.tile(_luma(x), [1] * (x.shape.rank - 1) + [3])


def solarize(x: tf.Tensor) -> tf.Tensor:
  """x if x < 0.5 else 1 − x, for x in [0, 1]."""
  return tf.where(x < 0.5, x, 1.0 - x)


def gaussian_blur(x: tf.Tensor, sigma: tf.Tensor,
                  kernel_size: int) -> tf.Tensor:
  """Separable Gaussian blur, one σ per image, symmetric padding.

  Symmetric padding keeps a flat image flat (zero padding would darken the
  border).

  Args:
    x: [B, H, W, C] float32.
    sigma: [B] standard deviations in pixels.
    kernel_size: odd kernel side k (clamped so the radius fits the image).

  Returns:
    [B, H, W, C] float32.
  """
  h, w, c = x.shape[1], x.shape[2], x.shape[3]
  radius = min(kernel_size // 2, h, w)
  offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
  kernel = tf.exp(-tf.square(offsets)[None] / (2.0 * tf.square(sigma)[:, None]))
  kernel /= tf.reduce_sum(kernel, axis=1, keepdims=True)  # [B, k]
  # Depthwise conv over a [1, H, W, B*C] stack applies per-image kernels.
  taps = 2 * radius + 1
  vertical = tf.reshape(tf.repeat(tf.transpose(kernel), c, axis=1),
                        [taps, 1, -1, 1])
  horizontal = tf.reshape(vertical, [1, taps, -1, 1])
  stack = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, h, w, -1])
  stack = tf.pad(stack, [[0, 0], [radius, radius], [radius, radius], [0, 0]],
                 mode="SYMMETRIC")
  stack = tf.nn.depthwise_conv2d(stack, vertical, [1, 1, 1, 1], "VALID")
  stack = tf.nn.depthwise_conv2d(stack, horizontal, [1, 1, 1, 1], "VALID")
  return tf.transpose(tf.reshape(stack, [h, w, -1, c]), [2, 0, 1, 3])


def _factor(u: tf.Tensor, strength: float) -> tf.Tensor:
  lo = max(0.0, 1.0 - strength)
  return lo + (1.0 + strength - lo) * u


def _shift_hue(x: tf.Tensor, delta: tf.Tensor) -> tf.Tensor:
  """Rotates the hue of [n, s, s, 3] by delta [n] (fraction of the circle)."""
  hsv = tf.image.rgb_to_hsv(x)
  hue = tf.math.floormod(hsv[..., 0] + bcast(delta, 3), 1.0)
  rgb = tf.image.hsv_to_rgb(tf.stack([hue, hsv[..., 1], hsv[..., 2]], -1))
  return tf.clip_by_value(rgb, 0.0, 1.0)


def _brighten(x: tf.Tensor, u: tf.Tensor, strength: float,
              mode: str) -> tf.Tensor:
  """Brightness of [B, s, s, 3] from one uniform per image u [B]."""
  if mode == "additive":
    delta = strength * (2.0 * u - 1.0)
    return tf.clip_by_value(x + bcast(delta, 4), 0.0, 1.0)
  return tf.clip_by_value(x * bcast(_factor(u, strength), 4), 0.0, 1.0)


def colour_jitter(x: tf.Tensor, u: tf.Tensor, *, brightness: float,
                  contrast: float, saturation: float, hue: float,
                  brightness_mode: str) -> tf.Tensor:
  """torchvision ColorJitter on [B, s, s, 3] in [0, 1], per-image order.

  Args:
    x: [B, s, s, 3] float32 in [0, 1].
    u: [B, NUM_UNIFORMS] the views' uniforms (factors and op order).
    brightness: strength a; "multiplicative": x·f, f ~ U[max(0, 1 − a),
      1 + a]; "additive": x + δ, δ ~ U[−a, a]; then clipped to [0, 1].
    contrast, saturation: factors drawn from U[max(0, 1 − v), 1 + v].
    hue: hue shift drawn from U[−hue, hue] (fraction of the hue circle).
    brightness_mode: one of BRIGHTNESS_MODES.

  Returns:
    [B, s, s, 3] float32 in [0, 1].
  """
  c = bcast(_factor(u[:, slots.CONTRAST], contrast), 4)
  s = bcast(_factor(u[:, slots.SAT], saturation), 4)
  dh = hue * (2.0 * u[:, slots.HUE] - 1.0)

  def blend(a, base, ratio):
    return tf.clip_by_value(ratio * a + (1.0 - ratio) * base, 0.0, 1.0)

  order = tf.argsort(u[:, slots.ORDER], axis=1)  # A random permutation.
  for k in range(4):
    op = order[:, k]
    luma = _luma(x)
    y = select_rows(op == 0, _brighten(x, u[:, slots.BRIGHT], brightness,
                                       brightness_mode), x)
    mean = tf.reduce_mean(luma, axis=(1, 2), keepdims=True)
    y = select_rows(op == 1, blend(x, mean, c), y)
    y = select_rows(op == 2, blend(x, luma, s), y)
    # Hue (HSV round trip) is the costly op: run it only on its rows.
    rows = tf.where(order[:, k] == 3)[:, 0]
    x = tf.tensor_scatter_nd_update(
        y, rows[:, None],
        _shift_hue(tf.gather(x, rows), tf.gather(dh, rows)))
  return x
