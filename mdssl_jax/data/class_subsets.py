"""Class subsets and class-stratified subsamples of labelled domains.

Synopsis::

  entries = class_subsets.read_class_subset("imagenet100")  # wnids
  ids = class_subsets.resolve_class_subset(entries, names=names,
                                           num_classes=1000, what="in100")
  keep, new_labels = class_subsets.subset_label_map(labels, ids)
  idx = class_subsets.subsample_indices(labels, max_count=2000, seed=0)

A domain's ``class_subset`` is a list of class names and/or label ids, a
text file with one class name per line, or a key of
:data:`BUILTIN_CLASS_SUBSETS`; only those classes are kept and their labels
become 0..k-1 in the listed order. NumPy only: the TFDS sources build their
tf.data lookups from the ids resolved here.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import numpy as np

from mdssl_jax.data.domain import DomainData

# class_subset values naming a list shipped with the package.
BUILTIN_CLASS_SUBSETS = {
    "imagenet100": os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "imagenet100_classes.txt"),
}


def class_subset_errors(subset: Any) -> list[str]:
  """Structural checks of a class_subset value (no file access).

  Args:
    subset: the value of a domain's ``class_subset`` key (not None).

  Returns:
    Problems found (empty if none), each naming the fix.
  """
  if isinstance(subset, str):
    if subset.strip():
      return []
    return ["class_subset is an empty string; give a list of class names "
            "or ids, a text file path, or one of "
            f"{sorted(BUILTIN_CLASS_SUBSETS)}."]
  if isinstance(subset, (bytes, Mapping)) or not isinstance(
      subset, Sequence):
    return ["class_subset must be a list of class names or label ids, or a "
            "path to a text file with one class name per line; got "
            f"{type(subset).__name__}."]
  if not subset:
    return ["class_subset is an empty list."]
  for entry in subset:
    ok = isinstance(entry, str) and entry.strip() or (
        isinstance(entry, (int, np.integer)) and not isinstance(entry, bool)
        and entry >= 0)
    if not ok:
      return ["class_subset entries must be class names (non-empty "
              f"strings) or label ids (ints >= 0), got {entry!r}."]
  keys = [e.strip() if isinstance(e, str) else int(e) for e in subset]
  duplicates = sorted({str(k) for k in keys if keys.count(k) > 1})
  if duplicates:
    return [f"class_subset lists {duplicates} more than once."]
  return []


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


def _name_lookup(names: Sequence[str] | None) -> dict[str, int]:
  """Class name (and its first token, e.g. a wnid) -> label id."""
  lookup: dict[str, int] = {}
  for i, name in enumerate(names or ()):
    lookup.setdefault(str(name), i)
    tokens = str(name).split()
    if tokens:
      lookup.setdefault(tokens[0], i)
  return lookup


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
  lookup = _name_lookup(names)
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
  _, inverse, counts = np.unique(labels[perm], return_inverse=True,
                                 return_counts=True)
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


def class_subset_domain(dom: DomainData,
                        class_ids: np.ndarray) -> DomainData:
  """An in-memory domain restricted to `class_ids`, relabelled 0..k-1."""
  keep_train, train_labels = subset_label_map(dom.train_labels, class_ids)
  keep_test, test_labels = subset_label_map(dom.test_labels, class_ids)
  return dataclasses.replace(
      dom, train_images=dom.train_images[keep_train],
      train_labels=train_labels, test_images=dom.test_images[keep_test],
      test_labels=test_labels, num_classes=len(class_ids),
      train_masks=None if dom.train_masks is None
      else dom.train_masks[keep_train])


def subsample_domain(dom: DomainData, max_train: int | None,
                     max_test: int | None, seed: int) -> DomainData:
  """Stratified subsamples of an in-memory domain's splits (test: seed+1)."""
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
