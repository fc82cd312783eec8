"""SimCLR/BYOL augmentations in TensorFlow, vectorised and stateless.

Synopsis::

  params = dict(crop_area=(0.08, 1.0), aspect=(3 / 4, 4 / 3), flip_p=0.5,
                jitter_p=0.8, brightness=0.4, contrast=0.4, saturation=0.2,
                hue=0.1, gray_p=0.2, blur_p=1.0, blur_sigma=(0.1, 2.0),
                blur_kernel_frac=0.1, solarize_p=0.0,
                mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
  view = augment_view(image_uint8, seed, out_size=32, **params)   # one image
  views = augment_batch(images_uint8, uniforms, out_size=32, **params)

The operations follow METHODS.md §1.4 with torchvision semantics: random
resized crop (area fraction, log-uniform aspect ratio, 10 attempts then a
central fallback) resampled with the antialiased Keys bicubic kernel of
``tf.image.resize(..., "bicubic", antialias=True)``; horizontal flip; colour
jitter (brightness, contrast, saturation, hue in a random order); grayscale
y = 0.2989 r + 0.5870 g + 0.1140 b; Gaussian blur (odd kernel ≈ 10% of the
side, symmetric padding); solarize x ↦ x if x < 0.5 else 1 − x; then
((x / 255) − mean) / std.

Randomness. Every view consumes one vector of ``NUM_UNIFORMS`` uniforms in
[0, 1); each op reads its own fixed slots, so the ops are independent and
same uniforms ⇒ bit-identical view. ``augment_view`` draws the vector with
``tf.random.stateless_uniform`` from a [2] seed; the training pipeline draws
all vectors of a step in one stateless call and uses ``augment_batch``, where
every op runs on the whole batch at once (per-image parameters), which is
much cheaper on CPU than per-image tf.data maps.

Images of varying size (decoded JPEGs of streamed datasets) are split in
two: ``random_resized_crop`` crops one image of any size inside a tf.data
map (same window rule, uniform slots and resampling), and
``augment_cropped_batch`` applies the remaining ops to a batch of crops;
together they match ``augment_batch`` to float rounding.

``apply_saliency_mask`` / ``saliency_mask_batch`` implement RELICv2's
background replacement (METHODS.md §3.7) on the uint8 source image, before
the crop and colour ops.
"""

from __future__ import annotations

import math
from typing import Sequence

import tensorflow as tf

_GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)
_CROP_ATTEMPTS = 10

# Slots of the per-view uniform vector. Fixed, so changing one op never
# reshuffles the randomness of the others.
_SLOT_AREA = slice(0, 10)
_SLOT_RATIO = slice(10, 20)
_SLOT_TOP, _SLOT_LEFT = 20, 21
_SLOT_FLIP = 22
_SLOT_JITTER = 23
_SLOT_ORDER = slice(24, 28)
_SLOT_BRIGHT, _SLOT_CONTRAST, _SLOT_SAT, _SLOT_HUE = 28, 29, 30, 31
_SLOT_GRAY = 32
_SLOT_BLUR, _SLOT_SIGMA = 33, 34
_SLOT_SOLARIZE = 35
NUM_UNIFORMS = 36
# Saliency masking draws its own pair: (apply?, grey level).
NUM_SALIENCY_UNIFORMS = 2


# ----------------------------------------------------------------------------
# Checks and small ops
# ----------------------------------------------------------------------------


def _check_range(name: str, value: Sequence[float], lo: float,
                 hi: float) -> tuple[float, float]:
  if len(value) != 2 or not lo <= value[0] <= value[1] <= hi:
    raise ValueError(f"{name} must be a (min, max) pair with {lo} <= min <= "
                     f"max <= {hi}, got {value!r}.")
  return float(value[0]), float(value[1])


def _check_prob(name: str, value: float) -> None:
  if not 0.0 <= value <= 1.0:
    raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}.")


def _check_norm(mean: Sequence[float], std: Sequence[float]) -> None:
  if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
    raise ValueError(f"mean/std must be 3 values each (std > 0) in [0, 1] "
                     f"units, got mean={mean!r}, std={std!r}.")


def _normalize(x: tf.Tensor, mean: Sequence[float],
               std: Sequence[float]) -> tf.Tensor:
  return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def _bcast(v: tf.Tensor, rank: int) -> tf.Tensor:
  """[B] -> [B, 1, ..., 1] with `rank` total dims."""
  return tf.reshape(v, [-1] + [1] * (rank - 1))


def blur_kernel_size(out_size: int, frac: float) -> int:
  """Odd Gaussian kernel side ≈ frac·out_size, at least 3 (23 at 224 px)."""
  k = int(frac * out_size)
  k = k + 1 if k % 2 == 0 else k
  return max(3, k)


def _select_rows(cond: tf.Tensor, a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
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


# ----------------------------------------------------------------------------
# Random resized crop
# ----------------------------------------------------------------------------


def _crop_windows(u: tf.Tensor, height: int, width: int,
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
  target = h * w * (area[0] + (area[1] - area[0]) * u[:, _SLOT_AREA])
  lo, hi = math.log(aspect[0]), math.log(aspect[1])
  ratio = tf.exp(lo + (hi - lo) * u[:, _SLOT_RATIO])
  cw = tf.round(tf.sqrt(target * ratio))
  ch = tf.round(tf.sqrt(target / ratio))
  ok = (cw >= 1) & (ch >= 1) & (cw <= w) & (ch <= h)
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
  top = tf.where(found, tf.floor(u[:, _SLOT_TOP] * (h - ch + 1)),
                 tf.floor((h - ch) / 2))
  left = tf.where(found, tf.floor(u[:, _SLOT_LEFT] * (w - cw + 1)),
                  tf.floor((w - cw) / 2))
  return tf.minimum(top, h - ch), tf.minimum(left, w - cw), ch, cw


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


def _crop_resize(images: tf.Tensor, u: tf.Tensor, h: int, w: int,
                 out_size: int, area: tuple[float, float],
                 aspect: tuple[float, float]) -> tf.Tensor:
  """Random resized crops of [B, h, w, 3] uint8 -> [B, s, s, 3] in [0, 1]."""
  top, left, ch, cw = _crop_windows(u, h, w, area, aspect)
  rows = _resample_matrix(top, ch, h, out_size)  # [B, s, H]
  cols = _resample_matrix(left, cw, w, out_size)  # [B, s, W]
  x = tf.cast(images, tf.float32) / 255.0
  x = tf.einsum("bih,bhwc->biwc", rows, x)
  x = tf.einsum("bjw,biwc->bijc", cols, x)
  return tf.clip_by_value(x, 0.0, 1.0)


# ----------------------------------------------------------------------------
# Colour
# ----------------------------------------------------------------------------


def _factor(u: tf.Tensor, strength: float) -> tf.Tensor:
  lo = max(0.0, 1.0 - strength)
  return lo + (1.0 + strength - lo) * u


def _shift_hue(x: tf.Tensor, delta: tf.Tensor) -> tf.Tensor:
  """Rotates the hue of [n, s, s, 3] by delta [n] (fraction of the circle)."""
  hsv = tf.image.rgb_to_hsv(x)
  hue = tf.math.floormod(hsv[..., 0] + _bcast(delta, 3), 1.0)
  rgb = tf.image.hsv_to_rgb(tf.stack([hue, hsv[..., 1], hsv[..., 2]], -1))
  return tf.clip_by_value(rgb, 0.0, 1.0)


def _colour_jitter(x: tf.Tensor, u: tf.Tensor, *, brightness: float,
                   contrast: float, saturation: float,
                   hue: float) -> tf.Tensor:
  """torchvision ColorJitter on [B, s, s, 3] in [0, 1], per-image order."""
  b = _bcast(_factor(u[:, _SLOT_BRIGHT], brightness), 4)
  c = _bcast(_factor(u[:, _SLOT_CONTRAST], contrast), 4)
  s = _bcast(_factor(u[:, _SLOT_SAT], saturation), 4)
  dh = hue * (2.0 * u[:, _SLOT_HUE] - 1.0)

  def blend(a, base, ratio):
    return tf.clip_by_value(ratio * a + (1.0 - ratio) * base, 0.0, 1.0)

  order = tf.argsort(u[:, _SLOT_ORDER], axis=1)  # A random permutation.
  for k in range(4):
    op = order[:, k]
    luma = _luma(x)
    y = _select_rows(op == 0, tf.clip_by_value(x * b, 0.0, 1.0), x)
    mean = tf.reduce_mean(luma, axis=(1, 2), keepdims=True)
    y = _select_rows(op == 1, blend(x, mean, c), y)
    y = _select_rows(op == 2, blend(x, luma, s), y)
    # Hue (HSV round trip) is the costly op: run it only on its rows.
    rows = tf.where(order[:, k] == 3)[:, 0]
    x = tf.tensor_scatter_nd_update(
        y, rows[:, None],
        _shift_hue(tf.gather(x, rows), tf.gather(dh, rows)))
  return x


# ----------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------


@tf.function(autograph=False, reduce_retracing=True)
def _augment_batch_graph(images: tf.Tensor, u: tf.Tensor, *, height: int,
                         width: int, out_size: int,
                         area: tuple[float, float], ratio: tuple[float, float],
                         sigma: tuple[float, float], flip_p: float,
                         jitter_p: float, brightness: float, contrast: float,
                         saturation: float, hue: float, gray_p: float,
                         blur_p: float, blur_kernel_frac: float,
                         solarize_p: float, mean: tuple[float, ...],
                         std: tuple[float, ...]) -> tf.Tensor:
  """Graph body of augment_batch; traced once per (shapes, parameters).

  height/width are python ints: reduce_retracing may relax tensor shapes.
  """
  x = _crop_resize(images, u, height, width, out_size, area, ratio)
  return _post_crop(x, u, out_size=out_size, sigma=sigma, flip_p=flip_p,
                    jitter_p=jitter_p, brightness=brightness,
                    contrast=contrast, saturation=saturation, hue=hue,
                    gray_p=gray_p, blur_p=blur_p,
                    blur_kernel_frac=blur_kernel_frac, solarize_p=solarize_p,
                    mean=mean, std=std)


def _post_crop(x: tf.Tensor, u: tf.Tensor, *, out_size: int,
               sigma: tuple[float, float], flip_p: float, jitter_p: float,
               brightness: float, contrast: float, saturation: float,
               hue: float, gray_p: float, blur_p: float,
               blur_kernel_frac: float, solarize_p: float,
               mean: tuple[float, ...], std: tuple[float, ...]) -> tf.Tensor:
  """Flip, jitter, grey, blur, solarize, normalise: [B, s, s, 3] in [0, 1]."""

  def maybe(slot, p, fn, y):
    if p <= 0.0:
      return y
    if p >= 1.0:
      return fn(y)
    return _select_rows(u[:, slot] < p, fn(y), y)

  x = maybe(_SLOT_FLIP, flip_p, lambda y: tf.reverse(y, axis=[2]), x)
  x = maybe(_SLOT_JITTER, jitter_p, lambda y: _colour_jitter(
      y, u, brightness=brightness, contrast=contrast, saturation=saturation,
      hue=hue), x)
  x = maybe(_SLOT_GRAY, gray_p, to_grayscale, x)
  k = blur_kernel_size(out_size, blur_kernel_frac)
  sig = sigma[0] + (sigma[1] - sigma[0]) * u[:, _SLOT_SIGMA]
  x = maybe(_SLOT_BLUR, blur_p, lambda y: gaussian_blur(y, sig, k), x)
  x = maybe(_SLOT_SOLARIZE, solarize_p, solarize, x)
  return _normalize(x, mean, std)


@tf.function(autograph=False, reduce_retracing=True)
def _post_crop_graph(x: tf.Tensor, u: tf.Tensor, **kwargs) -> tf.Tensor:
  return _post_crop(x, u, **kwargs)


def augment_batch(images_uint8: tf.Tensor, uniforms: tf.Tensor, *,
                  out_size: int, crop_area: Sequence[float],
                  aspect: Sequence[float], flip_p: float, jitter_p: float,
                  brightness: float, contrast: float, saturation: float,
                  hue: float, gray_p: float, blur_p: float,
                  blur_sigma: Sequence[float], blur_kernel_frac: float,
                  solarize_p: float, mean: Sequence[float],
                  std: Sequence[float]) -> tf.Tensor:
  """One random view of each image in a batch, all ops vectorised.

  The graph is a ``tf.function`` cached per (shapes, parameters), so views
  and pipelines sharing a parameter column reuse one trace.

  Args:
    images_uint8: [B, H, W, 3] uint8 source images (static H, W).
    uniforms: [B, NUM_UNIFORMS] float32 in [0, 1), the views' randomness.
    out_size: output side s.
    crop_area, aspect, flip_p, jitter_p, brightness, contrast, saturation,
    hue, gray_p, blur_p, blur_sigma, blur_kernel_frac, solarize_p, mean,
    std: as in :func:`augment_view`.

  Returns:
    [B, out_size, out_size, 3] float32, normalised.
  """
  area = _check_range("crop_area", crop_area, 1e-6, 1.0)
  ratio = _check_range("aspect", aspect, 1e-3, 1e3)
  sigma = _check_range("blur_sigma", blur_sigma, 1e-6, 1e6)
  for name, p in (("flip_p", flip_p), ("jitter_p", jitter_p),
                  ("gray_p", gray_p), ("blur_p", blur_p),
                  ("solarize_p", solarize_p)):
    _check_prob(name, p)
  _check_norm(mean, std)
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
      out_size=int(out_size), area=area, ratio=ratio, sigma=sigma,
      flip_p=float(flip_p), jitter_p=float(jitter_p),
      brightness=float(brightness), contrast=float(contrast),
      saturation=float(saturation), hue=float(hue), gray_p=float(gray_p),
      blur_p=float(blur_p), blur_kernel_frac=float(blur_kernel_frac),
      solarize_p=float(solarize_p), mean=tuple(float(m) for m in mean),
      std=tuple(float(s) for s in std))


def _crop_windows_dynamic(u: tf.Tensor, height: tf.Tensor, width: tf.Tensor,
                          area: tuple[float, float],
                          aspect: tuple[float, float]):
  """:func:`_crop_windows` for per-image (run-time) sizes.

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
  target = h * w * (area[0] + (area[1] - area[0]) * u[:, _SLOT_AREA])
  lo, hi = math.log(aspect[0]), math.log(aspect[1])
  ratio = tf.exp(lo + (hi - lo) * u[:, _SLOT_RATIO])
  cw = tf.round(tf.sqrt(target * ratio))
  ch = tf.round(tf.sqrt(target / ratio))
  ok = (cw >= 1) & (ch >= 1) & (cw <= w) & (ch <= h)
  first = tf.argmax(tf.cast(ok, tf.int32), axis=1, output_type=tf.int32)
  found = tf.reduce_any(ok, axis=1)
  h, w = h[:, 0], w[:, 0]
  ch = tf.gather(ch, first, batch_dims=1)
  cw = tf.gather(cw, first, batch_dims=1)
  # Fallback after 10 misses: central crop at the closest allowed ratio.
  in_ratio = w / h
  narrow, wide = in_ratio < aspect[0], in_ratio > aspect[1]
  fw = tf.where(wide, tf.round(h * aspect[1]), w)
  fh = tf.where(narrow, tf.round(w / aspect[0]), h)
  ch = tf.where(found, ch, fh)
  cw = tf.where(found, cw, fw)
  top = tf.where(found, tf.floor(u[:, _SLOT_TOP] * (h - ch + 1)),
                 tf.floor((h - ch) / 2))
  left = tf.where(found, tf.floor(u[:, _SLOT_LEFT] * (w - cw + 1)),
                  tf.floor((w - cw) / 2))
  return tf.minimum(top, h - ch), tf.minimum(left, w - cw), ch, cw


def random_resized_crop(image_uint8: tf.Tensor, uniforms: tf.Tensor, *,
                        out_size: int, crop_area: Sequence[float],
                        aspect: Sequence[float]) -> tf.Tensor:
  """The random resized crop of :func:`augment_batch` for one image of any size.

  Same window rule (torchvision semantics, same uniform slots) and the same
  antialiased bicubic resampling as the vectorised crop, but the source size
  is read at run time, so it works inside tf.data maps on decoded JPEGs of
  varying size. Pair it with :func:`augment_cropped_batch`.

  Args:
    image_uint8: [h, w, 3] uint8 (h, w may be unknown until run time).
    uniforms: [NUM_UNIFORMS] float32 in [0, 1), the view's randomness.
    out_size: output side s.
    crop_area: (min, max) crop area as a fraction of the image.
    aspect: (min, max) crop aspect ratio w/h, sampled log-uniformly.

  Returns:
    [out_size, out_size, 3] float32 in [0, 1].
  """
  area = _check_range("crop_area", crop_area, 1e-6, 1.0)
  ratio = _check_range("aspect", aspect, 1e-3, 1e3)
  image = tf.convert_to_tensor(image_uint8)
  if image.shape.rank != 3 or image.dtype != tf.uint8:
    raise ValueError(f"random_resized_crop expects one uint8 [h, w, 3] image, "
                     f"got {image.dtype.name} {image.shape}.")
  shape = tf.shape(image)
  u = tf.reshape(tf.convert_to_tensor(uniforms, tf.float32),
                 [1, NUM_UNIFORMS])
  top, left, ch, cw = (tf.cast(t[0], tf.int32) for t in _crop_windows_dynamic(
      u, shape[:1], shape[1:2], area, ratio))
  window = image[top:top + ch, left:left + cw]
  x = tf.image.resize(tf.cast(window, tf.float32) / 255.0,
                      (out_size, out_size), method="bicubic", antialias=True)
  return tf.ensure_shape(tf.clip_by_value(x, 0.0, 1.0),
                         (out_size, out_size, 3))


def augment_cropped_batch(crops: tf.Tensor, uniforms: tf.Tensor, *,
                          flip_p: float, jitter_p: float, brightness: float,
                          contrast: float, saturation: float, hue: float,
                          gray_p: float, blur_p: float,
                          blur_sigma: Sequence[float],
                          blur_kernel_frac: float, solarize_p: float,
                          mean: Sequence[float],
                          std: Sequence[float]) -> tf.Tensor:
  """Everything :func:`augment_batch` does after the crop, vectorised.

  ``augment_cropped_batch(crops, u, ...)`` with crops from
  :func:`random_resized_crop` (same ``u`` rows) gives the view
  ``augment_batch`` would give for the same uniforms.

  Args:
    crops: [B, s, s, 3] float32 in [0, 1] (static s).
    uniforms: [B, NUM_UNIFORMS] float32 in [0, 1) (the crops' uniforms).
    flip_p, jitter_p, brightness, contrast, saturation, hue, gray_p, blur_p,
    blur_sigma, blur_kernel_frac, solarize_p, mean, std: as in
      :func:`augment_view`.

  Returns:
    [B, s, s, 3] float32, normalised.
  """
  sigma = _check_range("blur_sigma", blur_sigma, 1e-6, 1e6)
  for name, p in (("flip_p", flip_p), ("jitter_p", jitter_p),
                  ("gray_p", gray_p), ("blur_p", blur_p),
                  ("solarize_p", solarize_p)):
    _check_prob(name, p)
  _check_norm(mean, std)
  x = tf.convert_to_tensor(crops, tf.float32)
  if x.shape.rank != 4 or x.shape[-1] != 3 or x.shape[1] is None or (
      x.shape[1] != x.shape[2]):
    raise ValueError(f"crops must be float [B, s, s, 3] with static s, got "
                     f"{x.shape}.")
  return _post_crop_graph(
      x, tf.convert_to_tensor(uniforms, tf.float32),
      out_size=int(x.shape[1]), sigma=sigma, flip_p=float(flip_p),
      jitter_p=float(jitter_p), brightness=float(brightness),
      contrast=float(contrast), saturation=float(saturation),
      hue=float(hue), gray_p=float(gray_p), blur_p=float(blur_p),
      blur_kernel_frac=float(blur_kernel_frac),
      solarize_p=float(solarize_p), mean=tuple(float(m) for m in mean),
      std=tuple(float(s) for s in std))


def view_uniforms(seed: tf.Tensor, shape: Sequence[int] = ()) -> tf.Tensor:
  """The [*shape, NUM_UNIFORMS] uniforms of views drawn from one [2] seed."""
  return tf.random.stateless_uniform(list(shape) + [NUM_UNIFORMS], seed,
                                     dtype=tf.float32)


def augment_view(image_uint8: tf.Tensor, seed: tf.Tensor, *, out_size: int,
                 crop_area: Sequence[float], aspect: Sequence[float],
                 flip_p: float, jitter_p: float, brightness: float,
                 contrast: float, saturation: float, hue: float,
                 gray_p: float, blur_p: float, blur_sigma: Sequence[float],
                 blur_kernel_frac: float, solarize_p: float,
                 mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
  """One random view of an image (METHODS.md §1.4, §3.6).

  Args:
    image_uint8: [H, W, 3] uint8 source image (static H, W).
    seed: [2] int32/int64 stateless seed; same seed, same view.
    out_size: output side s.
    crop_area: (min, max) crop area as a fraction of the image.
    aspect: (min, max) crop aspect ratio w/h, sampled log-uniformly.
    flip_p: horizontal flip probability.
    jitter_p: probability of applying colour jitter.
    brightness: brightness factor drawn from U[max(0, 1 − v), 1 + v].
    contrast: contrast factor range, as brightness.
    saturation: saturation factor range, as brightness.
    hue: hue shift drawn from U[−hue, hue] (fraction of the hue circle).
    gray_p: grayscale probability.
    blur_p: Gaussian blur probability.
    blur_sigma: (min, max) of σ ~ U[min, max] in pixels.
    blur_kernel_frac: kernel side ≈ frac·out_size (odd, >= 3).
    solarize_p: solarize probability.
    mean: per-channel mean in [0, 1] units.
    std: per-channel std in [0, 1] units.

  Returns:
    [out_size, out_size, 3] float32, ((x / 255) − mean) / std.
  """
  image = tf.convert_to_tensor(image_uint8)
  if image.shape.rank != 3:
    raise ValueError(f"augment_view expects one [H, W, 3] image, got "
                     f"{image.shape}; use augment_batch for batches.")
  return augment_batch(
      image[None], view_uniforms(seed, [1]), out_size=out_size,
      crop_area=crop_area, aspect=aspect, flip_p=flip_p, jitter_p=jitter_p,
      brightness=brightness, contrast=contrast, saturation=saturation,
      hue=hue, gray_p=gray_p, blur_p=blur_p, blur_sigma=blur_sigma,
      blur_kernel_frac=blur_kernel_frac, solarize_p=solarize_p, mean=mean,
      std=std)[0]


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
  _check_norm(mean, std)
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
  return _normalize(x, mean, std)


def saliency_mask_batch(images_uint8: tf.Tensor, masks: tf.Tensor,
                        uniforms: tf.Tensor, *, prob: float | tf.Tensor,
                        min_coverage: float = 0.05) -> tf.Tensor:
  """Batched :func:`apply_saliency_mask` with explicit uniforms.

  Args:
    images_uint8: [B, H, W, 3] uint8.
    masks: [B, H, W] masks (float in [0, 1], bool, uint8 0/1 or 0/255).
    uniforms: [B, 2] in [0, 1): (apply decision, grey level).
    prob: scalar or [B] masking probability (0 for images without masks).
    min_coverage: minimum binarised foreground fraction for masking.

  Returns:
    [B, H, W, 3] uint8.
  """
  if isinstance(prob, (int, float)):
    _check_prob("saliency prob", prob)
  images = tf.convert_to_tensor(images_uint8)
  u = tf.convert_to_tensor(uniforms, tf.float32)
  masks = tf.convert_to_tensor(masks)
  if masks.dtype == tf.uint8:
    # 0/255 masks as well as 0/1 ones binarise at half their scale.
    masks = tf.cast(masks, tf.float32) / tf.maximum(
        1.0, tf.cast(tf.reduce_max(masks, axis=(1, 2), keepdims=True),
                     tf.float32))
  fg = tf.cast(masks, tf.float32) > 0.5
  coverage = tf.reduce_mean(tf.cast(fg, tf.float32), axis=(1, 2))
  apply = (u[:, 0] < prob) & (coverage >= min_coverage)
  grey = tf.cast(tf.round(u[:, 1] * 255.0), tf.uint8)
  masked = tf.where(fg[..., None], images, _bcast(grey, 4))
  return _select_rows(apply, masked, images)


def apply_saliency_mask(image_uint8: tf.Tensor, mask: tf.Tensor,
                        seed: tf.Tensor, *, prob: float | tf.Tensor,
                        min_coverage: float = 0.05) -> tf.Tensor:
  """RELICv2 saliency masking: grey out the background (METHODS.md §3.7).

  With probability ``prob``, and only if the binarised mask (> 0.5) covers
  at least ``min_coverage`` of the image, returns m ⊙ x + (1 − m) ⊙ g with
  one grey level g ~ U[0, 1] (×255, rounded) for the whole image; otherwise
  returns the image unchanged. Apply it before :func:`augment_view`.

  Args:
    image_uint8: [H, W, 3] uint8.
    mask: [H, W] saliency mask (float in [0, 1], bool, uint8 0/1 or 0/255).
    seed: [2] stateless seed (decision and grey level).
    prob: masking probability (python float or scalar tensor).
    min_coverage: minimum foreground fraction for masking to apply.

  Returns:
    [H, W, 3] uint8.
  """
  u = tf.random.stateless_uniform([1, NUM_SALIENCY_UNIFORMS], seed,
                                  dtype=tf.float32)
  return saliency_mask_batch(
      tf.convert_to_tensor(image_uint8)[None],
      tf.convert_to_tensor(mask)[None], u, prob=prob,
      min_coverage=min_coverage)[0]
