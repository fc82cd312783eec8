"""Label-fraction subsets of a training split (METHODS.md §6.3).

Synopsis::

  subsets = nested_subsets(train_labels, (0.01, 0.1, 1.0), seed=0)
  subsets[0.1]  # sorted int64 indices into train_labels
  subsets = load_or_write("RUN/eval/label_subsets", "digits", train_labels,
                          FRACTIONS, seed=0)  # same subsets for every encoder

Rule ([assumed] in METHODS §6.3, the paper leaves it unstated): each class
c gets one seeded random order of its n_c examples; the subset for fraction
f keeps the first max(1, floor(f·n_c + 1/2)) examples of every class
(class-stratified, rounded half up). Prefixes of one order make the subsets
nested: f1 < f2 ⇒ subset(f1) ⊆ subset(f2). The subset of f depends only on
(labels, seed, f), not on which other fractions are asked for.

`load_or_write` stores the per-example rank within its class (the seeded
orders themselves) once per (domain, seed), with a SHA-256 of the labels,
so every later evaluation, of any encoder, reads the same subsets back even
if NumPy's generator changes. Light: NumPy only.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence

import numpy as np

from mdssl_jax import atomic_file

# The fractions the label-fraction suite uses (1 / 5 / 10 / 50 / 100 %).
FRACTIONS = (0.01, 0.05, 0.1, 0.5, 1.0)


def _check(labels, fractions: Sequence[float]) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1 or labels.size == 0:
    raise ValueError(f"labels must be a non-empty 1-D array, got shape "
                     f"{labels.shape}.")
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels must be integers, got dtype {labels.dtype}.")
  for f in fractions:
    if not 0.0 < f <= 1.0:
      raise ValueError(f"Label fraction {f} must be in (0, 1].")
  return labels.astype(np.int64)


def class_ranks(labels: np.ndarray, seed: int) -> np.ndarray:
  """Each example's position in its class's seeded random order.

  Args:
    labels: [n] int labels.
    seed: seed of the per-class orders.

  Returns:
    [n] int64 ranks: the examples of class c hold 0 .. n_c - 1.
  """
  labels = _check(labels, ())
  rng = np.random.default_rng(seed)
  ranks = np.empty(labels.shape, np.int64)
  for c in np.unique(labels):  # One permutation per class, in class order.
    members = np.flatnonzero(labels == c)
    ranks[members[rng.permutation(members.size)]] = np.arange(members.size)
  return ranks


def per_class_count(fraction: float, n_c: np.ndarray) -> np.ndarray:
  """How many of a class's n_c examples fraction f keeps: max(1, ⌊f·n_c⌉)."""
  return np.maximum(1, np.floor(fraction * np.asarray(n_c) + 0.5)).astype(
      np.int64)


def _subsets_from_ranks(labels: np.ndarray, ranks: np.ndarray,
                        fractions: Sequence[float]) -> dict[float, np.ndarray]:
  _, inverse, counts = np.unique(labels, return_inverse=True,
                                 return_counts=True)
  out = {}
  for f in fractions:
    keep = per_class_count(float(f), counts)[inverse]
    out[float(f)] = np.flatnonzero(ranks < keep).astype(np.int64)
  return out


def nested_subsets(labels: np.ndarray, fractions: Sequence[float],
                   seed: int) -> dict[float, np.ndarray]:
  """Class-stratified, nested label-fraction subsets (see module doc).

  Args:
    labels: [n] int training labels.
    fractions: fractions in (0, 1], e.g. FRACTIONS.
    seed: seed of the per-class orders; the same (labels, seed) always
      gives the same subsets.

  Returns:
    {fraction: sorted [k] int64 indices into labels}.
  """
  labels = _check(labels, fractions)
  return _subsets_from_ranks(labels, class_ranks(labels, seed), fractions)


def labels_hash(labels: np.ndarray) -> str:
  """SHA-256 (hex) of the labels as little-endian int64."""
  return hashlib.sha256(
      np.asarray(labels, dtype="<i8").tobytes()).hexdigest()


def subsets_path(directory: str, domain: str, seed: int) -> str:
  """The file `load_or_write` keeps a domain's subsets in."""
  return os.path.join(directory, f"{domain}_seed{seed}.npz")


def load_or_write(directory: str, domain: str, labels: np.ndarray,
                  fractions: Sequence[float],
                  seed: int) -> dict[float, np.ndarray]:
  """`nested_subsets`, drawn once per (domain, seed) and stored.

  The first call writes `<directory>/<domain>_seed<seed>.npz` atomically
  (ranks, labels hash, seed and the subsets of `fractions` as
  "f<fraction>" index arrays for other tools); later calls derive every
  requested fraction from the stored ranks.

  Args:
    directory: where subsets live (created if missing).
    domain: domain name (file name stem).
    labels: [n] int training labels of the domain.
    fractions: fractions in (0, 1].
    seed: seed of the per-class orders.

  Returns:
    {fraction: sorted [k] int64 indices into labels}.

  Raises:
    ValueError: the stored file was drawn for different labels.
  """
  labels = _check(labels, fractions)
  digest = labels_hash(labels)
  path = subsets_path(directory, domain, seed)
  if os.path.exists(path):
    with np.load(path) as stored:
      stored_hash = str(stored["labels_sha256"])
      ranks = stored["ranks"]
    if stored_hash != digest or ranks.shape != labels.shape:
      raise ValueError(
          f"{path} holds label-fraction subsets drawn for other labels "
          f"(labels sha256 {stored_hash[:12]}…, n={ranks.size}; these: "
          f"{digest[:12]}…, n={labels.size}): the domain's training split "
          "changed (data, max_train_per_domain?). Delete the file to draw "
          "new subsets, or point label_subsets_dir elsewhere to keep both.")
    return _subsets_from_ranks(labels, ranks, fractions)
  ranks = class_ranks(labels, seed)
  subsets = _subsets_from_ranks(labels, ranks, fractions)
  arrays = {f"f{f:g}": idx for f, idx in subsets.items()}
  with atomic_file.atomic_open(path, "wb") as f:
    np.savez(f, ranks=ranks, labels_sha256=np.asarray(digest),
             seed=np.asarray(seed), **arrays)
  return subsets


def subset_indices(labels: np.ndarray, fraction: float, seed: int,
                   directory: str | None, domain: str) -> np.ndarray:
  """Indices of one fraction, stored under `directory` (None: not stored).

  What the evaluators call; fraction 1.0 is every index without a file.
  """
  if fraction == 1.0:
    return np.arange(np.asarray(labels).shape[0])
  if directory is None:
    return nested_subsets(labels, (fraction,), seed)[float(fraction)]
  fractions = sorted(set(FRACTIONS) | {float(fraction)})
  return load_or_write(directory, domain, labels, fractions,
                       seed)[float(fraction)]


def check_fraction(value: float) -> list[str]:
  """Config check shared by the evaluators' `label_fraction` key."""
  if not (isinstance(value, (int, float)) and math.isfinite(value)
          and 0.0 < value <= 1.0):
    return [f"label_fraction={value} must be in (0, 1] (1.0: all labels)."]
  return []
