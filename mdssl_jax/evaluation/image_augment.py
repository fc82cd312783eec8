"""Random resized crop + horizontal flip in JAX, for evaluation training.

Synopsis::

  views = crop_flip(key, images)  # [b, H, W, C] -> [b, H, W, C], jittable

The RELICv2 linear-evaluation and fine-tuning training transform (D.1,
D.2): torchvision's RandomResizedCrop window rule (area fraction uniform
in `scale`, aspect ratio log-uniform in `ratio`, up to 10 tries, else the
largest centred window with the ratio clipped to the image's) followed by
a flip with probability 1/2. Windows are continuous (sub-pixel) and
resampled to the input size with antialiased bilinear
`jax.image.scale_and_translate`. It runs on the already eval-transformed,
normalised float images: bilinear resampling commutes with the per-channel
affine normalisation, so the result equals normalising cropped images.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SCALE = (0.08, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)
# torchvision's number of window draws before the centred fallback.
_TRIES = 10


def crop_windows(key: jax.Array, batch: int, height: int, width: int,
                 scale: tuple[float, float] = SCALE,
                 ratio: tuple[float, float] = RATIO) -> jax.Array:
  """Random-resized-crop windows, torchvision's rule.

  Args:
    key: PRNG key.
    batch: number of windows b.
    height: image height H.
    width: image width W.
    scale: (min, max) window area as a fraction of H·W.
    ratio: (min, max) window aspect ratio w/h.

  Returns:
    [b, 4] float32 (top, left, h, w), inside [0, H] × [0, W].
  """
  k_area, k_ratio, k_y, k_x = jax.random.split(key, 4)
  area = height * width * jax.random.uniform(
      k_area, (batch, _TRIES), minval=scale[0], maxval=scale[1])
  log_r = jax.random.uniform(k_ratio, (batch, _TRIES),
                             minval=jnp.log(ratio[0]),
                             maxval=jnp.log(ratio[1]))
  aspect = jnp.exp(log_r)
  w = jnp.sqrt(area * aspect)
  h = jnp.sqrt(area / aspect)
  fits = (w <= width) & (h <= height)
  first = jnp.argmax(fits, axis=1)  # First try that fits (0 if none).
  any_fit = jnp.any(fits, axis=1)
  rows = jnp.arange(batch)
  h, w = h[rows, first], w[rows, first]
  # Fallback: the whole image with the ratio clipped into `ratio`.
  in_ratio = width / height
  fb_w = jnp.where(in_ratio < ratio[0], width, jnp.where(
      in_ratio > ratio[1], height * ratio[1], width))
  fb_h = jnp.where(in_ratio < ratio[0], width / ratio[0], jnp.where(
      in_ratio > ratio[1], height, height))
  h = jnp.where(any_fit, h, fb_h)
  w = jnp.where(any_fit, w, fb_w)
  top = jax.random.uniform(k_y, (batch,)) * (height - h)
  left = jax.random.uniform(k_x, (batch,)) * (width - w)
  top = jnp.where(any_fit, top, (height - h) / 2)
  left = jnp.where(any_fit, left, (width - w) / 2)
  return jnp.stack([top, left, h, w], axis=1).astype(jnp.float32)


def _resample(image: jax.Array, window: jax.Array) -> jax.Array:
  """The window (top, left, h, w) of image [H, W, C], resized to [H, W, C]."""
  height, width = image.shape[0], image.shape[1]
  top, left, h, w = window[0], window[1], window[2], window[3]
  scale = jnp.stack([height / h, width / w])
  translation = -jnp.stack([top, left]) * scale
  return jax.image.scale_and_translate(
      image, image.shape, (0, 1), scale, translation, method="bilinear",
      antialias=True)


def crop_flip(key: jax.Array, images: jax.Array,
              scale: tuple[float, float] = SCALE,
              ratio: tuple[float, float] = RATIO) -> jax.Array:
  """Random resized crop (output size = input size) and random flip.

  Args:
    key: PRNG key; the same key gives the same views.
    images: [b, H, W, C] float images.
    scale: (min, max) window area fraction (RELICv2: (0.08, 1)).
    ratio: (min, max) window aspect ratio (3/4, 4/3).

  Returns:
    [b, H, W, C] float32 views.
  """
  b, height, width = images.shape[:3]
  k_win, k_flip = jax.random.split(key)
  windows = crop_windows(k_win, b, height, width, scale, ratio)
  views = jax.vmap(_resample)(images.astype(jnp.float32), windows)
  flip = jax.random.bernoulli(k_flip, 0.5, (b,))
  return jnp.where(flip[:, None, None, None], views[:, :, ::-1], views)
