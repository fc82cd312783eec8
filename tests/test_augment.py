"""Tests for mdssl_jax.data.augment (vectorised stateless augmentations)."""

import colorsys
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import pytest
from scipy import ndimage
import tensorflow as tf

from mdssl_jax.data import augment as aug
from mdssl_jax.data.augment import crop
from mdssl_jax.data.augment import ops
from mdssl_jax.data.augment import slots

_IDENT = dict(crop_area=(1.0, 1.0), aspect=(1.0, 1.0), flip_p=0.0,
              jitter_p=0.0, brightness=0.4, contrast=0.4, saturation=0.2,
              hue=0.1, brightness_mode="multiplicative", gray_p=0.0,
              blur_p=0.0, blur_sigma=(0.1, 2.0), blur_kernel_frac=0.1,
              solarize_p=0.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
_FULL = dict(_IDENT, crop_area=(0.08, 1.0), aspect=(3 / 4, 4 / 3), flip_p=0.5,
             jitter_p=0.8, gray_p=0.2, blur_p=0.5, solarize_p=0.2,
             mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _images(n, h=32, w=32, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), np.uint8)


def _uniforms(n, seed=0):
  return np.random.default_rng(seed).uniform(
      size=(n, aug.NUM_UNIFORMS)).astype(np.float32)


def _view(image, seed, **overrides):
  """One view of one image, its uniforms drawn from a [2] seed."""
  params = dict(_IDENT, **overrides)
  out_size = params.pop("out_size", image.shape[0])
  u = tf.random.stateless_uniform([1, aug.NUM_UNIFORMS],
                                  tf.constant(seed, tf.int64))
  return aug.augment_batch(tf.constant(image[None]), u, out_size=out_size,
                           **params).numpy()[0]


def _batch(images, u, **overrides):
  params = dict(_IDENT, **overrides)
  out_size = params.pop("out_size", images.shape[1])
  return aug.augment_batch(tf.constant(images), tf.constant(u),
                           out_size=out_size, **params).numpy()


# ----------------------------------------------------------------------------
# Determinism, shapes, ranges
# ----------------------------------------------------------------------------


def test_same_seed_bit_identical_and_seeds_differ():
  image = _images(1)[0]
  a = _view(image, [3, 4], **_FULL)
  b = _view(image, [3, 4], **_FULL)
  c = _view(image, [3, 5], **_FULL)
  assert a.shape == (32, 32, 3) and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - c).max() > 0.1


@pytest.mark.parametrize("out_size", [32, 16, 24])
def test_output_shape_dtype_and_range(out_size):
  images = _images(64, seed=1)
  params = dict(_FULL, mean=(0.0,) * 3, std=(1.0,) * 3)
  out = _batch(images, _uniforms(64, 1), out_size=out_size, **params)
  assert out.shape == (64, out_size, out_size, 3)
  assert out.dtype == np.float32
  assert np.isfinite(out).all()
  assert out.min() >= 0.0 and out.max() <= 1.0


def test_normalisation():
  image = _images(1, seed=2)[0]
  mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
  raw = _view(image, [0, 1])
  out = _view(image, [0, 1], mean=mean, std=std)
  np.testing.assert_allclose(out, (raw - np.array(mean)) / np.array(std),
                             rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------
# Random resized crop
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("out_size", [32, 20, 48])
def test_full_crop_equals_resize_of_whole_image(out_size):
  image = _images(1, seed=3)[0]
  out = _view(image, [7, 7], out_size=out_size)
  ref = tf.clip_by_value(tf.image.resize(
      image.astype(np.float32) / 255.0, (out_size, out_size), "bicubic",
      antialias=True), 0, 1).numpy()
  np.testing.assert_allclose(out, ref, atol=2e-5)
  if out_size == 32:
    np.testing.assert_allclose(out, image / 255.0, atol=2e-5)


def test_random_crops_match_tf_resize_of_the_window():
  images = _images(32, seed=4)
  u = tf.constant(_uniforms(32, 4))
  top, left, ch, cw = (t.numpy().astype(int) for t in crop.crop_windows(
      u, 32, 32, (0.08, 1.0), (3 / 4, 4 / 3)))
  for out_size in (32, 12):
    got = _batch(images, u.numpy(), out_size=out_size,
                 crop_area=(0.08, 1.0), aspect=(3 / 4, 4 / 3))
    for i in range(32):
      window = images[i, top[i]:top[i] + ch[i], left[i]:left[i] + cw[i]]
      ref = tf.clip_by_value(tf.image.resize(
          window.astype(np.float32) / 255.0, (out_size, out_size), "bicubic",
          antialias=True), 0, 1).numpy()
      np.testing.assert_allclose(got[i], ref, atol=2e-5)


@pytest.mark.parametrize("hw,area,aspect", [
    ((32, 32), (0.08, 1.0), (3 / 4, 4 / 3)),
    ((40, 24), (0.05, 0.14), (3 / 4, 4 / 3)),
    ((32, 32), (0.3, 0.5), (1.0, 2.0)),
])
def test_crop_window_distribution(hw, area, aspect):
  h, w = hw
  n = 2000
  top, left, ch, cw = (t.numpy() for t in crop.crop_windows(
      tf.constant(_uniforms(n, 5)), h, w, area, aspect))
  assert (top >= 0).all() and (left >= 0).all()
  assert (top + ch <= h).all() and (left + cw <= w).all()
  assert (ch >= 1).all() and (cw >= 1).all()
  frac = ch * cw / (h * w)
  ratio = cw / ch
  # Rounding to whole pixels moves area and ratio a little off the range.
  tol_area = 2.5 * (h + w) / (h * w) + 1e-6
  assert frac.min() >= area[0] - tol_area
  assert frac.max() <= area[1] + tol_area
  assert ratio.min() >= aspect[0] * 0.8 and ratio.max() <= aspect[1] * 1.25
  # Uniform area draws: mean within a few % of the centre of the range.
  assert abs(frac.mean() - sum(area) / 2) < 0.05 * sum(area) / 2 + tol_area
  # Log-uniform aspect: log-ratio mean near the centre of the log range.
  centre = (np.log(aspect[0]) + np.log(aspect[1])) / 2
  span = np.log(aspect[1]) - np.log(aspect[0])
  assert abs(np.log(ratio).mean() - centre) < 0.1 * span + 0.05
  # Offsets cover the image: both ends reached for small crops.
  assert left.min() == 0 and (left + cw).max() == w


def test_crop_fallback_is_central_when_no_attempt_fits():
  # Aspect range far from a tall image's shape: torchvision falls back to a
  # central crop at the closest allowed ratio.
  u = tf.constant(_uniforms(16, 6))
  top, left, ch, cw = (t.numpy() for t in crop.crop_windows(
      u, 40, 10, (1.0, 1.0), (2.0, 3.0)))
  np.testing.assert_array_equal(cw, 10)
  np.testing.assert_array_equal(ch, 5)
  np.testing.assert_array_equal(left, 0)
  np.testing.assert_array_equal(top, 17)


# ----------------------------------------------------------------------------
# Individual ops
# ----------------------------------------------------------------------------


def test_flip_flips():
  image = _images(1, seed=7)[0]
  plain = _view(image, [1, 1])
  flipped = _view(image, [1, 1], flip_p=1.0)
  np.testing.assert_array_equal(flipped, plain[:, ::-1])


def test_grayscale_formula_and_equal_channels():
  image = _images(1, seed=8)[0]
  gray = _view(image, [1, 2], gray_p=1.0)
  x = image.astype(np.float64) / 255.0
  y = 0.2989 * x[..., 0] + 0.5870 * x[..., 1] + 0.1140 * x[..., 2]
  for c in range(3):
    np.testing.assert_array_equal(gray[..., c], gray[..., 0])
    np.testing.assert_allclose(gray[..., c], y, atol=1e-5)


def test_solarize_formula():
  image = _images(1, seed=9)[0]
  plain = _view(image, [2, 2])
  sol = _view(image, [2, 2], solarize_p=1.0)
  np.testing.assert_allclose(sol, np.where(plain < 0.5, plain, 1.0 - plain),
                             atol=1e-6)
  assert (sol <= 0.5 + 1e-6).all()


def test_blur_kernel_size():
  assert aug.blur_kernel_size(224, 0.1) == 23
  assert aug.blur_kernel_size(32, 0.1) == 3
  assert aug.blur_kernel_size(16, 0.1) == 3
  assert aug.blur_kernel_size(96, 0.1) == 9
  for size in range(8, 300, 7):
    assert aug.blur_kernel_size(size, 0.1) % 2 == 1


def test_blur_preserves_constant_image_and_smooths_noise():
  const = np.full((32, 32, 3), 77, np.uint8)
  out = _view(const, [4, 4], blur_p=1.0, blur_sigma=(1.5, 2.0),
              blur_kernel_frac=0.3)
  np.testing.assert_allclose(out, 77 / 255.0, atol=1e-6)
  noise = _images(1, seed=10)[0]
  plain = _view(noise, [4, 4])
  blurred = _view(noise, [4, 4], blur_p=1.0, blur_sigma=(1.5, 2.0),
                  blur_kernel_frac=0.3)
  assert blurred.std() < 0.6 * plain.std()
  np.testing.assert_allclose(blurred.mean(), plain.mean(), atol=0.01)


@pytest.mark.parametrize("sigma,kernel", [(0.5, 3), (1.3, 5), (2.0, 9)])
def test_gaussian_blur_matches_numpy_reference(sigma, kernel):
  x = np.random.default_rng(11).uniform(size=(2, 12, 10, 3))
  radius = kernel // 2
  taps = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma ** 2))
  taps /= taps.sum()
  # scipy 'reflect' (d c b a | a b c d) is TF's SYMMETRIC padding.
  ref = ndimage.correlate1d(x, taps, axis=1, mode="reflect")
  ref = ndimage.correlate1d(ref, taps, axis=2, mode="reflect")
  got = aug.gaussian_blur(tf.constant(x, tf.float32),
                          tf.constant([sigma, sigma], tf.float32),
                          kernel).numpy()
  np.testing.assert_allclose(got, ref, atol=1e-5)


def _np_jitter(x, b, c, s, dh, order, brightness_mode="multiplicative"):
  """torchvision ColorJitter semantics in float64 NumPy, one image.

  b is the brightness factor (multiplicative) or delta (additive).
  """
  x = x.astype(np.float64)
  luma = lambda y: (0.2989 * y[..., 0] + 0.5870 * y[..., 1]
                    + 0.1140 * y[..., 2])[..., None]
  for op in order:
    if op == 0:
      x = np.clip(x * b if brightness_mode == "multiplicative" else x + b,
                  0, 1)
    elif op == 1:
      x = np.clip(c * x + (1 - c) * luma(x).mean(), 0, 1)
    elif op == 2:
      x = np.clip(s * x + (1 - s) * luma(x), 0, 1)
    else:
      flat = x.reshape(-1, 3)
      out = np.empty_like(flat)
      for i, (r, g, bb) in enumerate(flat):
        hh, ss, vv = colorsys.rgb_to_hsv(r, g, bb)
        out[i] = colorsys.hsv_to_rgb((hh + dh) % 1.0, ss, vv)
      x = np.clip(out.reshape(x.shape), 0, 1)
  return x


@pytest.mark.parametrize("mode", ["multiplicative", "additive"])
def test_colour_jitter_matches_numpy_reference_in_random_order(mode):
  n = 12
  images = _images(n, h=8, w=8, seed=12)
  u = _uniforms(n, 12)
  strengths = dict(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)
  got = _batch(images, u, jitter_p=1.0, brightness_mode=mode, **strengths)
  orders = set()
  for i in range(n):
    # torchvision: factor U[0.6, 1.4]; TF random_brightness: delta
    # U[-0.4, 0.4]. Both read the same uniform.
    b = (0.6 + 0.8 * u[i, slots.BRIGHT] if mode == "multiplicative"
         else 0.4 * (2 * u[i, slots.BRIGHT] - 1))
    c = 0.6 + 0.8 * u[i, slots.CONTRAST]
    s = 0.8 + 0.4 * u[i, slots.SAT]
    dh = 0.1 * (2 * u[i, slots.HUE] - 1)
    order = tuple(np.argsort(u[i, slots.ORDER]))
    orders.add(order)
    ref = _np_jitter(images[i] / 255.0, b, c, s, dh, order, mode)
    np.testing.assert_allclose(got[i], ref, atol=2e-4)
  assert len(orders) > 6  # Many different orders were exercised.


@pytest.mark.parametrize("mode,strength", [
    ("multiplicative", 0.4), ("multiplicative", 1.5), ("additive", 0.4),
    ("additive", 0.8)])
def test_brightness_modes_match_numpy_on_random_images(mode, strength):
  # Brightness alone on random float images; float32 NumPy of the formula.
  rng = np.random.default_rng(21)
  x = rng.uniform(size=(64, 6, 6, 3)).astype(np.float32)
  u = _uniforms(64, 21)
  got = ops.colour_jitter(tf.constant(x), tf.constant(u),
                          brightness=strength, contrast=0.0, saturation=0.0,
                          hue=0.0, brightness_mode=mode).numpy()
  ub = u[:, slots.BRIGHT, None, None, None]
  if mode == "multiplicative":  # torchvision: U[max(0, 1 − a), 1 + a].
    lo = max(0.0, 1.0 - strength)
    f = np.float32(lo) + np.float32(1.0 + strength - lo) * ub
    ref = np.clip(x * f, 0.0, 1.0)
    assert f.min() >= lo and f.max() <= 1.0 + strength
  else:  # tf.image.random_brightness: δ ~ U[−a, a].
    delta = np.float32(strength) * (np.float32(2.0) * ub - np.float32(1.0))
    ref = np.clip(x + delta, 0.0, 1.0)
    assert np.abs(delta).max() <= strength
  # Hue 0 still round-trips through HSV: ~4e-7 of float32 rounding.
  np.testing.assert_allclose(got, ref, atol=2e-6)
  # The two modes really differ on the same uniforms.
  other = "additive" if mode == "multiplicative" else "multiplicative"
  alt = ops.colour_jitter(tf.constant(x), tf.constant(u),
                          brightness=strength, contrast=0.0, saturation=0.0,
                          hue=0.0, brightness_mode=other).numpy()
  assert np.abs(alt - got).max() > 0.05


def test_jitter_order_matters():
  # Same factors, two orders: brightness-then-contrast differs from
  # contrast-then-brightness once clipping or the mean interact.
  image = _images(1, h=8, w=8, seed=13)
  u = _uniforms(2, 13)
  u[:, slots.BRIGHT] = 1.0  # b = 1.4
  u[:, slots.CONTRAST] = 0.0  # c = 0.6
  u[0, slots.ORDER] = [0.1, 0.2, 0.3, 0.4]
  u[1, slots.ORDER] = [0.2, 0.1, 0.3, 0.4]
  out = _batch(np.repeat(image, 2, 0), u, jitter_p=1.0, saturation=0.0,
               hue=0.0)
  assert np.abs(out[0] - out[1]).max() > 0.01


def test_jitter_with_zero_strengths_is_identity():
  image = _images(1, seed=14)[0]
  out = _view(image, [5, 5], jitter_p=1.0, brightness=0.0, contrast=0.0,
              saturation=0.0, hue=0.0)
  np.testing.assert_allclose(out, image / 255.0, atol=1e-5)


@pytest.mark.parametrize("name,p", [("gray_p", 0.2), ("flip_p", 0.5),
                                    ("solarize_p", 0.3)])
def test_op_probabilities(name, p):
  n = 1000
  images = _images(n, h=8, w=8, seed=15)
  u = _uniforms(n, 15)
  plain = _batch(images, u)
  out = _batch(images, u, **{name: p})
  changed = np.abs(out - plain).reshape(n, -1).max(axis=1) > 1e-6
  # Binomial(1000, p): 5 standard deviations.
  assert abs(changed.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)


def test_bad_parameters_raise():
  image = _images(1)[0]
  with pytest.raises(ValueError, match="crop_area"):
    _view(image, [0, 0], crop_area=(0.5, 0.2))
  with pytest.raises(ValueError, match="gray_p"):
    _view(image, [0, 0], gray_p=1.5)
  with pytest.raises(ValueError, match="mean/std"):
    _view(image, [0, 0], std=(1.0, 0.0, 1.0))
  with pytest.raises(ValueError, match="brightness_mode"):
    _view(image, [0, 0], brightness_mode="gamma")
  with pytest.raises(ValueError, match="uint8 \\[B, H, W, 3\\]"):
    aug.augment_batch(tf.constant(image), _uniforms(1), out_size=32,
                      **_IDENT)  # One image, not a batch.


# ----------------------------------------------------------------------------
# Eval transform
# ----------------------------------------------------------------------------


def test_eval_transform():
  images = _images(3, seed=16)
  mean, std = (0.5, 0.4, 0.3), (0.2, 0.3, 0.4)
  out = aug.eval_transform(tf.constant(images), out_size=32, mean=mean,
                           std=std).numpy()
  np.testing.assert_allclose(out, (images / 255.0 - mean) / np.array(std),
                             rtol=1e-5, atol=1e-5)
  single = aug.eval_transform(tf.constant(images[0]), out_size=16, mean=mean,
                              std=std).numpy()
  assert single.shape == (16, 16, 3)
  wide = _images(2, h=20, w=30, seed=17)
  out = aug.eval_transform(tf.constant(wide), out_size=20, mean=(0.,) * 3,
                           std=(1.,) * 3).numpy()
  np.testing.assert_allclose(out, wide[:, :, 5:25] / 255.0, atol=2e-5)


# ----------------------------------------------------------------------------
# Saliency masking
# ----------------------------------------------------------------------------


def _half_mask(h=16, w=16, frac=0.5):
  mask = np.zeros((h, w), np.float32)
  mask[:, :int(round(w * frac))] = 1.0
  return mask


def test_saliency_masking_replaces_background_with_one_grey_level():
  images = _images(200, h=16, w=16, seed=18)
  masks = np.repeat(_half_mask()[None], 200, 0)
  u = np.random.default_rng(18).uniform(size=(200, 2)).astype(np.float32)
  out = aug.saliency_mask_batch(tf.constant(images), tf.constant(masks),
                                tf.constant(u), prob=1.0).numpy()
  np.testing.assert_array_equal(out[:, :, :8], images[:, :, :8])
  greys = out[:, :, 8:].reshape(200, -1)
  assert (greys == greys[:, :1]).all()  # One level per image.
  np.testing.assert_array_equal(greys[:, 0], np.round(u[:, 1] * 255))
  assert greys[:, 0].std() > 50  # Levels spread over [0, 255].


def _mask_one(image, mask, seed, prob):
  """saliency_mask_batch on one image, its uniforms drawn from a seed."""
  u = tf.random.stateless_uniform([1, aug.NUM_SALIENCY_UNIFORMS],
                                  tf.constant(seed, tf.int64))
  return aug.saliency_mask_batch(tf.constant(image[None]),
                                 tf.constant(np.asarray(mask)[None]), u,
                                 prob=prob).numpy()[0]


def test_saliency_threshold_behaviour():
  image = _images(1, h=20, w=20, seed=19)[0]
  small = np.zeros((20, 20), np.float32)
  small[:3, :4] = 1.0  # 12 / 400 = 3% < 5%.
  big = _half_mask(20, 20)
  for k in range(20):
    seed = [k, 99]
    kept = _mask_one(image, small, seed, prob=1.0)
    np.testing.assert_array_equal(kept, image)
    masked = _mask_one(image, big, seed, prob=1.0)
    np.testing.assert_array_equal(masked[:, :10], image[:, :10])
    assert len(np.unique(masked[:, 10:])) == 1
  # Soft masks are binarised at 0.5; uint8 0/255 masks work too.
  soft = big * 0.6 + 0.2  # 0.8 inside, 0.2 outside.
  a = _mask_one(image, soft, seed, prob=1.0)
  b = _mask_one(image, (big * 255).astype(np.uint8), seed, prob=1.0)
  np.testing.assert_array_equal(a, masked)
  np.testing.assert_array_equal(b, masked)


def test_saliency_probability():
  n = 4000
  images = _images(n, h=8, w=8, seed=20)
  masks = np.repeat(_half_mask(8, 8)[None], n, 0)
  u = tf.random.stateless_uniform([n, 2], [20, 0])
  out = aug.saliency_mask_batch(tf.constant(images), tf.constant(masks), u,
                                prob=0.3).numpy()
  changed = (out != images).reshape(n, -1).any(axis=1)
  # A drawn grey level can equal every background pixel only by accident.
  assert abs(changed.mean() - 0.3) < 5 * np.sqrt(0.3 * 0.7 / n)
  # One image with seeded uniforms (as the streaming pipeline draws them).
  image, mask = images[0], masks[0]
  hits = [(_mask_one(image, mask, [k, 7], prob=0.5) != image).any()
          for k in range(200)]
  assert 0.35 < np.mean(hits) < 0.65
  with pytest.raises(ValueError, match="prob"):
    _mask_one(image, mask, [0, 0], prob=2.0)
