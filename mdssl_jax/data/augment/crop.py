"""Random resized crop with torchvision semantics, from uniforms.

The window rule is torchvision's ``RandomResizedCrop.get_params``: area
fraction and log-uniform aspect ratio, 10 attempts, then a central crop at
the closest allowed ratio. The window is resampled with the antialiased
Keys bicubic kernel of ``tf.image.resize(..., "bicubic", antialias=True)``.
:func:`crop_resize` does it for a batch of equally sized images (as matrix
products); :func:`random_resized_crop` for one image of any size inside a
tf.data map (decoded JPEGs of streamed datasets).
"""

from __future__ import annotations

import math
from typing import Sequence

import tensorflow as tf

from mdssl_jax.data.augment import ops
from mdssl_jax.data.augment import slots


def _attempts(u: tf.Tensor, h, w, area: tuple[float, float],
              aspect: tuple[float, float]):
  """The 10 candidate windows: (crop_h, crop_w, ok) each [B, 10]."""
  target = h * w * (area[0] + (area[1] - area[0]) * u[:, slots.AREA])
  lo, hi = math.log(aspect[0]), math.log(aspect[1])
  ratio = tf.exp(lo + (hi - lo) * u[:, slots.RATIO])
  cw = tf.round(tf.sqrt(target * ratio))
  ch = tf.round(tf.sqrt(target / ratio))
  ok = (cw >= 1) & (ch >= 1) & (cw <= w) & (ch <= h)
  return ch, cw, ok


def _place(u: tf.Tensor, found: tf.Tensor, h, w, ch: tf.Tensor,
           cw: tf.Tensor):
  """Top-left corner: uniform for a found window, else central."""
  top = tf.where(found, tf.floor(u[:, slots.TOP] * (h - ch + 1)),
                 tf.floor((h - ch) / 2))
  left = tf.where(found, tf.floor(u[:, slots.LEFT] * (w - cw + 1)),
                  tf.floor((w - cw) / 2))
  return tf.minimum(top, h - ch), tf.minimum(left, w - cw), ch, cw


def crop_windows(u: tf.Tensor, height: int, width: int,
                 area: tuple[float, float], aspect: tuple[float, float]):
  """torchvision RandomResizedCrop.get_params for a batch, from uniforms.

  Args:
    u: [B, NUM_UNIFORMS] uniforms.
    height, width: source image size.
    area: (min, max) area fraction.
    aspect: (min, max) aspect ratio w/h, sampled log-uniformly.

  Returns:
    (top, left, crop_h, crop_w): [B] float32 integer-valued windows.
  """
  h, w = float(height), float(width)
  ch, cw, ok = _attempts(u, h, w, area, aspect)
  first = tf.argmax(tf.cast(ok, tf.int32), axis=1, output_type=tf.int32)
  found = tf.reduce_any(ok, axis=1)
  ch = tf.where(found, tf.gather(ch, first, batch_dims=1), 0.0)
  cw = tf.where(found, tf.gather(cw, first, batch_dims=1), 0.0)
  # Fallback after 10 misses: central crop at the closest allowed ratio.
  in_ratio = w / h
  if in_ratio < aspect[0]:
    fw, fh = w, float(round(w / aspect[0]))
  elif in_ratio > aspect[1]:
    fw, fh = float(round(h * aspect[1])), h
  else:
    fw, fh = w, h
  ch = tf.where(found, ch, fh)
  cw = tf.where(found, cw, fw)
  return _place(u, found, h, w, ch, cw)


def crop_windows_dynamic(u: tf.Tensor, height: tf.Tensor, width: tf.Tensor,
                         area: tuple[float, float],
                         aspect: tuple[float, float]):
  """:func:`crop_windows` for per-image (run-time) sizes.

  Args:
    u: [B, NUM_UNIFORMS] uniforms.
    height, width: [B] source sizes (any numeric dtype).
    area: (min, max) area fraction.
    aspect: (min, max) aspect ratio w/h, sampled log-uniformly.

  Returns:
    (top, left, crop_h, crop_w): [B] float32 integer-valued windows.
  """
  h = tf.cast(height, tf.float32)[:, None]
  w = tf.cast(width, tf.float32)[:, None]
  ch, cw, ok = _attempts(u, h, w, area, aspect)
  first = tf.argmax(tf.cast(ok, tf.int32), axis=1, output_type=tf.int32)
  found = tf.reduce_any(ok, axis=1)
  h, w = h[:, 0], w[:, 0]
  ch = tf.gather(ch, first, batch_dims=1)
  cw = tf.gather(cw, first, batch_dims=1)
  # Fallback after 10 misses: central crop at the closest allowed ratio.
  in_ratio = w / h
  fw = tf.where(in_ratio > aspect[1], tf.round(h * aspect[1]), w)
  fh = tf.where(in_ratio < aspect[0], tf.round(w / aspect[0]), h)
  ch = tf.where(found, ch, fh)
  cw = tf.where(found, cw, fw)
  return _place(u, found, h, w, ch, cw)


def _keys_cubic(x: tf.Tensor) -> tf.Tensor:
  """Keys cubic kernel with a = −0.5 (TF's "bicubic"), support [−2, 2]."""
  x = tf.abs(x)
  near = ((1.5 * x - 2.5) * x) * x + 1.0
  far = ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0
  return tf.where(x < 1.0, near, tf.where(x < 2.0, far, 0.0))


def _resample_matrix(start: tf.Tensor, length: tf.Tensor, size: int,
                     out_size: int) -> tf.Tensor:
  """Rows of weights that resample a window of an axis to out_size samples.

  Matches tf.image.resize(method="bicubic", antialias=True) applied to the
  cropped window: Keys cubic kernel stretched by max(1, length/out_size)
  when downsampling, taps outside the window dropped and weights
  renormalised.

  Args:
    start: [B] window start (integer-valued float).
    length: [B] window length (>= 1).
    size: full axis length.
    out_size: number of output samples.

  Returns:
    [B, out_size, size] float32 weights.
  """
  scale = length / out_size  # Input pixels per output pixel.
  kernel_scale = tf.maximum(scale, 1.0)[:, None, None]
  centre = (tf.range(out_size, dtype=tf.float32)[None] + 0.5) * scale[:, None]
  pos = tf.range(size, dtype=tf.float32)[None, None] - start[:, None, None]
  weights = _keys_cubic((pos + 0.5 - centre[:, :, None]) / kernel_scale)
  inside = (pos >= 0) & (pos < length[:, None, None])
  weights = tf.where(inside, weights, 0.0)
  total = tf.reduce_sum(weights, axis=2, keepdims=True)
  return weights / tf.where(tf.abs(total) > 1e-6, total, 1.0)


def crop_resize(images: tf.Tensor, u: tf.Tensor, h: int, w: int,
                out_size: int, area: tuple[float, float],
                aspect: tuple[float, float]) -> tf.Tensor:
  """Random resized crops of [B, h, w, 3] uint8 -> [B, s, s, 3] in [0, 1]."""
  top, left, ch, cw = crop_windows(u, h, w, area, aspect)
  rows = _resample_matrix(top, ch, h, out_size)  # [B, s, H]
  cols = _resample_matrix(left, cw, w, out_size)  # [B, s, W]
  x = tf.cast(images, tf.float32) / 255.0
  x = tf.einsum("bih,bhwc->biwc", rows, x)
  x = tf.einsum("bjw,biwc->bijc", cols, x)
  return tf.clip_by_value(x, 0.0, 1.0)


def random_resized_crop(image_uint8: tf.Tensor, uniforms: tf.Tensor, *,
                        out_size: int, crop_area: Sequence[float],
                        aspect: Sequence[float]) -> tf.Tensor:
  """The random resized crop of ``augment_batch`` for one image of any size.

  Same window rule (torchvision semantics, same uniform slots) and the same
  antialiased bicubic resampling as the vectorised crop, but the source size
  is read at run time, so it works inside tf.data maps on decoded JPEGs of
  varying size. Pair it with ``augment_cropped_batch``.

  Args:
    image_uint8: [h, w, 3] uint8 (h, w may be unknown until run time).
    uniforms: [NUM_UNIFORMS] float32 in [0, 1), the view's randomness.
    out_size: output side s.
    crop_area: (min, max) crop area as a fraction of the image.
    aspect: (min, max) crop aspect ratio w/h, sampled log-uniformly.

  Returns:
    [out_size, out_size, 3] float32 in [0, 1].
  """
  area = ops.check_range("crop_area", crop_area, 1e-6, 1.0)
  ratio = ops.check_range("aspect", aspect, 1e-3, 1e3)
  image = tf.convert_to_tensor(image_uint8)
  if image.shape.rank != 3 or image.dtype != tf.uint8:
    raise ValueError(f"random_resized_crop expects one uint8 [h, w, 3] image, "
                     f"got {image.dtype.name} {image.shape}.")
  shape = tf.shape(image)
  u = tf.reshape(tf.convert_to_tensor(uniforms, tf.float32),
                 [1, slots.NUM_UNIFORMS])
  top, left, ch, cw = (tf.cast(t[0], tf.int32) for t in crop_windows_dynamic(
      u, shape[:1], shape[1:2], area, ratio))
  window = image[top:top + ch, left:left + cw]
  x = tf.image.resize(tf.cast(window, tf.float32) / 255.0,
                      (out_size, out_size), method="bicubic", antialias=True)
  return tf.ensure_shape(tf.clip_by_value(x, 0.0, 1.0),
                         (out_size, out_size, 3))
