"""Offline demo domains built from installed packages or generated in NumPy.

Synopsis::

  from mdssl_jax.data import demo_data
  demo_data.list_demo_domains()          # ('digits', 'photos', 'textures')
  dom = demo_data.load_demo_domain("textures", image_size=32, seed=0)
  dom.train_images.shape                 # (2100, 32, 32, 3) uint8
  dom.train_masks.shape                  # (2100, 32, 32) float32 in {0, 1}

Nothing here touches the network or the disk beyond the data files shipped
inside scikit-learn and scikit-image, so the library can demo multi-domain
SSL (and RELICv2 saliency masking) on a machine without any dataset:

- ``digits``: scikit-learn's 1,797 real 8×8 handwritten digits (10 classes),
  upscaled and padded to the image size, grey repeated to 3 channels.
- ``photos``: random crops of 7 colour photographs from ``skimage.data``,
  labelled by source photograph (7 classes).
- ``textures``: 7 procedural texture families drawn as a foreground disc or
  square on a plain or differently-textured background; labelled by the
  foreground family, with the foreground shape returned as a saliency mask.

Every domain is a pure function of ``(image_size, seed)``; train and test
splits are disjoint (no test image is byte-identical to a train image).
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from mdssl_jax.data.domain import DomainData

_PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket",
                "hubble_deep_field", "retina", "immunohistochemistry")
TEXTURE_FAMILIES = ("stripes", "checkerboard", "dots", "blobs", "gradient",
                    "rings", "grain")
# Fixed per-domain tags keep the random streams of the domains independent.
_DOMAIN_TAGS = {"digits": 11, "photos": 12, "textures": 13}


def list_demo_domains() -> tuple[str, ...]:
  """Returns the names accepted by :func:`load_demo_domain`."""
  return tuple(_BUILDERS)


def load_demo_domain(name: str, *, image_size: int = 32,
                     seed: int = 0) -> DomainData:
  """Builds one demo domain deterministically.

  Results are cached per (name, image_size, seed); the returned arrays are
  read-only, so copy them before modifying in place.

  Args:
    name: one of :func:`list_demo_domains`.
    image_size: output side S in pixels (>= 8).
    seed: generation seed (crops, textures, train/test split).

  Returns:
    DomainData with train/test images [N, S, S, 3] uint8 and int32 labels;
    ``textures`` also has ``train_masks`` [N, S, S] float32 in {0, 1}.
  """
  if name not in _BUILDERS:
    raise ValueError(f"Unknown demo domain {name!r}; valid demo names are "
                     f"{list(_BUILDERS)}.")
  if int(image_size) != image_size or image_size < 8:
    raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}.")
  return _load_cached(name, int(image_size), int(seed))


@functools.lru_cache(maxsize=16)
def _load_cached(name: str, image_size: int, seed: int) -> DomainData:
  rng = np.random.default_rng([seed, _DOMAIN_TAGS[name]])
  dom = _BUILDERS[name](image_size, rng)
  for field in ("train_images", "train_labels", "test_images", "test_labels",
                "train_masks"):
    arr = getattr(dom, field)
    if arr is not None:
      arr.setflags(write=False)
  return dom


# ----------------------------------------------------------------------------
# NumPy resampling helpers (vectorised; no TensorFlow import needed).
# ----------------------------------------------------------------------------


def _bilinear_sample(images: np.ndarray, ys: np.ndarray,
                     xs: np.ndarray) -> np.ndarray:
  """Bilinearly samples each image on its own separable grid.

  Args:
    images: [K, H, W, C] float array (or [H, W, C], shared by all K grids).
    ys: [K, Sy] row coordinates in pixel units (pixel centres at integers).
    xs: [K, Sx] column coordinates.

  Returns:
    [K, Sy, Sx, C] float32 samples (edges clamped).
  """
  shared = images.ndim == 3
  h, w = images.shape[-3], images.shape[-2]
  ys = np.clip(ys, 0.0, h - 1.0)
  xs = np.clip(xs, 0.0, w - 1.0)
  y0 = np.floor(ys).astype(np.int64)
  x0 = np.floor(xs).astype(np.int64)
  y1 = np.minimum(y0 + 1, h - 1)
  x1 = np.minimum(x0 + 1, w - 1)
  wy = (ys - y0)[:, :, None, None].astype(np.float32)
  wx = (xs - x0)[:, None, :, None].astype(np.float32)

  def gather(yi, xi):
    if shared:
      return images[yi[:, :, None], xi[:, None, :]]
    k = np.arange(len(yi))[:, None, None]
    return images[k, yi[:, :, None], xi[:, None, :]]

  top = gather(y0, x0) * (1 - wx) + gather(y0, x1) * wx
  bottom = gather(y1, x0) * (1 - wx) + gather(y1, x1) * wx
  return (top * (1 - wy) + bottom * wy).astype(np.float32)


def _resize_bilinear(images: np.ndarray, out_h: int,
                     out_w: int | None = None) -> np.ndarray:
  """Resizes [K, h, w, C] to [K, out_h, out_w, C] (half-pixel centres)."""
  out_w = out_h if out_w is None else out_w
  k, h, w = images.shape[:3]
  ys = (np.arange(out_h) + 0.5) * (h / out_h) - 0.5
  xs = (np.arange(out_w) + 0.5) * (w / out_w) - 0.5
  return _bilinear_sample(images.astype(np.float32),
                          np.broadcast_to(ys, (k, out_h)),
                          np.broadcast_to(xs, (k, out_w)))


def _to_uint8(x: np.ndarray) -> np.ndarray:
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _stratified_split(
    labels: np.ndarray, test_frac: float,
    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Per-class random split; returns sorted (train_idx, test_idx)."""
  train, test = [], []
  for c in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == c))
    n_test = int(round(test_frac * len(idx)))
    test.append(idx[:n_test])
    train.append(idx[n_test:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _drop_test_duplicates(train: np.ndarray,
                          test: np.ndarray) -> np.ndarray:
  """Boolean keep-mask over test rows: False where a train image is equal."""
  seen = {img.tobytes() for img in train}
  return np.array([img.tobytes() not in seen for img in test], dtype=bool)


# ----------------------------------------------------------------------------
# digits
# ----------------------------------------------------------------------------


def _build_digits(size: int, rng: np.random.Generator) -> DomainData:
  # Imported lazily: only this domain needs scikit-learn.
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  labels = digits.target.astype(np.int32)
  # 0..16 ink intensity -> 0..255, bright digit on black like MNIST.
  raw = digits.images.astype(np.float32)[..., None] * (255.0 / 16.0)
  # 8 px -> 7/8 of the side, then pad: the MNIST 28-in-32 framing.
  inner = max(1, int(round(size * 7 / 8)))
  up = _resize_bilinear(raw, inner)
  lo = (size - inner) // 2
  images = np.zeros((len(raw), size, size, 1), np.float32)
  images[:, lo:lo + inner, lo:lo + inner] = up
  images = np.repeat(_to_uint8(images), 3, axis=-1)
  train_idx, test_idx = _stratified_split(labels, 0.2, rng)
  keep = _drop_test_duplicates(images[train_idx], images[test_idx])
  test_idx = test_idx[keep]
  return DomainData(
      name="digits",
      train_images=images[train_idx], train_labels=labels[train_idx],
      test_images=images[test_idx], test_labels=labels[test_idx],
      num_classes=10)


# ----------------------------------------------------------------------------
# photos
# ----------------------------------------------------------------------------

_PHOTO_TRAIN_PER_CLASS = 300
_PHOTO_TEST_PER_CLASS = 72


def _photo_crops(photo: np.ndarray, count: int, size: int,
                 rng: np.random.Generator) -> np.ndarray:
  """Random square crops with visible structure, resized to size×size."""
  # Block-average, then a mild bilinear step, so the short side is 4·size
  # and crops (1–2× size) need at most 2× downsampling (little aliasing).
  short = min(photo.shape[:2])
  f = max(1, short // (4 * size))
  h, w = (photo.shape[0] // f) * f, (photo.shape[1] // f) * f
  img = photo[:h, :w].astype(np.float32).reshape(h // f, f, w // f, f, 3)
  img = img.mean(axis=(1, 3))
  scale = 4 * size / min(img.shape[:2])
  img = _resize_bilinear(img[None], int(round(img.shape[0] * scale)),
                         int(round(img.shape[1] * scale)))[0]

  out = []
  for _ in range(100):
    if sum(len(o) for o in out) >= count:
      break
    n = count + count // 4
    side = rng.uniform(size, 2 * size, n)
    y = rng.uniform(0, img.shape[0] - side)
    x = rng.uniform(0, img.shape[1] - side)
    grid = (np.arange(size) + 0.5) / size
    ys = y[:, None] + grid[None] * side[:, None] - 0.5
    xs = x[:, None] + grid[None] * side[:, None] - 0.5
    crops = _to_uint8(_bilinear_sample(img, ys, xs))
    # Reject near-flat crops (black retina corners, empty sky): they carry
    # no signal and could repeat byte-for-byte across splits.
    out.append(crops[crops.reshape(n, -1).std(axis=1) >= 8.0])
  out = np.concatenate(out)
  if len(out) < count:
    raise RuntimeError(f"Only {len(out)} of {count} photo crops have "
                       "visible structure; lower the crop count.")
  return out[:count]


def _build_photos(size: int, rng: np.random.Generator) -> DomainData:
  from skimage import data as skdata  # pylint: disable=g-import-not-at-top
  per = _PHOTO_TRAIN_PER_CLASS + _PHOTO_TEST_PER_CLASS
  images, labels = [], []
  for label, name in enumerate(_PHOTO_NAMES):
    photo = getattr(skdata, name)()[..., :3]
    images.append(_photo_crops(photo, per, size, rng))
    labels.append(np.full(per, label, np.int32))
  images, labels = np.concatenate(images), np.concatenate(labels)
  test_mask = np.zeros(len(labels), bool)
  for label in range(len(_PHOTO_NAMES)):
    test_mask[label * per + _PHOTO_TRAIN_PER_CLASS:(label + 1) * per] = True
  train_idx, test_idx = np.flatnonzero(~test_mask), np.flatnonzero(test_mask)
  keep = _drop_test_duplicates(images[train_idx], images[test_idx])
  test_idx = test_idx[keep]
  return DomainData(
      name="photos",
      train_images=images[train_idx], train_labels=labels[train_idx],
      test_images=images[test_idx], test_labels=labels[test_idx],
      num_classes=len(_PHOTO_NAMES))


# ----------------------------------------------------------------------------
# textures
# ----------------------------------------------------------------------------

_TEXTURE_TRAIN_PER_CLASS = 300
_TEXTURE_TEST_PER_CLASS = 72


def _rotated(k: int, size: int, rng: np.random.Generator):
  """Per-image rotated coordinates u, v in image-side units: [K, S, S]."""
  g = ((np.arange(size) + 0.5) / size - 0.5).astype(np.float32)
  yy, xx = np.meshgrid(g, g, indexing="ij")
  theta = rng.uniform(0, np.pi, (k, 1, 1)).astype(np.float32)
  u = xx * np.cos(theta) + yy * np.sin(theta)
  v = -xx * np.sin(theta) + yy * np.cos(theta)
  return u, v


def _texture_field(family: int, k: int, size: int,
                   rng: np.random.Generator) -> np.ndarray:
  """Scalar texture field t in [0, 1] for k images of one family: [K, S, S]."""

  def param(lo, hi):
    return rng.uniform(lo, hi, (k, 1, 1)).astype(np.float32)

  two_pi = np.float32(2 * np.pi)
  phase = param(0, 2 * np.pi)
  name = TEXTURE_FAMILIES[family]
  if name == "stripes":
    u, _ = _rotated(k, size, rng)
    f = param(2.5, 5.0)
    return (np.sin(two_pi * f * u + phase) > 0).astype(np.float32)
  if name == "checkerboard":
    u, v = _rotated(k, size, rng)
    f = param(1.5, 3.0)
    return (np.sin(two_pi * f * u + phase) * np.sin(two_pi * f * v)
            > 0).astype(np.float32)
  if name == "dots":
    u, v = _rotated(k, size, rng)
    f, r = param(3.0, 5.0), param(0.2, 0.32)
    du = (f * u + phase / two_pi) % 1.0 - 0.5
    dv = (f * v) % 1.0 - 0.5
    return (du * du + dv * dv < r * r).astype(np.float32)
  if name == "blobs":
    coarse = rng.uniform(0, 1, (k, 5, 5, 1)).astype(np.float32)
    t = _resize_bilinear(coarse, size)[..., 0]
    med = np.median(t.reshape(k, -1), axis=1)[:, None, None]
    return (t > med).astype(np.float32)
  if name == "gradient":
    u, _ = _rotated(k, size, rng)
    return np.clip(u * np.float32(np.sqrt(2)) + 0.5, 0, 1)
  if name == "rings":
    g = ((np.arange(size) + 0.5) / size - 0.5).astype(np.float32)
    yy, xx = np.meshgrid(g, g, indexing="ij")
    cy, cx = param(-0.3, 0.3), param(-0.3, 0.3)
    rad = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    f = param(2.0, 4.0)
    return (np.sin(two_pi * f * rad + phase) > 0).astype(np.float32)
  if name == "grain":
    return rng.uniform(0, 1, (k, size, size)).astype(np.float32)
  raise AssertionError(name)


def _two_colours(k: int, contrast: float, rng: np.random.Generator):
  """A darker and a brighter random colour per image, in random roles.

  Returns two [K, 1, 1, 3] float32 arrays whose per-channel gap is at least
  ~0.1·contrast/0.45 (contrast 1: dark in [0, .45], bright in [.55, 1]).
  """
  dark = rng.uniform(0.0, 0.45, (k, 1, 1, 3))
  bright = rng.uniform(0.55, 1.0, (k, 1, 1, 3))
  mid = (dark + bright) / 2
  dark = mid + contrast * (dark - mid)
  bright = mid + contrast * (bright - mid)
  swap = rng.uniform(size=(k, 1, 1, 1)) < 0.5
  return (np.where(swap, bright, dark).astype(np.float32),
          np.where(swap, dark, bright).astype(np.float32))


def _paint(families: np.ndarray, size: int, contrast: float,
           rng: np.random.Generator) -> np.ndarray:
  """Coloured textures for a vector of family ids: [K, S, S, 3] in [0, 1]."""
  out = np.zeros((len(families), size, size, 3), np.float32)
  for fam in np.unique(families):
    idx = np.flatnonzero(families == fam)
    t = _texture_field(int(fam), len(idx), size, rng)[..., None]
    c1, c2 = _two_colours(len(idx), contrast, rng)
    out[idx] = c1 + (c2 - c1) * t
  return out


def _shape_masks(k: int, size: int, rng: np.random.Generator) -> np.ndarray:
  """Foreground discs or squares covering 25–60% of the image: [K, S, S]."""
  g = ((np.arange(size) + 0.5) / size).astype(np.float32)
  yy, xx = np.meshgrid(g, g, indexing="ij")
  area = rng.uniform(0.25, 0.6, (k, 1, 1)).astype(np.float32)
  disc = rng.uniform(size=(k, 1, 1)) < 0.5
  half = np.where(disc, np.sqrt(area / np.pi), np.sqrt(area) / 2)
  cy = rng.uniform(half, 1 - half).astype(np.float32)
  cx = rng.uniform(half, 1 - half).astype(np.float32)
  in_disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= half ** 2
  in_square = (np.abs(yy - cy) <= half) & (np.abs(xx - cx) <= half)
  return np.where(disc, in_disc, in_square).astype(np.float32)


def _build_textures(size: int, rng: np.random.Generator) -> DomainData:
  n_fam = len(TEXTURE_FAMILIES)
  per = _TEXTURE_TRAIN_PER_CLASS + _TEXTURE_TEST_PER_CLASS
  labels = np.repeat(np.arange(n_fam, dtype=np.int32), per)
  k = len(labels)
  fg = _paint(labels, size, 1.0, rng)
  # Background: half plain colour, half a fainter texture of another family
  # (fainter so the foreground, i.e. the label, dominates the image).
  bg_family = (labels + rng.integers(1, n_fam, k)) % n_fam
  bg = _paint(bg_family, size, 0.4, rng)
  plain = rng.uniform(size=k) < 0.5
  bg[plain] = rng.uniform(0, 1, (int(plain.sum()), 1, 1, 3))
  masks = _shape_masks(k, size, rng)
  m = masks[..., None]
  images = _to_uint8(255.0 * (bg + m * (fg - bg)))
  is_test = np.tile(np.arange(per) >= _TEXTURE_TRAIN_PER_CLASS, n_fam)
  train_idx, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)
  keep = _drop_test_duplicates(images[train_idx], images[test_idx])
  test_idx = test_idx[keep]
  return DomainData(
      name="textures",
      train_images=images[train_idx], train_labels=labels[train_idx],
      test_images=images[test_idx], test_labels=labels[test_idx],
      num_classes=n_fam, train_masks=masks[train_idx])


_BUILDERS: dict[str, Callable[[int, np.random.Generator], DomainData]] = {
    "digits": _build_digits,
    "photos": _build_photos,
    "textures": _build_textures,
}
