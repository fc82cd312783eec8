"""Labelled image domains: demo, .npz files or TFDS (in memory or streamed).

Synopsis::

  from mdssl_jax.data import sources
  sources.validate_data_config(config.data)     # cheap, raises ValueError
  domains = sources.load_domains(config.data)   # list[DomainData]
  domains[0].num_train, domains[0].is_streaming

A domain entry of ``config.data.domains`` is a dict with ``name`` and
``source`` plus source-specific keys:

- ``source="demo"``: ``demo_name`` in ``demo_data.list_demo_domains()``.
- ``source="npz"``: ``path`` (directory holding ``train.npz``/``test.npz`` with
  arrays ``images`` [N, H, W, C] uint8 and ``labels`` [N]); optional
  ``train_file``, ``test_file``, ``masks_path`` (an .npz with ``masks``
  [N, H, W] aligned by index with the train images) and ``num_classes``.
  ``path`` may use ``~`` and environment variables (``$MDSSL_SHARED_DATA``).
  A ``class_names.txt`` beside the files (line i = class i, e.g.
  "n01443537 goldfish") names the classes.
- ``source="tfds"``: ``tfds_name``; optional ``split`` ("train"),
  ``eval_split`` ("test"; e.g. "train[80%:]" for eurosat, "validation" for
  imagenet2012), ``image_key`` ("image"), ``label_key`` ("label"),
  ``mask_key`` (a feature with saliency masks aligned with the image, for
  RELICv2 masking) and ``in_memory`` (True, False, or None = auto: stream
  when the dataset info says the split would exceed
  ``config.data.max_in_memory_gb`` at ``image_size``, else load it).

Every source also accepts ``max_train``/``max_test`` (a deterministic
subsample: stratified by class with the data seed for demo/npz, the first
examples in TFDS's fixed file order for tfds; not for streaming train
splits, use a split slice like ``split="train[:50000]"``), ``resize``
(overrides the data-level ``resize``) and ``class_subset``: a list of class
names and/or label ids, a text file with one class name per line, or
"imagenet100" (the CMC ImageNet-100 wnids shipped in
``imagenet100_classes.txt``). Only those classes are kept and their labels
become 0..k-1 in the listed order, e.g.
``dict(name="in100", source="tfds", tfds_name="imagenet2012",
eval_split="validation", class_subset="imagenet100")``.

In-memory images end up [N, S, S, 3] uint8 with S = ``image_size``: grey is
repeated to 3 channels; with ``resize="pad"`` images no larger than S are
zero-padded centrally (28 -> 32 pads 2 px per side); otherwise (and for
larger images) the central square is resized with antialiased bilinear
interpolation. In-memory TFDS sets are decoded and resized per example in
tf.data and cached as uint8 (CIFAR-size sets at 32 px take tens of MB); an
in-memory set (``in_memory=True``, or auto with split sizes unknown) that
exceeds ``max_in_memory_gb`` while loading raises a ValueError.

Streaming TFDS domains (ImageNet at 224 px) keep no arrays: ``DomainData``
carries a :class:`StreamSpec` and ``num_train``; the training pipeline reads
the records with the images still encoded and decodes them on the fly
(views are cropped from the full-resolution image; see
``pipeline.make_train_dataset``), and ``pipeline.make_eval_arrays`` decodes
only capped evaluation subsets. A class subset of a streamed split costs one
pass over its labels at start-up to count the kept examples.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Mapping, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

SOURCES = ("demo", "npz", "tfds")
RESIZE_MODES = ("pad", "resize")

_COMMON_KEYS = {"name", "source", "max_train", "max_test", "resize",
                "class_subset"}
_SOURCE_KEYS = {
    "demo": {"demo_name"},
    "npz": {"path", "train_file", "test_file", "masks_path", "num_classes"},
    "tfds": {"tfds_name", "split", "eval_split", "image_key", "label_key",
             "in_memory", "mask_key"},
}
# class_subset values naming a list shipped with the package.
BUILTIN_CLASS_SUBSETS = {
    "imagenet100": os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "imagenet100_classes.txt"),
}
_REQUIRED_KEYS = {"demo": "demo_name", "npz": "path", "tfds": "tfds_name"}
_CHUNK = 1024  # Images per tf.image.resize call: bounds peak memory.


class DatasetNotFoundError(FileNotFoundError):
  """A TFDS dataset is not prepared in data_dir and download is off."""


@dataclasses.dataclass(frozen=True)
class StreamSpec:
  """Where and how a streaming (not in-memory) TFDS domain is read.

  Attributes:
    tfds_name: TFDS builder name (e.g. "imagenet2012").
    split: training split (TFDS split string, slicing allowed).
    eval_split: evaluation split.
    data_dir: TFDS data_dir (None: the TFDS default).
    image_key: image feature (decoded at run time from its encoded bytes).
    label_key: label feature.
    mask_key: optional saliency-mask feature (an image aligned with the
      image feature), or None.
    class_ids: original label ids kept, in new-label order (label
      class_ids[j] becomes j), or None for all classes.
    num_train: examples in ``split`` after the class subset.
    image_size: config.data.image_size (images smaller than this are
      zero-padded to it when ``resize`` is "pad", as in memory).
    resize: "pad" or "resize".
  """
  tfds_name: str
  split: str
  eval_split: str
  data_dir: str | None
  image_key: str
  label_key: str
  mask_key: str | None
  class_ids: tuple[int, ...] | None
  num_train: int
  image_size: int
  resize: str = "pad"


@dataclasses.dataclass
class DomainData:
  """One labelled domain: in memory (arrays) or streamed from TFDS (stream).

  In-memory domains hold arrays resized to a common square size; streaming
  domains (``stream`` set) hold no arrays (all four are None): the training
  pipeline reads and decodes them on the fly and ``make_eval_arrays`` reads
  capped evaluation subsets. Use ``num_train`` for the train-set size in
  both cases.

  Attributes:
    name: display name.
    train_images: [N, S, S, 3] uint8 (None when streaming).
    train_labels: [N] int32 in [0, num_classes) (None when streaming).
    test_images: [M, S, S, 3] uint8 (None when streaming).
    test_labels: [M] int32 (None when streaming).
    num_classes: number of classes (after any class subset).
    train_masks: optional [N, S, S] float32 saliency masks in [0, 1],
      aligned with train_images by index.
    stream: StreamSpec of a streaming domain, else None.
  """
  name: str
  train_images: np.ndarray | None
  train_labels: np.ndarray | None
  test_images: np.ndarray | None
  test_labels: np.ndarray | None
  num_classes: int
  train_masks: np.ndarray | None = None
  stream: StreamSpec | None = None

  def __post_init__(self):
    if self.stream is not None:
      arrays = [k for k in ("train_images", "train_labels", "test_images",
                            "test_labels", "train_masks")
                if getattr(self, k) is not None]
      if arrays:
        raise ValueError(f"Domain {self.name!r}: a streaming domain holds no "
                         f"arrays, got {arrays}.")
      if self.stream.num_train < 1:
        raise ValueError(f"Domain {self.name!r}: streaming split "
                         f"{self.stream.split!r} has no examples.")
      return
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
    """Side S of the stored images (config.data.image_size when streaming)."""
    if self.stream is not None:
      return self.stream.image_size
    return int(self.train_images.shape[1])

  @property
  def is_streaming(self) -> bool:
    return self.stream is not None

  @property
  def num_train(self) -> int:
    """Number of training examples (after class subset and max_train)."""
    if self.stream is not None:
      return self.stream.num_train
    return int(len(self.train_labels))

  @property
  def has_masks(self) -> bool:
    """Whether saliency masks exist (arrays, or a streamed mask feature)."""
    if self.stream is not None:
      return self.stream.mask_key is not None
    return self.train_masks is not None


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
  subset = _get(domain_cfg, "class_subset")
  if subset is not None:
    _check_class_subset_value(subset, label)
  in_memory = _get(domain_cfg, "in_memory")
  if in_memory is not None and not isinstance(in_memory, (bool, np.bool_)):
    raise ValueError(f"Domain {label}: in_memory must be True, False or None "
                     f"(auto), got {in_memory!r}.")
  mask_key = _get(domain_cfg, "mask_key")
  if mask_key is not None and (not isinstance(mask_key, str) or not mask_key):
    raise ValueError(f"Domain {label}: mask_key must be the name of a TFDS "
                     f"feature holding saliency masks, got {mask_key!r}.")


def _check_class_subset_value(subset: Any, label: str) -> None:
  """Structural check of a class_subset value (no file access)."""
  if isinstance(subset, str):
    if not subset.strip():
      raise ValueError(f"Domain {label}: class_subset is an empty string; "
                       "give a list of class names or ids, a text file "
                       "path, or one of "
                       f"{sorted(BUILTIN_CLASS_SUBSETS)}.")
    return
  if isinstance(subset, (bytes, Mapping)) or not isinstance(
      subset, Sequence):
    raise ValueError(f"Domain {label}: class_subset must be a list of class "
                     "names or label ids, or a path to a text file with one "
                     f"class name per line; got {type(subset).__name__}.")
  if not subset:
    raise ValueError(f"Domain {label}: class_subset is an empty list.")
  for entry in subset:
    ok = isinstance(entry, str) and entry.strip() or (
        isinstance(entry, (int, np.integer)) and not isinstance(entry, bool)
        and entry >= 0)
    if not ok:
      raise ValueError(f"Domain {label}: class_subset entries must be class "
                       "names (non-empty strings) or label ids (ints >= 0), "
                       f"got {entry!r}.")
  keys = [e.strip() if isinstance(e, str) else int(e) for e in subset]
  duplicates = sorted({str(k) for k in keys if keys.count(k) > 1})
  if duplicates:
    raise ValueError(f"Domain {label}: class_subset lists {duplicates} more "
                     "than once.")


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
  buffer = _get(data_cfg, "shuffle_buffer", 10_000)
  if not isinstance(buffer, (int, np.integer)) or buffer < 1:
    raise ValueError(f"config.data.shuffle_buffer must be a positive integer "
                     f"(examples; streaming TFDS domains), got {buffer!r}.")


def missing_sources(data_cfg: Any) -> list[str]:
  """Cheap existence checks: npz directories and TFDS builder names."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  errors = []
  for d in data_cfg.domains:
    source = d.get("source")
    if source == "npz" and d.get("path"):
      path = os.path.expanduser(os.path.expandvars(str(d["path"])))
      train = os.path.join(path, d.get("train_file", "train.npz"))
      if not os.path.isfile(train):
        errors.append(f"Domain {d.get('name')!r}: {train} does not exist; "
                      "set the domain's 'path' to a directory holding "
                      "train.npz and test.npz (arrays 'images', 'labels').")
    elif source == "tfds" and d.get("tfds_name"):
      name = str(d["tfds_name"]).split("/")[0].split(":")[0]
      try:
        tfds.builder_cls(name)
      except Exception:  # pylint: disable=broad-except
        errors.append(f"Domain {d.get('name')!r}: unknown TFDS dataset "
                      f"{name!r}; see https://www.tensorflow.org/datasets/"
                      "catalog for names (e.g. cifar10, svhn_cropped).")
  return errors


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
# Class subsets
# ----------------------------------------------------------------------------


def read_class_subset(subset: Any) -> list[str | int]:
  """The entries of a ``class_subset`` value, in order.

  Args:
    subset: a list of class names / label ids (returned as is, names
      stripped), a path to a text file with one class name per line (blank
      lines and ``#`` comments ignored; ``~``/``$VARS`` expanded), or a key of
      ``BUILTIN_CLASS_SUBSETS`` (e.g. "imagenet100": the 100 ImageNet wnids of
      CMC, Tian et al. 2019).

  Returns:
    list of class names (str) and label ids (int).

  Raises:
    ValueError: missing or empty file.
  """
  if not isinstance(subset, str):
    return [e.strip() if isinstance(e, str) else int(e) for e in subset]
  key = subset.strip()
  path = BUILTIN_CLASS_SUBSETS.get(key) or os.path.expanduser(
      os.path.expandvars(key))
  if not os.path.isfile(path):
    raise ValueError(
        f"class_subset={subset!r}: no such file. Give a text file with one "
        "class name per line, a list of class names or label ids, or one of "
        f"the built-in lists {sorted(BUILTIN_CLASS_SUBSETS)}.")
  with open(path) as f:
    entries = [line.split("#", 1)[0].strip() for line in f]
  entries = [e for e in entries if e]
  if not entries:
    raise ValueError(f"class_subset file {path!r} lists no classes.")
  return entries


def resolve_class_subset(entries: Sequence[str | int], *,
                         names: Sequence[str] | None,
                         num_classes: int | None,
                         what: str) -> np.ndarray:
  """Maps class_subset entries to original label ids, keeping their order.

  A string entry matches a class name exactly or the first
  whitespace-separated token of one (class_names.txt lines like
  "n01443537 goldfish" match "n01443537"); a string of digits that is not a
  name is a label id.

  Args:
    entries: from :func:`read_class_subset`.
    names: class names indexed by label id, or None if unknown.
    num_classes: number of classes, or None if unknown (ids unchecked).
    what: domain description for error messages.

  Returns:
    [k] int64 original label ids; label ids[j] becomes new label j.

  Raises:
    ValueError: unknown name, id out of range, or a class listed twice.
  """
  lookup: dict[str, int] = {}
  for i, name in enumerate(names or ()):
    lookup.setdefault(str(name), i)
    tokens = str(name).split()
    if tokens:
      lookup.setdefault(tokens[0], i)
  ids = []
  for entry in entries:
    if isinstance(entry, str) and entry in lookup:
      idx = lookup[entry]
    elif isinstance(entry, (int, np.integer)) or str(entry).isdigit():
      idx = int(entry)
    elif names:
      raise ValueError(
          f"{what}: class_subset names unknown class {entry!r}; class names "
          f"look like {[str(n) for n in list(names)[:4]]} "
          f"({len(names)} classes).")
    else:
      raise ValueError(
          f"{what}: class_subset names class {entry!r} but this domain has no "
          "class names (npz: add class_names.txt beside train.npz); use "
          "integer label ids instead.")
    if idx < 0 or (num_classes is not None and idx >= num_classes):
      raise ValueError(f"{what}: class_subset label id {idx} is outside "
                       f"[0, {num_classes}).")
    ids.append(idx)
  duplicates = sorted({i for i in ids if ids.count(i) > 1})
  if duplicates:
    raise ValueError(f"{what}: class_subset lists label ids {duplicates} more "
                     "than once (possibly via both a name and an id).")
  return np.asarray(ids, np.int64)


def subset_label_map(labels: np.ndarray,
                     class_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Keeps the examples of the listed classes and relabels them 0..k-1.

  Args:
    labels: [n] integer labels.
    class_ids: [k] original ids in new-label order.

  Returns:
    (keep, new_labels): [m] sorted int64 indices into labels, and their [m]
    int32 labels in [0, k).
  """
  size = int(max(labels.max(initial=0), class_ids.max(initial=0))) + 1
  lookup = np.full(size, -1, np.int64)
  lookup[class_ids] = np.arange(len(class_ids))
  mapped = lookup[labels]
  keep = np.flatnonzero(mapped >= 0)
  return keep, mapped[keep].astype(np.int32)


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

  names = None
  names_file = os.path.join(root, "class_names.txt")
  if os.path.isfile(names_file):
    with open(names_file) as f:
      names = [line.strip() for line in f if line.strip()]
  num_classes = _get(domain_cfg, "num_classes")
  if num_classes is None:
    if names is not None:
      num_classes = len(names)
    else:
      num_classes = int(max(train_labels.max(initial=0),
                            test_labels.max(initial=0))) + 1
  top = int(max(train_labels.max(initial=0), test_labels.max(initial=0)))
  if top >= num_classes:
    raise ValueError(f"Domain {name!r}: label {top} >= num_classes="
                     f"{num_classes}; fix 'num_classes' or the labels.")

  subset = _get(domain_cfg, "class_subset")
  if subset is not None:
    class_ids = resolve_class_subset(
        read_class_subset(subset), names=names, num_classes=num_classes,
        what=f"Domain {name!r}")
    keep, train_labels = subset_label_map(train_labels, class_ids)
    train_images = train_images[keep]
    masks = None if masks is None else masks[keep]
    keep, test_labels = subset_label_map(test_labels, class_ids)
    test_images = test_images[keep]
    num_classes = len(class_ids)
    if not len(train_labels):
      raise ValueError(f"Domain {name!r}: no train images belong to "
                       f"class_subset {subset!r}.")

  train_idx = subsample_indices(train_labels,
                                _get(domain_cfg, "max_train"), seed)
  test_idx = subsample_indices(test_labels, _get(domain_cfg, "max_test"),
                               seed + 1)
  _check_memory(name, len(train_idx) + len(test_idx), image_size, max_gb,
                extra_bytes_per_image=0 if masks is None else
                4 * image_size * image_size)
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


def _fit_mask_tf(mask: tf.Tensor, size: int, mode: str) -> tf.Tensor:
  """:func:`_fit_tf` for one [h, w(, 1)] mask -> [size, size] float32."""
  mask = _mask_to_unit(mask)[..., None]
  h, w = tf.shape(mask)[0], tf.shape(mask)[1]

  def crop_resize():
    side = tf.minimum(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return tf.image.resize(mask[top:top + side, left:left + side],
                           (size, size), method="bilinear", antialias=True)

  fits = tf.logical_and(h <= size, w <= size)
  exact = tf.logical_and(tf.equal(h, size), tf.equal(w, size))
  if mode == "pad":
    out = tf.cond(fits, lambda: tf.image.resize_with_crop_or_pad(
        mask, size, size), crop_resize)
  else:
    out = tf.cond(exact, lambda: mask, crop_resize)
  return tf.ensure_shape(tf.clip_by_value(out, 0.0, 1.0)[..., 0],
                         (size, size))


def _mask_to_unit(mask: tf.Tensor) -> tf.Tensor:
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


def _prepare_error(domain: str, tfds_name: str,
                   data_dir: str | None) -> DatasetNotFoundError:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  where = data_dir or tfds.core.constants.DATA_DIR
  return DatasetNotFoundError(
      f"Domain {domain!r}: TFDS dataset {tfds_name!r} is not prepared in "
      f"data_dir={where!r} and download is off. Prepare it once with\n"
      f"  tfds build {tfds_name} --data_dir={where}\n"
      f"or\n  python -c \"import tensorflow_datasets as tfds; "
      f"tfds.builder('{tfds_name}', data_dir='{where}')"
      f".download_and_prepare()\"\n"
      "or rerun with --config.data.download=True (needs network access).")


def _split_error(domain: str, tfds_name: str, split: str,
                 e: Exception) -> ValueError:
  return ValueError(
      f"Domain {domain!r}: cannot load split {split!r} of TFDS "
      f"{tfds_name!r}: {e}. For datasets with only a train split (e.g. "
      "eurosat) use split='train[:80%]', eval_split='train[80%:]'.")


def _check_features(features: Any, keys: Sequence[tuple[str | None, str]],
                    domain: str, tfds_name: str) -> None:
  for key, what in keys:
    if key is not None and key not in features:
      raise ValueError(f"Domain {domain!r}: TFDS {tfds_name!r} has no feature "
                       f"{key!r} ({what}); available: {sorted(features)}.")


def _label_info(features: Any, label_key: str):
  """(class names or None, num_classes or None) of a label feature."""
  feature = features[label_key]
  num_classes = getattr(feature, "num_classes", None)
  names = getattr(feature, "names", None) if num_classes else None
  return names, num_classes


def _tfds_split(tfds_name: str, split: str, *, domain: str, image_size: int,
                mode: str, data_dir: str | None, download: bool,
                max_count: int | None, max_gb: float, image_key: str,
                label_key: str, class_subset: Sequence[str | int] | None = None,
                mask_key: str | None = None):
  """Loads one TFDS split into memory.

  Returns:
    ([n,S,S,3] uint8 images, [n] int32 labels, num_classes, [n,S,S] float32
    masks or None). With a class subset, only its classes are kept (then
    the first max_count of those) and labels are remapped to 0..k-1.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    ds, info = tfds.load(tfds_name, split=split, data_dir=data_dir,
                         download=download, with_info=True,
                         shuffle_files=False)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"Domain {domain!r}: tfds_name={tfds_name!r} is not a "
                     f"TFDS builder ({e}); see tfds.list_builders().") from e
  except AssertionError as e:
    raise _prepare_error(domain, tfds_name, data_dir) from e
  except (ValueError, KeyError) as e:
    raise _split_error(domain, tfds_name, split, e) from e

  features = info.features
  _check_features(features, ((image_key, "image_key"),
                             (label_key, "label_key"),
                             (mask_key, "mask_key")), domain, tfds_name)
  names, num_classes = _label_info(features, label_key)
  lookup = None
  if class_subset is not None:
    class_ids = resolve_class_subset(class_subset, names=names,
                                     num_classes=num_classes,
                                     what=f"Domain {domain!r}")
    lookup = _subset_lookup(class_ids)
    num_classes = len(class_ids)

  known = None
  try:
    known = info.splits[split].num_examples  # Empty under mock_data.
  except (KeyError, ValueError, TypeError):
    pass
  mask_bytes = 0 if mask_key is None else 4 * image_size * image_size
  if known and lookup is None:  # A class subset keeps an unknown share.
    _check_memory(domain, min(known, max_count or known), image_size, max_gb,
                  mask_bytes)
  if lookup is not None:
    ds = ds.filter(lambda ex: _in_subset(ex[label_key], lookup))
  if max_count is not None:
    ds = ds.take(max_count)

  def prepare(ex):
    label = tf.cast(ex[label_key], tf.int64)
    if lookup is not None:
      label = tf.gather(lookup, label)
    out = (_fit_tf(ex[image_key], image_size, mode), tf.cast(label, tf.int32))
    if mask_key is not None:
      out += (_fit_mask_tf(ex[mask_key], image_size, mode),)
    return out

  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True)
  ds = ds.batch(_CHUNK).prefetch(2)
  images, labels, masks, count = [], [], [], 0
  for batch in ds.as_numpy_iterator():
    count += len(batch[0])
    _check_memory(domain, count, image_size, max_gb, mask_bytes)
    images.append(batch[0])
    labels.append(batch[1])
    if mask_key is not None:
      masks.append(batch[2])
  if not images:
    raise ValueError(f"Domain {domain!r}: split {split!r} of TFDS "
                     f"{tfds_name!r} is empty"
                     + (" for this class_subset." if lookup is not None
                        else "."))
  labels = np.concatenate(labels)
  if num_classes is None:
    num_classes = int(labels.max(initial=0)) + 1
  return (np.concatenate(images), labels, int(num_classes),
          np.concatenate(masks) if masks else None)


def _subset_lookup(class_ids: np.ndarray) -> tf.Tensor:
  """[max_id + 1] int64: new label of each original id, -1 if dropped."""
  lookup = np.full(int(class_ids.max()) + 1, -1, np.int64)
  lookup[class_ids] = np.arange(len(class_ids))
  return tf.constant(lookup)


def _in_subset(label: tf.Tensor, lookup: tf.Tensor) -> tf.Tensor:
  label = tf.cast(label, tf.int64)
  size = tf.shape(lookup, out_type=tf.int64)[0]
  inside = tf.logical_and(label >= 0, label < size)
  return tf.logical_and(
      inside, tf.gather(lookup, tf.clip_by_value(label, 0, size - 1)) >= 0)


# ----------------------------------------------------------------------------
# tfds streaming
# ----------------------------------------------------------------------------
#
# A streaming domain keeps only a StreamSpec. Its records are read with the
# image (and mask) left encoded (tfds.decode.SkipDecoding) and decoded in the
# training pipeline, one pass (epoch) at a time:
#   * prepared tfrecord datasets: the split's shards (TFDS file instructions)
#     are permuted per epoch with a stateless seed and read 16 at a time
#     (tf.data interleave, deterministic);
#   * otherwise (e.g. under tfds.testing.mock_data, where no files exist, or
#     a non-tfrecord file format): builder.as_dataset(shuffle_files=False),
#     i.e. the same shard order every epoch (only the shuffle buffer mixes).

_STREAM_CYCLE = 16  # Shards read concurrently per epoch.


def _tfds_builder(tfds_name: str, data_dir: str | None, domain: str):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    return tfds.builder(tfds_name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"Domain {domain!r}: tfds_name={tfds_name!r} is not a "
                     f"TFDS builder ({e}); see tfds.list_builders().") from e


def _split_num_examples(builder: Any, split: str) -> int | None:
  """Examples in a split from the dataset info (None if unknown)."""
  try:
    n = builder.info.splits[split].num_examples
  except Exception:  # pylint: disable=broad-except
    return None  # Unprepared, mock_data (no splits) or a bad split string.
  return int(n) if n else None


def _stream_decoders(builder: Any, spec: StreamSpec) -> dict[str, Any]:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  decoders = {spec.image_key: tfds.decode.SkipDecoding()}
  if spec.mask_key is not None and isinstance(
      builder.info.features[spec.mask_key], tfds.features.Image):
    decoders[spec.mask_key] = tfds.decode.SkipDecoding()
  return decoders


def _select_fn(spec: StreamSpec):
  """Example dict -> {"image", "label" (int64, remapped), ["mask"]}."""
  lookup = (None if spec.class_ids is None
            else _subset_lookup(np.asarray(spec.class_ids, np.int64)))

  def select(ex):
    label = tf.cast(ex[spec.label_key], tf.int64)
    if lookup is not None:
      label = tf.gather(lookup, label)
    out = {"image": ex[spec.image_key], "label": label}
    if spec.mask_key is not None:
      out["mask"] = ex[spec.mask_key]
    return out

  def keep(ex):
    return _in_subset(ex[spec.label_key], lookup)

  return select, (None if lookup is None else keep)


def _ordered_records(builder: Any, spec: StreamSpec, split: str, *,
                     domain: str) -> tf.data.Dataset:
  """builder.as_dataset(shuffle_files=False) with clear errors."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  options = tf.data.Options()
  options.deterministic = True
  try:
    return builder.as_dataset(
        split=split, shuffle_files=False,
        decoders=_stream_decoders(builder, spec),
        read_config=tfds.ReadConfig(options=options))
  except AssertionError as e:
    raise _prepare_error(domain, spec.tfds_name, spec.data_dir) from e
  except (ValueError, KeyError) as e:
    raise _split_error(domain, spec.tfds_name, split, e) from e


def stream_records(spec: StreamSpec, split: str, *,
                   domain: str = "") -> tf.data.Dataset:
  """One pass over a split in TFDS's fixed order, images still encoded.

  This is the order ``tfds.load(..., shuffle_files=False)`` gives (the one
  the in-memory path and ``max_train``/``max_test`` caps use).

  Args:
    spec: the domain's StreamSpec.
    split: TFDS split string (spec.split or spec.eval_split).
    domain: display name for errors.

  Returns:
    tf.data.Dataset of dicts: "image" encoded bytes (tf.string), "label"
    int64 in [0, num_classes) after the class subset, and "mask" (encoded
    bytes, or the decoded tensor for non-image features) when
    spec.mask_key is set.
  """
  builder = _tfds_builder(spec.tfds_name, spec.data_dir, domain)
  select, keep = _select_fn(spec)
  ds = _ordered_records(builder, spec, split, domain=domain)
  if keep is not None:
    ds = ds.filter(keep)
  return ds.map(select, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)


def stream_epoch_fn(spec: StreamSpec, *, domain: str = ""):
  """A function giving one training pass (epoch) for a per-epoch seed.

  Builds the TFDS reading pieces once; the returned function only assembles
  tf.data ops, so it can run inside ``Dataset.flat_map`` over epoch numbers.

  Args:
    spec: the domain's StreamSpec (reads ``spec.split``).
    domain: display name for errors.

  Returns:
    (epoch_fn, shuffles_files): epoch_fn(file_seed) maps a [2] int64 seed to
    a finite tf.data.Dataset with the records of :func:`stream_records`
    (class subset applied), shards in a seed-dependent order when
    shuffles_files is True (prepared tfrecord data), else in the fixed order.
  """
  builder = _tfds_builder(spec.tfds_name, spec.data_dir, domain)
  select, keep = _select_fn(spec)
  ordered = _ordered_records(builder, spec, spec.split, domain=domain)
  instructions = None
  try:
    fmt = builder.info.file_format
    fmt = str(getattr(fmt, "value", fmt) or "tfrecord")
    if fmt == "tfrecord":
      instructions = list(builder.info.splits[spec.split].file_instructions)
  except Exception:  # pylint: disable=broad-except
    instructions = None  # mock_data (no splits), other formats.
  if not instructions:
    logging.warning(
        "Domain %r: streaming %s[%s] without shard shuffling (no tfrecord "
        "file list); each epoch reads the shards in the same order and only "
        "the shuffle buffer mixes examples.", domain, spec.tfds_name,
        spec.split)

    def fixed_epoch(file_seed):
      del file_seed
      ds = ordered.filter(keep) if keep is not None else ordered
      return ds.map(select)

    return fixed_epoch, False

  features = builder.info.features
  decoders = _stream_decoders(builder, spec)
  paths = tf.constant([os.fspath(fi.filename) for fi in instructions])
  skips = tf.constant([fi.skip for fi in instructions], tf.int64)
  takes = tf.constant([fi.take for fi in instructions], tf.int64)
  num_files = len(instructions)

  def read_shard(path, skip, take):
    return tf.data.TFRecordDataset(path).skip(skip).take(take)

  def parse(serialized):
    ex = features.deserialize_example(serialized, decoders=decoders)
    return {k: ex[k] for k in (spec.image_key, spec.label_key,
                               spec.mask_key) if k is not None}

  def shuffled_epoch(file_seed):
    order = tf.random.experimental.stateless_shuffle(
        tf.range(num_files, dtype=tf.int64), file_seed)
    files = tf.data.Dataset.from_tensor_slices(
        (tf.gather(paths, order), tf.gather(skips, order),
         tf.gather(takes, order)))
    ds = files.interleave(read_shard, cycle_length=min(_STREAM_CYCLE,
                                                       num_files),
                          block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=True)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    if keep is not None:
      ds = ds.filter(keep)
    return ds.map(select)

  return shuffled_epoch, True


def count_stream_examples(spec: StreamSpec, split: str, *,
                          domain: str = "") -> int:
  """Counts a split's examples after the class subset (one pass, no decoding).

  Reads every record of the split once (I/O bound: minutes for ImageNet);
  only needed when the dataset info has no count (mock data) or a class
  subset keeps an unknown share.
  """
  start = time.time()
  ds = stream_records(spec, split, domain=domain)
  count = int(ds.map(lambda ex: tf.constant(1, tf.int64)).reduce(
      tf.constant(0, tf.int64), lambda a, b: a + b).numpy())
  logging.info("Domain %r: counted %d examples in %s[%s] (%.1f s).", domain,
               count, spec.tfds_name, split, time.time() - start)
  return count


def decode_stream_image(encoded: tf.Tensor, *, image_size: int,
                        mode: str) -> tf.Tensor:
  """Encoded image bytes (JPEG, PNG, ...) -> [h, w, 3] uint8.

  In "pad" mode an image no larger than image_size is zero-padded centrally
  to image_size × image_size, as the in-memory path does (28 -> 32 for
  MNIST-like sets); otherwise the image keeps its size (views are cropped
  from the full-resolution image).

  Args:
    encoded: scalar tf.string.
    image_size: config.data.image_size.
    mode: "pad" or "resize".

  Returns:
    [h, w, 3] uint8.
  """
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  return _pad_small(image, image_size, mode)


def decode_stream_mask(value: tf.Tensor, *, image_size: int,
                       mode: str) -> tf.Tensor:
  """A streamed mask (encoded image or tensor) -> [h, w] float32 in [0, 1].

  Padded like :func:`decode_stream_image`, so it stays aligned with it.
  """
  if value.dtype == tf.string:
    value = tf.io.decode_image(value, channels=1, expand_animations=False)
  mask = _mask_to_unit(value)[..., None]
  return _pad_small(mask, image_size, mode)[..., 0]


def _pad_small(image: tf.Tensor, size: int, mode: str) -> tf.Tensor:
  if mode != "pad":
    return image
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  fits = tf.logical_and(h <= size, w <= size)
  return tf.cond(fits,
                 lambda: tf.image.resize_with_crop_or_pad(image, size, size),
                 lambda: image)


def _streaming_domain(domain_cfg: Any, *, image_size: int, mode: str,
                      data_dir: str | None, download: bool) -> DomainData:
  """A streaming DomainData: opens the split (fails early) and counts it."""
  name = domain_cfg["name"]
  tfds_name = domain_cfg["tfds_name"]
  if _get(domain_cfg, "max_train") is not None:
    raise ValueError(
        f"Domain {name!r}: max_train is not supported for a streaming TFDS "
        "domain; take a split slice instead (e.g. split='train[:50000]'), or "
        "set in_memory=True if the capped set fits in memory.")
  builder = _tfds_builder(tfds_name, data_dir, name)
  if download:
    builder.download_and_prepare()
  features = builder.info.features
  image_key = _get(domain_cfg, "image_key", "image")
  label_key = _get(domain_cfg, "label_key", "label")
  mask_key = _get(domain_cfg, "mask_key")
  _check_features(features, ((image_key, "image_key"),
                             (label_key, "label_key"),
                             (mask_key, "mask_key")), name, tfds_name)
  names, num_classes = _label_info(features, label_key)
  class_ids = None
  subset = _get(domain_cfg, "class_subset")
  if subset is not None:
    class_ids = tuple(int(i) for i in resolve_class_subset(
        read_class_subset(subset), names=names, num_classes=num_classes,
        what=f"Domain {name!r}"))
    num_classes = len(class_ids)
  spec = StreamSpec(
      tfds_name=tfds_name, split=_get(domain_cfg, "split", "train"),
      eval_split=_get(domain_cfg, "eval_split", "test"), data_dir=data_dir,
      image_key=image_key, label_key=label_key, mask_key=mask_key,
      class_ids=class_ids, num_train=1, image_size=image_size, resize=mode)
  # Opening both splits raises the not-prepared / bad-split errors now.
  _ordered_records(builder, spec, spec.split, domain=name)
  _ordered_records(builder, spec, spec.eval_split, domain=name)
  num_train = None if class_ids is not None else _split_num_examples(
      builder, spec.split)
  if num_train is None:
    num_train = count_stream_examples(spec, spec.split, domain=name)
  if num_train == 0:
    raise ValueError(f"Domain {name!r}: split {spec.split!r} of TFDS "
                     f"{tfds_name!r} has no examples"
                     + (" of the class_subset." if class_ids else "."))
  if num_classes is None:
    raise ValueError(f"Domain {name!r}: the label feature {label_key!r} of "
                     f"TFDS {tfds_name!r} is not a ClassLabel; streaming "
                     "needs the number of classes from the dataset info.")
  spec = dataclasses.replace(spec, num_train=int(num_train))
  logging.info("Domain %r: streaming %s[%s] (%d examples, %d classes) from "
               "TFDS, decoding on the fly.", name, tfds_name, spec.split,
               spec.num_train, num_classes)
  return DomainData(name=name, train_images=None, train_labels=None,
                    test_images=None, test_labels=None,
                    num_classes=int(num_classes), stream=spec)


def _auto_in_memory(domain_cfg: Any, *, image_size: int,
                    data_dir: str | None, max_gb: float) -> bool:
  """in_memory=None: stream when the split sizes say it will not fit.

  Uses the dataset info's split sizes (capped by max_train/max_test; a
  class subset is ignored, so the estimate is an upper bound). Unknown sizes
  (unprepared data, mock_data) mean in memory, whose loader then enforces
  max_in_memory_gb while reading.
  """
  name = domain_cfg["name"]
  builder = _tfds_builder(domain_cfg["tfds_name"], data_dir, name)
  total = 0
  for split_key, default, cap_key in (("split", "train", "max_train"),
                                      ("eval_split", "test", "max_test")):
    n = _split_num_examples(builder, _get(domain_cfg, split_key, default))
    if n is None:
      if split_key == "split":
        return True
      continue
    cap = _get(domain_cfg, cap_key)
    total += min(n, cap) if cap is not None else n
  need = total * image_size * image_size * 3
  if need <= max_gb * 2 ** 30:
    return True
  logging.info("Domain %r: %d images at %dx%d need %.1f GiB > "
               "config.data.max_in_memory_gb=%g: streaming from TFDS.", name,
               total, image_size, image_size, need / 2 ** 30, max_gb)
  return False


def _load_tfds(domain_cfg: Any, *, image_size: int, mode: str,
               data_dir: str | None, download: bool,
               max_gb: float) -> DomainData:
  name = domain_cfg["name"]
  in_memory = _get(domain_cfg, "in_memory")
  if in_memory is None:
    in_memory = _auto_in_memory(domain_cfg, image_size=image_size,
                                data_dir=data_dir, max_gb=max_gb)
  if not in_memory:
    return _streaming_domain(domain_cfg, image_size=image_size, mode=mode,
                             data_dir=data_dir, download=download)
  subset = _get(domain_cfg, "class_subset")
  kwargs = dict(domain=name, image_size=image_size, mode=mode,
                data_dir=data_dir, download=download, max_gb=max_gb,
                image_key=_get(domain_cfg, "image_key", "image"),
                label_key=_get(domain_cfg, "label_key", "label"),
                class_subset=None if subset is None
                else read_class_subset(subset))
  tfds_name = domain_cfg["tfds_name"]
  train_images, train_labels, num_classes, train_masks = _tfds_split(
      tfds_name, _get(domain_cfg, "split", "train"),
      max_count=_get(domain_cfg, "max_train"),
      mask_key=_get(domain_cfg, "mask_key"), **kwargs)
  test_images, test_labels, _, _ = _tfds_split(
      tfds_name, _get(domain_cfg, "eval_split", "test"),
      max_count=_get(domain_cfg, "max_test"), **kwargs)
  return DomainData(name=name, train_images=train_images,
                    train_labels=train_labels, test_images=test_images,
                    test_labels=test_labels, num_classes=num_classes,
                    train_masks=train_masks)


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


def _class_subset_domain(dom: DomainData,
                         class_ids: np.ndarray) -> DomainData:
  keep_train, train_labels = subset_label_map(dom.train_labels, class_ids)
  keep_test, test_labels = subset_label_map(dom.test_labels, class_ids)
  return dataclasses.replace(
      dom, train_images=dom.train_images[keep_train],
      train_labels=train_labels, test_images=dom.test_images[keep_test],
      test_labels=test_labels, num_classes=len(class_ids),
      train_masks=None if dom.train_masks is None
      else dom.train_masks[keep_train])


def load_domain(domain_cfg: Any, *, image_size: int, data_dir: str | None,
                download: bool, resize: str = "pad", seed: int = 0,
                max_in_memory_gb: float = 8.0) -> DomainData:
  """Loads one domain: into memory at image_size × image_size, or streaming.

  TFDS domains stream (no arrays; see :class:`StreamSpec`) when
  ``in_memory=False``, or when ``in_memory`` is unset and the dataset info
  says the split would not fit in ``max_in_memory_gb``.

  Args:
    domain_cfg: one entry of ``config.data.domains`` (see module docstring).
    image_size: output side S.
    data_dir: TFDS data directory (None: the TFDS default).
    download: allow TFDS to download and prepare missing datasets.
    resize: "pad" or "resize" (a domain's own ``resize`` key wins).
    seed: data seed for demo generation and stratified subsampling.
    max_in_memory_gb: refuse domains whose arrays would exceed this.

  Returns:
    DomainData with [N, S, S, 3] uint8 images and int32 labels, or a
    streaming DomainData (``stream`` set, arrays None).

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
    subset = _get(domain_cfg, "class_subset")
    if subset is not None:
      dom = _class_subset_domain(dom, resolve_class_subset(
          read_class_subset(subset), names=None,
          num_classes=dom.num_classes, what=f"Domain {name!r}"))
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
      ``max_in_memory_gb`` (default 8; larger TFDS domains stream).

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
    if dom.is_streaming:
      logging.info("Domain %r: streaming, %d train images, %d classes%s.",
                   dom.name, dom.num_train, dom.num_classes,
                   ", with saliency masks" if dom.has_masks else "")
    else:
      logging.info("Domain %r: %d train / %d test images, %d classes%s.",
                   dom.name, len(dom.train_images), len(dom.test_images),
                   dom.num_classes,
                   ", with saliency masks" if dom.has_masks else "")
    out.append(dom)
  return out
