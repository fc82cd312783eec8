"""Dataset fractions: nested subsets of a domain's training split.

Synopsis::

  dict(name="cifar10", source="npz", path=..., fraction=0.1)  # first 10 %
  dict(name="cifar10_rest", ..., fraction=(0.5, 1.0))         # 50 %..100 %

Seed 003 (METHODS §6.4) draws subsets once: shuffle the index list with a
fixed seed and take the first k %, so a 10 % subset lies inside the 50 %
one. Here the shuffled index of a dataset is a permutation of its
training split (after ``max_train`` / ``class_subset``, n examples) seeded
by (config.data.seed, the dataset: ``demo_name``, ``tfds_name`` or the
``.npz`` directory's name — not the domain's display name, so two domains
of one dataset share it); ``fraction=f`` keeps positions [0, f·n) of it
and ``fraction=(a, b)`` positions [a·n, b·n), so disjoint ranges give
disjoint subsets (e.g. an in-distribution extra set A beside B). With an
``index_dir`` (the trainer passes ``<workdir>/data_index``) the
permutation is written there once as ``<dataset>-n<n>.npy`` and read back
on every later load (resume, evaluation), so a run keeps its subsets even
if the generator changed; a file that is not a permutation of range(n)
is an error.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from typing import Any

import numpy as np

from mdssl_jax import atomic_file
from mdssl_jax.data.domain import DomainData


def fraction_range(fraction: Any) -> tuple[float, float]:
  """(start, stop) of a `fraction` key: f -> (0, f); (a, b) -> (a, b)."""
  if isinstance(fraction, (int, float)):
    return 0.0, float(fraction)
  start, stop = fraction
  return float(start), float(stop)


def fraction_errors(fraction: Any) -> list[str]:
  """Checks of a domain's `fraction` key (None: the whole split)."""
  if fraction is None:
    return []
  try:
    start, stop = fraction_range(fraction)
  except (TypeError, ValueError):
    return [f"fraction={fraction!r}: use a number in (0, 1] or a pair "
            "(start, stop) with 0 <= start < stop <= 1."]
  if not 0.0 <= start < stop <= 1.0:
    return [f"fraction={fraction!r}: need 0 <= start < stop <= 1 (a "
            "number f means (0, f))."]
  return []


def dataset_id(domain: dict[str, Any]) -> str:
  """The dataset a resolved domain entry reads (its subset index's key)."""
  for key in ("demo_name", "tfds_name"):
    if domain.get(key):
      return str(domain[key])
  if domain.get("path"):
    return os.path.basename(os.path.normpath(str(domain["path"])))
  return str(domain["name"])


def shuffled_index(name: str, n: int, seed: int,
                   index_dir: str | None = None) -> np.ndarray:
  """Dataset `name`'s fixed permutation of range(n) (read or written once).

  Raises:
    ValueError: the file in `index_dir` is unreadable or is not a
      permutation of range(n) (the data changed since it was written).
  """
  path = None if index_dir is None else os.path.join(index_dir,
                                                     f"{name}-n{n}.npy")
  if path is not None and os.path.exists(path):
    try:
      perm = np.load(path)
    except (OSError, ValueError) as e:
      raise ValueError(f"Cannot read the subset index {path}: {e}. It is "
                       "written once per workdir; restore it or start a "
                       "new workdir.") from e
    if perm.shape != (n,) or not np.array_equal(np.sort(perm), np.arange(n)):
      raise ValueError(
          f"{path} is not a permutation of the {n} examples of {name!r}: "
          "the file was damaged or replaced. Restore it or use a new "
          "workdir.")
    return perm.astype(np.int64)
  rng = np.random.default_rng([int(seed), zlib.crc32(name.encode())])
  perm = rng.permutation(n).astype(np.int64)
  if path is not None:
    os.makedirs(index_dir, exist_ok=True)
    with atomic_file.atomic_open(path, "wb") as f:
      np.save(f, perm)
  return perm


def fraction_indices(name: str, n: int, fraction: Any, seed: int,
                     index_dir: str | None = None) -> np.ndarray:
  """Sorted train indices of `fraction` of a domain of n examples."""
  start, stop = fraction_range(fraction)
  perm = shuffled_index(name, n, seed, index_dir)
  lo, hi = int(round(start * n)), int(round(stop * n))
  if hi <= lo:
    raise ValueError(f"Domain {name!r}: fraction={fraction!r} of {n} "
                     "examples is empty; use a larger fraction.")
  return np.sort(perm[lo:hi])


def apply_fraction(dom: DomainData, fraction: Any, seed: int,
                   index_dir: str | None = None,
                   dataset: str | None = None) -> DomainData:
  """`dom` with only `fraction` of its training split (test unchanged).

  The whole split stays as the domain's evaluation train split
  (``DomainData.eval_train_images``) unless one is already set.

  `dataset` keys the shuffled index (`dataset_id`; None: the domain name).

  Raises:
    ValueError: a streaming domain (slice its TFDS split instead).
  """
  if fraction is None:
    return dom
  if dom.is_streaming:
    raise ValueError(
        f"Domain {dom.name!r}: fraction needs an in-memory domain; for a "
        "streaming TFDS split use a split slice (split='train[:10%]'), or "
        "hold it in memory (in_memory=True).")
  idx = fraction_indices(dataset or dom.name, dom.num_train, fraction, seed,
                         index_dir)
  full = dom.eval_train_images is None
  return dataclasses.replace(
      dom, train_images=dom.train_images[idx],
      train_labels=dom.train_labels[idx],
      train_masks=None if dom.train_masks is None else dom.train_masks[idx],
      eval_train_images=dom.train_images if full else dom.eval_train_images,
      eval_train_labels=dom.train_labels if full else dom.eval_train_labels)
