"""Source "npz": a directory with train.npz and test.npz, held in memory.

Synopsis::

  dict(name="mnist", source="npz", path="$MDSSL_SHARED_DATA/mnist",
       max_train=10_000)

Keys: ``path`` (required; a directory holding ``train.npz`` / ``test.npz``
with arrays ``images`` [N, H, W, C] uint8 and ``labels`` [N]; ``~`` and
environment variables are expanded), ``train_file`` / ``test_file`` (other
file names), ``masks_path`` (an .npz with ``masks`` [N, H, W] aligned by
index with the train images, e.g. the ``masks.npz`` that ``python -m
mdssl_jax.saliency`` writes; a missing, corrupt or wrongly sized file fails
at start-up naming that command) and ``num_classes`` (default: the lines of
``class_names.txt``, else the largest label + 1). A ``class_names.txt``
beside the files (line i = class i, e.g. "n01443537 goldfish") names the
classes for ``class_subset``.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from mdssl_jax import cli
from mdssl_jax.data import class_subsets
from mdssl_jax.data.domain import check_memory
from mdssl_jax.data.domain import DomainData

KEYS: dict[str, Any] = {
    "path": None, "train_file": "train.npz", "test_file": "test.npz",
    "masks_path": None, "num_classes": None,
}
REQUIRED = ("path",)

# How to (re)make a masks_path sidecar; every mask error names it.
PRECOMPUTE_HINT = (
    "Recompute it with `python -m mdssl_jax.saliency "
    "--config=configs/saliency/default.py:npz,path=<the domain's path> "
    "--workdir=DIR` and set masks_path=DIR/masks.npz.")


def _expand(path: Any) -> str:
  return os.path.expanduser(os.path.expandvars(str(path)))


def validate(domain: dict[str, Any]) -> list[str]:
  """num_classes, when set, must be a positive integer."""
  value = domain["num_classes"]
  if value is not None and (not isinstance(value, (int, np.integer))
                            or value < 1):
    return [f"'num_classes' must be a positive integer or None, got "
            f"{value!r}."]
  return []


def check_exists(domain: dict[str, Any]) -> list[str]:
  """The train file, and the masks_path sidecar when set, must exist."""
  errors = []
  train = os.path.join(_expand(domain["path"]), domain["train_file"])
  if not os.path.isfile(train):
    errors.append(f"{train} does not exist; set the domain's 'path' to a "
                  "directory holding train.npz and test.npz (arrays "
                  "'images', 'labels').")
  masks = domain["masks_path"]
  if masks and not os.path.isfile(_expand(masks)):
    errors.append(f"masks_path {_expand(masks)} does not exist. "
                  + PRECOMPUTE_HINT)
  return errors


def read_npz(path: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
  """Reads the given arrays from an .npz, with clear errors.

  Args:
    path: the .npz file.
    keys: the arrays to read.

  Returns:
    {key: array}.

  Raises:
    ValueError: naming the file, for a missing, corrupt or incomplete one.
  """
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


def _read_split(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(images, int32 labels) of one split file."""
  arrays = read_npz(path, ("images", "labels"))
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


def _read_masks(masks_path: str, train_images: np.ndarray,
                train_path: str) -> np.ndarray:
  """The sidecar's masks [N, H, W], checked against the train images."""
  try:
    masks = read_npz(masks_path, ("masks",))["masks"]
  except ValueError as e:
    raise ValueError(f"masks_path: {e} {PRECOMPUTE_HINT}") from e
  if masks.ndim == 4 and masks.shape[-1] == 1:
    masks = masks[..., 0]
  if masks.shape != train_images.shape[:3]:
    raise ValueError(
        f"{masks_path}: 'masks' must be [N, H, W] = "
        f"{train_images.shape[:3]}, aligned by index with the images of "
        f"{train_path}, got {masks.shape}. {PRECOMPUTE_HINT}")
  if not (masks.dtype == bool or np.issubdtype(masks.dtype, np.integer)
          or np.issubdtype(masks.dtype, np.floating)):
    raise ValueError(f"{masks_path}: 'masks' must be bool, integer or "
                     f"float, got {masks.dtype}. {PRECOMPUTE_HINT}")
  return masks


def _class_names(root: str) -> list[str] | None:
  names_file = os.path.join(root, "class_names.txt")
  if not os.path.isfile(names_file):
    return None
  with open(names_file) as f:
    return [line.strip() for line in f if line.strip()]


def _num_classes(domain: dict[str, Any], names: list[str] | None,
                 train_labels: np.ndarray, test_labels: np.ndarray) -> int:
  """Declared, named or inferred number of classes, checked vs labels."""
  top = int(max(train_labels.max(initial=0), test_labels.max(initial=0)))
  num_classes = domain["num_classes"]
  if num_classes is None:
    num_classes = len(names) if names is not None else top + 1
  if top >= num_classes:
    raise ValueError(f"Domain {domain['name']!r}: label {top} >= num_classes="
                     f"{num_classes}; fix 'num_classes' or the labels.")
  return int(num_classes)


def _apply_class_subset(domain, names, num_classes, train_images,
                        train_labels, test_images, test_labels, masks):
  """The arrays restricted to the class_subset, relabelled 0..k-1.

  Returns:
    (train_images, train_labels, test_images, test_labels, masks, k).
  """
  name = domain["name"]
  class_ids = class_subsets.resolve_class_subset(
      class_subsets.read_class_subset(domain["class_subset"]), names=names,
      num_classes=num_classes, what=f"Domain {name!r}")
  keep, train_labels = class_subsets.subset_label_map(train_labels,
                                                      class_ids)
  train_images = train_images[keep]
  masks = None if masks is None else masks[keep]
  keep, test_labels = class_subsets.subset_label_map(test_labels, class_ids)
  test_images = test_images[keep]
  if not len(train_labels):
    raise ValueError(f"Domain {name!r}: no train images belong to "
                     f"class_subset {domain['class_subset']!r}.")
  return (train_images, train_labels, test_images, test_labels, masks,
          len(class_ids))


def load(domain: dict[str, Any], data_cfg: Any) -> DomainData:
  """Reads the files, applies class_subset and max_train/max_test, resizes.

  Args:
    domain: the resolved domain entry (``resize`` set).
    data_cfg: ``config.data`` (``image_size``, ``seed``,
      ``max_in_memory_gb``).

  Returns:
    An in-memory DomainData.
  """
  from mdssl_jax.data import resize  # pylint: disable=g-import-not-at-top
  cli.hide_gpus_from_tf()  # Resizing runs TensorFlow ops.
  name, mode = domain["name"], domain["resize"]
  size, seed = int(data_cfg["image_size"]), int(data_cfg["seed"])
  root = _expand(domain["path"])
  if not os.path.isdir(root):
    raise ValueError(f"Domain {name!r}: path {root!r} is not a directory; "
                     "it must contain train.npz and test.npz.")
  train_path = os.path.join(root, domain["train_file"])
  test_path = os.path.join(root, domain["test_file"])
  train_images, train_labels = _read_split(train_path)
  test_images, test_labels = _read_split(test_path)
  masks_path = domain["masks_path"]
  masks = None
  if masks_path:
    masks_path = _expand(masks_path)
    masks = _read_masks(masks_path, train_images, train_path)
  names = _class_names(root)
  num_classes = _num_classes(domain, names, train_labels, test_labels)

  if domain["class_subset"] is not None:
    (train_images, train_labels, test_images, test_labels, masks,
     num_classes) = _apply_class_subset(
         domain, names, num_classes, train_images, train_labels,
         test_images, test_labels, masks)
  train_idx = class_subsets.subsample_indices(train_labels,
                                              domain["max_train"], seed)
  test_idx = class_subsets.subsample_indices(test_labels, domain["max_test"],
                                             seed + 1)
  check_memory(name, len(train_idx) + len(test_idx), size,
               float(data_cfg["max_in_memory_gb"]),
               extra_bytes_per_image=0 if masks is None else 4 * size * size)
  return DomainData(
      name=name,
      train_images=resize.fit_images(train_images[train_idx], size, mode,
                                     what=train_path),
      train_labels=train_labels[train_idx],
      test_images=resize.fit_images(test_images[test_idx], size, mode,
                                    what=test_path),
      test_labels=test_labels[test_idx],
      num_classes=int(num_classes),
      train_masks=None if masks is None else resize.fit_masks(
          masks[train_idx], size, mode, masks_path))
