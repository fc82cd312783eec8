"""Labelled in-memory image arrays per domain: demo, .npz files or TFDS.

Synopsis::

  from mdssl_jax.data import sources
  sources.validate_data_config(config.data)     # cheap, raises ValueError
  domains = sources.load_domains(config.data)   # list[DomainData]

A domain entry of ``config.data.domains`` is a dict with ``name`` and
``source`` plus source-specific keys:

- ``source="demo"``: ``demo_name`` in ``demo_data.list_demo_domains()``.
- ``source="npz"``: ``path`` (directory holding ``train.npz``/``test.npz`` with
  arrays ``images`` [N, H, W, C] uint8 and ``labels`` [N]); optional
  ``train_file``, ``test_file``, ``masks_path`` (an .npz with ``masks``
  [N, H, W] aligned by index with the train images) and ``num_classes``.
  ``path`` may use ``~`` and environment variables (``$MDSSL_SHARED_DATA``).
- ``source="tfds"``: ``tfds_name``; optional ``split`` ("train"),
  ``eval_split`` ("test"; e.g. "train[80%:]" for eurosat), ``image_key``
  ("image"), ``label_key`` ("label").

Every source also accepts ``max_train``/``max_test`` (a deterministic
subsample: stratified by class with the data seed for demo/npz, the first
examples in TFDS's fixed file order for tfds) and ``resize`` (overrides the
data-level ``resize``). Images end up [N, S, S, 3] uint8 with S =
``image_size``: grey is repeated to 3 channels; with ``resize="pad"`` images
no larger than S are zero-padded centrally (28 -> 32 pads 2 px per side);
otherwise (and for larger images) the central square is resized with
antialiased bilinear interpolation.

TFDS sets are decoded and resized per example in tf.data and cached in
memory as uint8 (CIFAR-size sets at 32 px take tens of MB). A set whose
resized arrays would exceed ``config.data.max_in_memory_gb`` raises a
ValueError; use ``max_train``/``max_test`` or a smaller ``image_size``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

SOURCES = ("demo", "npz", "tfds")
RESIZE_MODES = ("pad", "resize")

_COMMON_KEYS = {"name", "source", "max_train", "max_test", "resize"}
_SOURCE_KEYS = {
    "demo": {"demo_name"},
    "npz": {"path", "train_file", "test_file", "masks_path", "num_classes"},
    "tfds": {"tfds_name", "split", "eval_split", "image_key", "label_key"},
}
_REQUIRED_KEYS = {"demo": "demo_name", "npz": "path", "tfds": "tfds_name"}
_CHUNK = 1024  # Images per tf.image.resize call: bounds peak memory.


class DatasetNotFoundError(FileNotFoundError):
  """A TFDS dataset is not prepared in data_dir and download is off."""


@dataclasses.dataclass
class DomainData:
  """One labelled domain, resized to a common square size.

  Attributes:
    name: display name.
    train_images: [N, S, S, 3] uint8.
    train_labels: [N] int32 in [0, num_classes).
    test_images: [M, S, S, 3] uint8.
    test_labels: [M] int32.
    num_classes: number of classes.
    train_masks: optional [N, S, S] float32 saliency masks in [0, 1],
      aligned with train_images by index.
  """
  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  train_masks: np.ndarray | None = None

  def __post_init__(self):
    for split in ("train", "test"):
      images = getattr(self, f"{split}_images")
      labels = getattr(self, f"{split}_labels")
      if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"Domain {self.name!r}: {split}_images must be [N, S, S, 3] uint8, "
            f"got {images.shape} {images.dtype}.")
      if labels.shape != (len(images),):
        raise ValueError(
            f"Domain {self.name!r}: {split}_labels must have shape "
            f"({len(images)},), got {labels.shape}.")
    if self.train_masks is not None and (
        self.train_masks.shape != self.train_images.shape[:3]):
      raise ValueError(
          f"Domain {self.name!r}: train_masks must have shape "
          f"{self.train_images.shape[:3]}, got {self.train_masks.shape}.")

  @property
  def image_size(self) -> int:
    return int(self.train_images.shape[1])


def cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
  """Reads a key from a dict or ConfigDict, treating None as missing."""
  value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(
      cfg, key, default)
  return default if value is None else value


_get = cfg_get


def _domain_label(domain_cfg: Any) -> str:
  return repr(_get(domain_cfg, "name", "<unnamed>"))


# ----------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------


def validate_domain_config(domain_cfg: Any) -> None:
  """Cheap structural checks of one domain entry (no file or TFDS access).

  Args:
    domain_cfg: dict or ConfigDict with ``name``, ``source`` and the
      source-specific keys listed in the module docstring.

  Raises:
    ValueError: naming the offending key and how to fix it.
  """
  if not hasattr(domain_cfg, "get"):
    raise ValueError(
        f"Each entry of config.data.domains must be a dict, got "
        f"{type(domain_cfg).__name__}: {domain_cfg!r}.")
  label = _domain_label(domain_cfg)
  if not _get(domain_cfg, "name"):
    raise ValueError(f"Domain {domain_cfg!r} needs a 'name' (display name).")
  source = _get(domain_cfg, "source")
  if source not in SOURCES:
    raise ValueError(f"Domain {label}: unknown source {source!r}; valid "
                     f"sources are {list(SOURCES)}.")
  allowed = _COMMON_KEYS | _SOURCE_KEYS[source]
  unknown = sorted(set(domain_cfg.keys()) - allowed)
  if unknown:
    raise ValueError(f"Domain {label}: unknown keys {unknown} for "
                     f"source={source!r}; allowed keys are {sorted(allowed)}.")
  required = _REQUIRED_KEYS[source]
  if not _get(domain_cfg, required):
    raise ValueError(f"Domain {label}: source={source!r} needs "
                     f"'{required}'.")
  if source == "demo":
    from mdssl_jax.data import demo_data  # pylint: disable=g-import-not-at-top
    if domain_cfg["demo_name"] not in demo_data.list_demo_domains():
      raise ValueError(
          f"Domain {label}: unknown demo_name {domain_cfg['demo_name']!r}; "
          f"valid demo names are {list(demo_data.list_demo_domains())}.")
  for key in ("max_train", "max_test", "num_classes"):
    value = _get(domain_cfg, key)
    if value is not None and (not isinstance(value, (int, np.integer))
                              or value < 1):
      raise ValueError(f"Domain {label}: '{key}' must be a positive integer "
                       f"or None, got {value!r}.")
  resize = _get(domain_cfg, "resize")
  if resize is not None and resize not in RESIZE_MODES:
    raise ValueError(f"Domain {label}: resize={resize!r}; use one of "
                     f"{list(RESIZE_MODES)}.")


def validate_data_config(data_cfg: Any) -> None:
  """Cheap checks of ``config.data`` (no file or TFDS access).

  Args:
    data_cfg: ``config.data`` ConfigDict (or dict).

  Raises:
    ValueError: naming the offending key and how to fix it.
  """
  domains = _get(data_cfg, "domains")
  if not domains or isinstance(domains, (str, bytes, Mapping)):
    raise ValueError("config.data.domains must be a non-empty list of domain "
                     "dicts, e.g. [dict(name='digits', source='demo', "
                     "demo_name='digits')].")
  names = []
  for domain_cfg in domains:
    validate_domain_config(domain_cfg)
    names.append(domain_cfg["name"])
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates:
    raise ValueError(f"config.data.domains has duplicate names {duplicates}; "
                     "give every domain a distinct 'name'.")
  size = _get(data_cfg, "image_size")
  if not isinstance(size, (int, np.integer)) or size < 8:
    raise ValueError(f"config.data.image_size must be an integer >= 8, got "
                     f"{size!r}.")
  resize = _get(data_cfg, "resize", "pad")
  if resize not in RESIZE_MODES:
    raise ValueError(f"config.data.resize={resize!r}; use one of "
                     f"{list(RESIZE_MODES)}.")
  batch = _get(data_cfg, "per_domain_batch")
  if batch is not None and (not isinstance(batch, (int, np.integer))
                            or batch < 1):
    raise ValueError(f"config.data.per_domain_batch must be a positive "
                     f"integer, got {batch!r}.")
  for key in ("mean", "std"):
    value = _get(data_cfg, key)
    if value is None:
      continue
    if len(value) != 3:
      raise ValueError(f"config.data.{key} must have 3 entries (RGB, in "
                       f"[0, 1] units), got {value!r}.")
    if key == "std" and min(value) <= 0:
      raise ValueError(f"config.data.std must be positive, got {value!r}.")
    if max(abs(v) for v in value) > 1.5:
      raise ValueError(f"config.data.{key}={value!r} looks like 0-255 units; "
                       "give it in [0, 1] units (e.g. 0.485, not 123.7).")
  gb = _get(data_cfg, "max_in_memory_gb", 8.0)
  if not gb > 0:
    raise ValueError(f"config.data.max_in_memory_gb must be > 0, got {gb!r}.")


# ----------------------------------------------------------------------------
# Resizing and subsampling
# ----------------------------------------------------------------------------


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


def _fit_masks(masks: np.ndarray, size: int, mode: str,
               what: str) -> np.ndarray:
  """Masks [N, H, W] (bool, uint8 0/1 or 0/255, float [0,1]) -> float32."""
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


def subsample_indices(labels: np.ndarray, max_count: int | None,
                      seed: int) -> np.ndarray:
  """Deterministic class-stratified subsample, returned in original order.

  Each class keeps about max_count · n_c / n examples (a seeded random
  subset); the total is exactly min(max_count, n).

  Args:
    labels: [n] integer labels.
    max_count: maximum number of indices to keep (None keeps all).
    seed: subsample seed.

  Returns:
    [min(max_count, n)] sorted int64 indices.
  """
  n = len(labels)
  if max_count is None or max_count >= n:
    return np.arange(n)
  rng = np.random.default_rng(seed)
  perm = rng.permutation(n)
  classes, inverse, counts = np.unique(labels[perm], return_inverse=True,
                                       return_counts=True)
  del classes
  # Rank of each permuted example within its class; keys (rank+1/2)/n_c
  # interleave the classes proportionally, so the first max_count keys are
  # a stratified sample.
  order = np.argsort(inverse, kind="stable")
  rank = np.empty(n, np.int64)
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  rank[order] = np.arange(n) - np.repeat(starts, counts)
  keys = (rank + 0.5) / counts[inverse]
  chosen = perm[np.argsort(keys, kind="stable")[:max_count]]
  return np.sort(chosen)


def _check_memory(name: str, count: int, size: int, max_gb: float,
                  extra_bytes_per_image: int = 0) -> None:
  need = count * (size * size * 3 + extra_bytes_per_image)
  if need > max_gb * 2 ** 30:
    raise ValueError(
        f"Domain {name!r}: {count} images at {size}x{size} need "
        f"{need / 2 ** 30:.2f} GiB in memory, more than "
        f"config.data.max_in_memory_gb={max_gb}. Set max_train/max_test on "
        "the domain, lower config.data.image_size, or raise "
        "config.data.max_in_memory_gb.")


# ----------------------------------------------------------------------------
# npz
# ----------------------------------------------------------------------------


def _read_npz(path: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
  """Reads the given arrays from an .npz, with clear errors."""
  if not os.path.isfile(path):
    raise ValueError(f"{path}: file not found (check the domain's 'path' / "
                     "file name).")
  try:
    data = np.load(path, allow_pickle=False)
  except Exception as e:  # BadZipFile, OSError, EOFError, pickled data ...
    raise ValueError(f"{path}: unreadable or corrupt .npz file "
                     f"({type(e).__name__}: {e}).") from e
  if not isinstance(data, np.lib.npyio.NpzFile):
    raise ValueError(f"{path}: expected an .npz archive (np.savez), got a "
                     "single .npy array.")
  with data:
    missing = [k for k in keys if k not in data.files]
    if missing:
      raise ValueError(
          f"{path}: expects arrays {' and '.join(repr(k) for k in keys)}, "
          f"missing {missing}; found {sorted(data.files)}.")
    try:
      return {k: data[k] for k in keys}
    except Exception as e:  # Truncated or corrupt member.
      raise ValueError(f"{path}: corrupt .npz member "
                       f"({type(e).__name__}: {e}).") from e


def _read_npz_split(path: str) -> tuple[np.ndarray, np.ndarray]:
  arrays = _read_npz(path, ("images", "labels"))
  images, labels = arrays["images"], arrays["labels"]
  if labels.ndim != 1 or len(labels) != len(images):
    raise ValueError(f"{path}: 'labels' must be [N] with N = {len(images)} "
                     f"images, got shape {labels.shape}.")
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{path}: 'labels' must be integers, got {labels.dtype}.")
  if labels.size and labels.min() < 0:
    raise ValueError(f"{path}: 'labels' must be >= 0, got min "
                     f"{labels.min()}.")
  return images, labels.astype(np.int32)


def _load_npz(domain_cfg: Any, *, image_size: int, mode: str, seed: int,
              max_gb: float) -> DomainData:
  name = domain_cfg["name"]
  root = os.path.expanduser(os.path.expandvars(str(domain_cfg["path"])))
  if not os.path.isdir(root):
    raise ValueError(f"Domain {name!r}: path {root!r} is not a directory; "
                     "it must contain train.npz and test.npz.")
  train_path = os.path.join(root, _get(domain_cfg, "train_file", "train.npz"))
  test_path = os.path.join(root, _get(domain_cfg, "test_file", "test.npz"))
  train_images, train_labels = _read_npz_split(train_path)
  test_images, test_labels = _read_npz_split(test_path)

  masks = None
  masks_path = _get(domain_cfg, "masks_path")
  if masks_path:
    masks_path = os.path.expanduser(os.path.expandvars(str(masks_path)))
    masks = _read_npz(masks_path, ("masks",))["masks"]
    if len(masks) != len(train_images) or (
        masks.shape[1:3] != train_images.shape[1:3]):
      raise ValueError(
          f"{masks_path}: 'masks' must be [N, H, W] aligned with "
          f"{train_path} images {train_images.shape[:3]}, got {masks.shape}.")

  train_idx = subsample_indices(train_labels,
                                _get(domain_cfg, "max_train"), seed)
  test_idx = subsample_indices(test_labels, _get(domain_cfg, "max_test"),
                               seed + 1)
  _check_memory(name, len(train_idx) + len(test_idx), image_size, max_gb,
                extra_bytes_per_image=0 if masks is None else
                4 * image_size * image_size)
  num_classes = _get(domain_cfg, "num_classes")
  if num_classes is None:
    names_file = os.path.join(root, "class_names.txt")
    if os.path.isfile(names_file):
      with open(names_file) as f:
        num_classes = sum(1 for line in f if line.strip())
    else:
      num_classes = int(max(train_labels.max(initial=0),
                            test_labels.max(initial=0))) + 1
  top = int(max(train_labels.max(initial=0), test_labels.max(initial=0)))
  if top >= num_classes:
    raise ValueError(f"Domain {name!r}: label {top} >= num_classes="
                     f"{num_classes}; fix 'num_classes' or the labels.")
  return DomainData(
      name=name,
      train_images=fit_images(train_images[train_idx], image_size, mode,
                              what=train_path),
      train_labels=train_labels[train_idx],
      test_images=fit_images(test_images[test_idx], image_size, mode,
                             what=test_path),
      test_labels=test_labels[test_idx],
      num_classes=int(num_classes),
      train_masks=None if masks is None else _fit_masks(
          masks[train_idx], image_size, mode, masks_path))


# ----------------------------------------------------------------------------
# tfds
# ----------------------------------------------------------------------------


def _fit_tf(image: tf.Tensor, size: int, mode: str) -> tf.Tensor:
  """Per-example version of :func:`fit_images` for tf.data: [h, w, c] uint8."""
  image = tf.convert_to_tensor(image)
  if image.shape.rank == 2:
    image = image[..., None]
  channels = image.shape[-1]
  if channels == 1:
    image = tf.tile(image, [1, 1, 3])
  elif channels is None:
    image = tf.cond(tf.shape(image)[-1] == 1,
                    lambda: tf.tile(image, [1, 1, 3]),
                    lambda: image[..., :3])
  else:
    image = image[..., :3]
  h, w = tf.shape(image)[0], tf.shape(image)[1]

  def crop_resize():
    side = tf.minimum(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[top:top + side, left:left + side]
    out = tf.image.resize(tf.cast(square, tf.float32), (size, size),
                          method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

  fits = tf.logical_and(h <= size, w <= size)
  exact = tf.logical_and(tf.equal(h, size), tf.equal(w, size))
  if mode == "pad":
    out = tf.cond(fits, lambda: tf.image.resize_with_crop_or_pad(
        image, size, size), crop_resize)
  else:
    out = tf.cond(exact, lambda: image, crop_resize)
  return tf.ensure_shape(out, (size, size, 3))


def _tfds_split(tfds_name: str, split: str, *, domain: str, image_size: int,
                mode: str, data_dir: str | None, download: bool,
                max_count: int | None, max_gb: float, image_key: str,
                label_key: str) -> tuple[np.ndarray, np.ndarray, int]:
  """Loads one TFDS split into memory as ([n,S,S,3] uint8, [n] int32, K)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    ds, info = tfds.load(tfds_name, split=split, data_dir=data_dir,
                         download=download, with_info=True,
                         shuffle_files=False)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"Domain {domain!r}: tfds_name={tfds_name!r} is not a "
                     f"TFDS builder ({e}); see tfds.list_builders().") from e
  except AssertionError as e:
    where = data_dir or tfds.core.constants.DATA_DIR
    raise DatasetNotFoundError(
        f"Domain {domain!r}: TFDS dataset {tfds_name!r} is not prepared in "
        f"data_dir={where!r} and download is off. Prepare it once with\n"
        f"  tfds build {tfds_name} --data_dir={where}\n"
        f"or\n  python -c \"import tensorflow_datasets as tfds; "
        f"tfds.builder('{tfds_name}', data_dir='{where}')"
        f".download_and_prepare()\"\n"
        "or rerun with --config.data.download=True (needs network access)."
    ) from e
  except (ValueError, KeyError) as e:
    raise ValueError(
        f"Domain {domain!r}: cannot load split {split!r} of TFDS "
        f"{tfds_name!r}: {e}. For datasets with only a train split (e.g. "
        "eurosat) use split='train[:80%]', eval_split='train[80%:]'.") from e

  features = info.features
  for key, what in ((image_key, "image_key"), (label_key, "label_key")):
    if key not in features:
      raise ValueError(f"Domain {domain!r}: TFDS {tfds_name!r} has no feature "
                       f"{key!r} ({what}); available: {sorted(features)}.")
  label_feature = features[label_key]
  num_classes = getattr(label_feature, "num_classes", None)

  known = None
  try:
    known = info.splits[split].num_examples  # Empty under mock_data.
  except (KeyError, ValueError, TypeError):
    pass
  if known:
    _check_memory(domain, min(known, max_count or known), image_size, max_gb)
  if max_count is not None:
    ds = ds.take(max_count)
  ds = ds.map(lambda ex: (_fit_tf(ex[image_key], image_size, mode),
                          tf.cast(ex[label_key], tf.int32)),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(_CHUNK).prefetch(2)
  images, labels, count = [], [], 0
  for image_batch, label_batch in ds.as_numpy_iterator():
    count += len(image_batch)
    _check_memory(domain, count, image_size, max_gb)
    images.append(image_batch)
    labels.append(label_batch)
  if not images:
    raise ValueError(f"Domain {domain!r}: split {split!r} of TFDS "
                     f"{tfds_name!r} is empty.")
  labels = np.concatenate(labels)
  if num_classes is None:
    num_classes = int(labels.max(initial=0)) + 1
  return np.concatenate(images), labels, int(num_classes)


def _load_tfds(domain_cfg: Any, *, image_size: int, mode: str,
               data_dir: str | None, download: bool,
               max_gb: float) -> DomainData:
  name = domain_cfg["name"]
  kwargs = dict(domain=name, image_size=image_size, mode=mode,
                data_dir=data_dir, download=download, max_gb=max_gb,
                image_key=_get(domain_cfg, "image_key", "image"),
                label_key=_get(domain_cfg, "label_key", "label"))
  tfds_name = domain_cfg["tfds_name"]
  train_images, train_labels, num_classes = _tfds_split(
      tfds_name, _get(domain_cfg, "split", "train"),
      max_count=_get(domain_cfg, "max_train"), **kwargs)
  test_images, test_labels, _ = _tfds_split(
      tfds_name, _get(domain_cfg, "eval_split", "test"),
      max_count=_get(domain_cfg, "max_test"), **kwargs)
  return DomainData(name=name, train_images=train_images,
                    train_labels=train_labels, test_images=test_images,
                    test_labels=test_labels, num_classes=num_classes)


# ----------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------


def _subsample_domain(dom: DomainData, max_train: int | None,
                      max_test: int | None, seed: int) -> DomainData:
  train_idx = subsample_indices(dom.train_labels, max_train, seed)
  test_idx = subsample_indices(dom.test_labels, max_test, seed + 1)
  return dataclasses.replace(
      dom,
      train_images=dom.train_images[train_idx],
      train_labels=dom.train_labels[train_idx],
      test_images=dom.test_images[test_idx],
      test_labels=dom.test_labels[test_idx],
      train_masks=None if dom.train_masks is None
      else dom.train_masks[train_idx])


def load_domain(domain_cfg: Any, *, image_size: int, data_dir: str | None,
                download: bool, resize: str = "pad", seed: int = 0,
                max_in_memory_gb: float = 8.0) -> DomainData:
  """Loads one domain into memory at image_size × image_size.

  Args:
    domain_cfg: one entry of ``config.data.domains`` (see module docstring).
    image_size: output side S.
    data_dir: TFDS data directory (None: the TFDS default).
    download: allow TFDS to download and prepare missing datasets.
    resize: "pad" or "resize" (a domain's own ``resize`` key wins).
    seed: data seed for demo generation and stratified subsampling.
    max_in_memory_gb: refuse domains whose arrays would exceed this.

  Returns:
    DomainData with [N, S, S, 3] uint8 images and int32 labels.

  Raises:
    ValueError: bad config, unreadable files, too large for memory.
    DatasetNotFoundError: TFDS data missing and download is False.
  """
  validate_domain_config(domain_cfg)
  mode = _get(domain_cfg, "resize", resize)
  if mode not in RESIZE_MODES:
    raise ValueError(f"resize={mode!r}; use one of {list(RESIZE_MODES)}.")
  source = domain_cfg["source"]
  name = domain_cfg["name"]
  if source == "demo":
    from mdssl_jax.data import demo_data  # pylint: disable=g-import-not-at-top
    dom = demo_data.load_demo_domain(domain_cfg["demo_name"],
                                     image_size=image_size, seed=seed)
    dom = _subsample_domain(dom, _get(domain_cfg, "max_train"),
                            _get(domain_cfg, "max_test"), seed)
    return dataclasses.replace(dom, name=name)
  if source == "npz":
    return _load_npz(domain_cfg, image_size=image_size, mode=mode, seed=seed,
                     max_gb=max_in_memory_gb)
  return _load_tfds(domain_cfg, image_size=image_size, mode=mode,
                    data_dir=data_dir, download=download,
                    max_gb=max_in_memory_gb)


def load_domains(data_cfg: Any) -> list[DomainData]:
  """Validates ``config.data`` and loads every domain in order.

  Args:
    data_cfg: ``config.data`` with ``domains``, ``image_size``, ``resize``,
      ``data_dir``, ``download``, ``seed`` (data seed, default 0) and
      ``max_in_memory_gb`` (default 8).

  Returns:
    list of DomainData, one per entry of ``data_cfg.domains``.
  """
  validate_data_config(data_cfg)
  out = []
  for domain_cfg in data_cfg["domains"]:
    dom = load_domain(
        domain_cfg, image_size=int(data_cfg["image_size"]),
        data_dir=_get(data_cfg, "data_dir"),
        download=bool(_get(data_cfg, "download", False)),
        resize=_get(data_cfg, "resize", "pad"),
        seed=int(_get(data_cfg, "seed", 0)),
        max_in_memory_gb=float(_get(data_cfg, "max_in_memory_gb", 8.0)))
    logging.info("Domain %r: %d train / %d test images, %d classes%s.",
                 dom.name, len(dom.train_images), len(dom.test_images),
                 dom.num_classes,
                 ", with saliency masks" if dom.train_masks is not None
                 else "")
    out.append(dom)
  return out
