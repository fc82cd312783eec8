"""Whole-batch views: crop, flip, jitter, grey, blur, solarize, normalise.

Every op runs on the whole batch at once with per-image parameters read
from the views' uniforms (see ``slots``), which is much cheaper on CPU than
per-image tf.data maps. The graphs are ``tf.function``s cached per (shapes,
parameters), so views and pipelines sharing a parameter column reuse one
trace.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from mdssl_jax.data.augment import crop
from mdssl_jax.data.augment import ops
from mdssl_jax.data.augment import slots

_PROBS = ("flip_p", "jitter_p", "gray_p", "blur_p", "solarize_p")


def _post_crop(x: tf.Tensor, u: tf.Tensor, *, out_size: int,
               sigma: tuple[float, float], flip_p: float, jitter_p: float,
               brightness: float, contrast: float, saturation: float,
               hue: float, brightness_mode: str, gray_p: float,
               blur_p: float, blur_kernel_frac: float, solarize_p: float,
               mean: tuple[float, ...], std: tuple[float, ...]) -> tf.Tensor:
  """Flip, jitter, grey, blur, solarize, normalise: [B, s, s, 3] in [0, 1]."""

  def maybe(slot, p, fn, y):
    if p <= 0.0:
      return y
    if p >= 1.0:
      return fn(y)
    return ops.select_rows(u[:, slot] < p, fn(y), y)

  x = maybe(slots.FLIP, flip_p, lambda y: tf.reverse(y, axis=[2]), x)
  x = maybe(slots.JITTER, jitter_p, lambda y: ops.colour_jitter(
      y, u, brightness=brightness, contrast=contrast, saturation=saturation,
      hue=hue, brightness_mode=brightness_mode), x)
  x = maybe(slots.GRAY, gray_p, ops.to_grayscale, x)
  k = ops.blur_kernel_size(out_size, blur_kernel_frac)
  sig = sigma[0] + (sigma[1] - sigma[0]) * u[:, slots.SIGMA]
  x = maybe(slots.BLUR, blur_p, lambda y: ops.gaussian_blur(y, sig, k), x)
  x = maybe(slots.SOLARIZE, solarize_p, ops.solarize, x)
  return ops.normalize(x, mean, std)


@tf.function(autograph=False, reduce_retracing=True)
def _augment_batch_graph(images: tf.Tensor, u: tf.Tensor, *, height: int,
                         width: int, out_size: int,
                         area: tuple[float, float], ratio: tuple[float, float],
                         **post) -> tf.Tensor:
  """Graph body of augment_batch; traced once per (shapes, parameters).

  height/width are python ints: reduce_retracing may relax tensor shapes.
  """
  x = crop.crop_resize(images, u, height, width, out_size, area, ratio)
  return _post_crop(x, u, out_size=out_size, **post)


@tf.function(autograph=False, reduce_retracing=True)
def _post_crop_graph(x: tf.Tensor, u: tf.Tensor, **kwargs) -> tf.Tensor:
  return _post_crop(x, u, **kwargs)


def _post_params(*, flip_p, jitter_p, brightness, contrast, saturation, hue,
                 brightness_mode, gray_p, blur_p, blur_sigma,
                 blur_kernel_frac, solarize_p, mean, std) -> dict:
  """Checked, hashable keyword arguments of :func:`_post_crop`."""
  sigma = ops.check_range("blur_sigma", blur_sigma, 1e-6, 1e6)
  probs = dict(flip_p=flip_p, jitter_p=jitter_p, gray_p=gray_p,
               blur_p=blur_p, solarize_p=solarize_p)
  for name in _PROBS:
    ops.check_prob(name, probs[name])
  ops.check_norm(mean, std)
  return dict(
      sigma=sigma, flip_p=float(flip_p), jitter_p=float(jitter_p),
      brightness=float(brightness), contrast=float(contrast),
      saturation=float(saturation), hue=float(hue),
      brightness_mode=ops.check_brightness_mode(brightness_mode),
      gray_p=float(gray_p), blur_p=float(blur_p),
      blur_kernel_frac=float(blur_kernel_frac),
      solarize_p=float(solarize_p), mean=tuple(float(m) for m in mean),
      std=tuple(float(s) for s in std))


def augment_batch(images_uint8: tf.Tensor, uniforms: tf.Tensor, *,
                  out_size: int, crop_area: Sequence[float],
                  aspect: Sequence[float], flip_p: float, jitter_p: float,
                  brightness: float, contrast: float, saturation: float,
                  hue: float, brightness_mode: str, gray_p: float,
                  blur_p: float, blur_sigma: Sequence[float],
                  blur_kernel_frac: float, solarize_p: float,
                  mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
  """One random view of each image in a batch, all ops vectorised.

  Args:
    images_uint8: [B, H, W, 3] uint8 source images (static H, W).
    uniforms: [B, NUM_UNIFORMS] float32 in [0, 1), the views' randomness.
    out_size: output side s.
    crop_area: (min, max) crop area as a fraction of the image.
    aspect: (min, max) crop aspect ratio w/h, sampled log-uniformly.
    flip_p: horizontal flip probability.
    jitter_p: probability of applying colour jitter.
    brightness: brightness strength a (see brightness_mode).
    contrast: contrast factor drawn from U[max(0, 1 − v), 1 + v].
    saturation: saturation factor range, as contrast.
    hue: hue shift drawn from U[−hue, hue] (fraction of the hue circle).
    brightness_mode: "multiplicative" (torchvision: x·f, f ~ U[max(0,
      1 − a), 1 + a]) or "additive" (TF / deepmind BYOL: x + δ,
      δ ~ U[−a, a]); both clipped to [0, 1].
    gray_p: grayscale probability.
    blur_p: Gaussian blur probability.
    blur_sigma: (min, max) of σ ~ U[min, max] in pixels.
    blur_kernel_frac: kernel side ≈ frac·out_size (odd, >= 3).
    solarize_p: solarize probability.
    mean: per-channel mean in [0, 1] units.
    std: per-channel std in [0, 1] units.

  Returns:
    [B, out_size, out_size, 3] float32, ((x / 255) − mean) / std.
  """
  area = ops.check_range("crop_area", crop_area, 1e-6, 1.0)
  ratio = ops.check_range("aspect", aspect, 1e-3, 1e3)
  post = _post_params(
      flip_p=flip_p, jitter_p=jitter_p, brightness=brightness,
      contrast=contrast, saturation=saturation, hue=hue,
      brightness_mode=brightness_mode, gray_p=gray_p,
      blur_p=blur_p, blur_sigma=blur_sigma,
      blur_kernel_frac=blur_kernel_frac, solarize_p=solarize_p, mean=mean,
      std=std)
  if int(out_size) != out_size or out_size < 1:
    raise ValueError(f"out_size must be a positive integer, got {out_size!r}.")
  images = tf.convert_to_tensor(images_uint8)
  if images.shape.rank != 4 or images.shape[-1] != 3 or None in (
      images.shape[1], images.shape[2]) or images.dtype != tf.uint8:
    raise ValueError(f"images must be uint8 [B, H, W, 3] with static H, W, "
                     f"got {images.dtype.name} {images.shape}.")
  return _augment_batch_graph(
      images, tf.convert_to_tensor(uniforms, tf.float32),
      height=int(images.shape[1]), width=int(images.shape[2]),
      out_size=int(out_size), area=area, ratio=ratio, **post)


def augment_cropped_batch(crops: tf.Tensor, uniforms: tf.Tensor, *,
                          flip_p: float, jitter_p: float, brightness: float,
                          contrast: float, saturation: float, hue: float,
                          brightness_mode: str, gray_p: float, blur_p: float,
                          blur_sigma: Sequence[float],
                          blur_kernel_frac: float, solarize_p: float,
                          mean: Sequence[float],
                          std: Sequence[float]) -> tf.Tensor:
  """Everything :func:`augment_batch` does after the crop, vectorised.

  ``augment_cropped_batch(crops, u, ...)`` with crops from
  ``random_resized_crop`` (same ``u`` rows) gives the view
  ``augment_batch`` would give for the same uniforms.

  Args:
    crops: [B, s, s, 3] float32 in [0, 1] (static s).
    uniforms: [B, NUM_UNIFORMS] float32 in [0, 1) (the crops' uniforms).
    flip_p, jitter_p, brightness, contrast, saturation, hue, brightness_mode,
    gray_p, blur_p, blur_sigma, blur_kernel_frac, solarize_p, mean, std: as
      in :func:`augment_batch`.

  Returns:
    [B, s, s, 3] float32, normalised.
  """
  post = _post_params(
      flip_p=flip_p, jitter_p=jitter_p, brightness=brightness,
      contrast=contrast, saturation=saturation, hue=hue,
      brightness_mode=brightness_mode, gray_p=gray_p,
      blur_p=blur_p, blur_sigma=blur_sigma,
      blur_kernel_frac=blur_kernel_frac, solarize_p=solarize_p, mean=mean,
      std=std)
  x = tf.convert_to_tensor(crops, tf.float32)
  if x.shape.rank != 4 or x.shape[-1] != 3 or x.shape[1] is None or (
      x.shape[1] != x.shape[2]):
    raise ValueError(f"crops must be float [B, s, s, 3] with static s, got "
                     f"{x.shape}.")
  return _post_crop_graph(x, tf.convert_to_tensor(uniforms, tf.float32),
                          out_size=int(x.shape[1]), **post)


def eval_transform(image_uint8: tf.Tensor, *, out_size: int,
                   mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
  """Deterministic evaluation view: central square, resize, normalise.

  Args:
    image_uint8: [H, W, 3] or [N, H, W, 3] uint8.
    out_size: output side s (no resampling when the input is already s × s).
    mean: per-channel mean in [0, 1] units.
    std: per-channel std in [0, 1] units.

  Returns:
    [(N,) s, s, 3] float32.
  """
  ops.check_norm(mean, std)
  x = tf.cast(tf.convert_to_tensor(image_uint8), tf.float32) / 255.0
  h, w = x.shape[-3], x.shape[-2]
  if h != out_size or w != out_size:
    shape = tf.shape(x)
    side = tf.minimum(shape[-3], shape[-2])
    top, left = (shape[-3] - side) // 2, (shape[-2] - side) // 2
    x = x[..., top:top + side, left:left + side, :]
    x = tf.clip_by_value(
        tf.image.resize(x, (out_size, out_size), method="bicubic",
                        antialias=True), 0.0, 1.0)
  return ops.normalize(x, mean, std)
