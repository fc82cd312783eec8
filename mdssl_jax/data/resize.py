"""Bringing images and masks to the common square size S = image_size.

Synopsis::

  images = resize.fit_images(uint8_nhwc, 32, "pad")   # [N, 32, 32, 3] uint8
  masks = resize.fit_masks(masks_nhw, 32, "pad", what="masks.npz")
  image = resize.fit_image_tf(tf_hwc_uint8, 32, "resize")  # in tf.data

Grey is repeated to 3 channels (alpha dropped). With ``mode="pad"`` images
no larger than S are zero-padded centrally (28 -> 32 pads 2 px per side);
otherwise (and for larger images) the central square is resized with
antialiased bilinear interpolation. The NumPy functions work on whole
arrays (npz, demo); the ``*_tf`` ones on one example inside tf.data (TFDS).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mdssl_jax.data.domain import RESIZE_MODES

_CHUNK = 1024  # Images per tf.image.resize call: bounds peak memory.


def _resize_square(x: np.ndarray, size: int) -> np.ndarray:
  """Central square of [N, H, W, C] resized to [N, size, size, C]."""
  n, h, w = x.shape[:3]
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  x = x[:, top:top + side, left:left + side]
  out = np.empty((n, size, size) + x.shape[3:], x.dtype)
  for start in range(0, n, _CHUNK):
    chunk = tf.image.resize(x[start:start + _CHUNK].astype(np.float32),
                            (size, size), method="bilinear", antialias=True)
    chunk = chunk.numpy()
    if x.dtype == np.uint8:
      chunk = np.clip(np.round(chunk), 0, 255)
    out[start:start + _CHUNK] = chunk.astype(x.dtype)
  return out


def _fit_batch(x: np.ndarray, size: int, mode: str) -> np.ndarray:
  """Brings [N, H, W, C] arrays to [N, size, size, C] (same dtype).

  Pads centrally with zeros when mode == "pad" and the image fits; otherwise
  resizes the central square with antialiased bilinear interpolation.
  """
  n, h, w = x.shape[:3]
  if h == size and w == size:
    return x
  if mode == "pad" and h <= size and w <= size:
    top, left = (size - h) // 2, (size - w) // 2
    out = np.zeros((n, size, size) + x.shape[3:], x.dtype)
    out[:, top:top + h, left:left + w] = x
    return out
  return _resize_square(x, size)


def fit_images(images: np.ndarray, size: int, mode: str = "pad",
               *, what: str = "images") -> np.ndarray:
  """Brings uint8 images to [N, size, size, 3] uint8.

  Args:
    images: [N, H, W], [N, H, W, 1], [N, H, W, 3] or [N, H, W, 4] (alpha is
      dropped) uint8.
    size: output side S.
    mode: "pad" (zero-pad centrally when the image fits) or "resize".
    what: name used in error messages (e.g. the file name).

  Returns:
    [N, S, S, 3] uint8.
  """
  if images.dtype != np.uint8:
    raise ValueError(f"{what}: images must be uint8 (0-255), got "
                     f"{images.dtype}; convert with "
                     "np.clip(x * 255, 0, 255).astype(np.uint8) or similar.")
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
    raise ValueError(f"{what}: images must be [N, H, W, C] with C in "
                     f"(1, 3, 4), got shape {images.shape}.")
  if mode not in RESIZE_MODES:
    raise ValueError(f"resize={mode!r}; use one of {list(RESIZE_MODES)}.")
  images = images[..., :3]
  out = _fit_batch(images, size, mode)
  if out.shape[-1] == 1:
    out = np.repeat(out, 3, axis=-1)
  return out


def fit_masks(masks: np.ndarray, size: int, mode: str,
              what: str) -> np.ndarray:
  """Saliency masks to [N, size, size] float32 in [0, 1], like the images.

  Args:
    masks: [N, H, W] (or [N, H, W, 1]) bool, uint8 0/1 or 0/255, or float
      in [0, 1].
    size: output side S.
    mode: "pad" or "resize" (as for the images they belong to).
    what: name used in error messages (e.g. the file name).

  Returns:
    [N, S, S] float32.
  """
  if masks.ndim == 4 and masks.shape[-1] == 1:
    masks = masks[..., 0]
  if masks.ndim != 3:
    raise ValueError(f"{what}: 'masks' must be [N, H, W], got shape "
                     f"{masks.shape}.")
  if masks.dtype == bool:
    masks = masks.astype(np.float32)
  elif masks.dtype == np.uint8:
    masks = masks.astype(np.float32) / (255.0 if masks.max(initial=0) > 1
                                        else 1.0)
  else:
    masks = masks.astype(np.float32)
    if masks.size and (masks.min() < 0 or masks.max() > 1):
      raise ValueError(f"{what}: float masks must lie in [0, 1], got range "
                       f"[{masks.min()}, {masks.max()}].")
  return _fit_batch(masks[..., None], size, mode)[..., 0]


# ----------------------------------------------------------------------------
# Per example, in tf.data
# ----------------------------------------------------------------------------


def _to_rgb_tf(image: tf.Tensor) -> tf.Tensor:
  """[h, w], [h, w, 1], [h, w, 3] or [h, w, 4] -> [h, w, 3]."""
  if image.shape.rank == 2:
    image = image[..., None]
  channels = image.shape[-1]
  if channels == 1:
    return tf.tile(image, [1, 1, 3])
  if channels is None:
    return tf.cond(tf.shape(image)[-1] == 1,
                   lambda: tf.tile(image, [1, 1, 3]),
                   lambda: image[..., :3])
  return image[..., :3]


def _fit_tf(image: tf.Tensor, size: int, mode: str, resize_fn) -> tf.Tensor:
  """Pads (mode "pad", image fits) or resizes an [h, w, c] tensor."""
  h, w = tf.shape(image)[0], tf.shape(image)[1]

  def crop_resize():
    side = tf.minimum(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return resize_fn(image[top:top + side, left:left + side])

  fits = tf.logical_and(h <= size, w <= size)
  exact = tf.logical_and(tf.equal(h, size), tf.equal(w, size))
  if mode == "pad":
    return tf.cond(fits, lambda: tf.image.resize_with_crop_or_pad(
        image, size, size), crop_resize)
  return tf.cond(exact, lambda: image, crop_resize)


def fit_image_tf(image: tf.Tensor, size: int, mode: str) -> tf.Tensor:
  """Per-example :func:`fit_images`: [h, w(, c)] uint8 -> [S, S, 3] uint8."""
  image = _to_rgb_tf(tf.convert_to_tensor(image))

  def resize(square):
    out = tf.image.resize(tf.cast(square, tf.float32), (size, size),
                          method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

  return tf.ensure_shape(_fit_tf(image, size, mode, resize),
                         (size, size, 3))


def fit_mask_tf(mask: tf.Tensor, size: int, mode: str) -> tf.Tensor:
  """:func:`fit_image_tf` for one [h, w(, 1)] mask -> [S, S] float32."""
  mask = mask_to_unit_tf(mask)[..., None]

  def resize(square):
    return tf.image.resize(square, (size, size), method="bilinear",
                           antialias=True)

  out = _fit_tf(mask, size, mode, resize)
  return tf.ensure_shape(tf.clip_by_value(out, 0.0, 1.0)[..., 0],
                         (size, size))


def mask_to_unit_tf(mask: tf.Tensor) -> tf.Tensor:
  """[h, w] or [h, w, 1] mask (0/1, 0/255, bool or float) -> [h, w] float32.

  Integer masks whose maximum exceeds 1 are divided by 255 (0/255 PNGs).
  """
  mask = tf.convert_to_tensor(mask)
  if mask.shape.rank == 3:
    mask = mask[..., 0]
  if mask.dtype.is_integer or mask.dtype == tf.bool:
    mask = tf.cast(mask, tf.float32)
    mask = mask / tf.where(tf.reduce_max(mask) > 1.0, 255.0, 1.0)
  return tf.cast(mask, tf.float32)


def pad_small_tf(image: tf.Tensor, size: int, mode: str) -> tf.Tensor:
  """In "pad" mode, zero-pads an [h, w, c] image no larger than S to S."""
  if mode != "pad":
    return image
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  fits = tf.logical_and(h <= size, w <= size)
  return tf.cond(fits,
                 lambda: tf.image.resize_with_crop_or_pad(image, size, size),
                 lambda: image)
