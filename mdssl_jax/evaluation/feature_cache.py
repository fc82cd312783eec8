"""On-disk cache of frozen-encoder features, one file per (step, domain, split).

Synopsis::

  cache = FeatureCache(os.path.join(workdir, "eval", "features"), step=60)
  desc = describe_domain(config, entry, max_train=400, max_test=200)
  feats = cache.get(desc, "train", lambda: extractor(p, s, images))
  cache.hits, cache.misses

The key hashes the checkpoint step, the domain's description (its config
entry, image size and resize mode, eval view size, mean / std, max counts,
data seed) and the split, so a changed transform, subsample or step misses.
Files are `<domain>_<split>_step<N>_<key>.npy`, written atomically (temp
file + `os.replace`); an unreadable or mis-shaped file is recomputed. Light:
NumPy only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from absl import logging
import numpy as np

from mdssl_jax import atomic_file


def describe_domain(config: Any, entry: Mapping[str, Any], *,
                    max_train: int, max_test: int) -> dict[str, Any]:
  """What determines a domain's eval arrays (the cache key's domain part).

  Args:
    config: the training config (its `data` and `views.large.size`).
    entry: the domain's config entry (name, source, source keys).
    max_train: the eval cap on train images per domain.
    max_test: the eval cap on test images.

  Returns:
    JSON-able dict: "domain" (the entry as a dict), "image_size", "resize",
    "eval_size", "mean", "std", "max_train", "max_test", "data_seed".
  """
  entry = entry.to_dict() if hasattr(entry, "to_dict") else dict(entry)
  return {
      "domain": entry,
      "image_size": int(config.data.image_size),
      "resize": entry.get("resize") or config.data.resize,
      "eval_size": int(config.views.large.size),
      "mean": [float(m) for m in config.data.mean],
      "std": [float(s) for s in config.data.std],
      "max_train": int(max_train),
      "max_test": int(max_test),
      "data_seed": int(config.data.seed),
  }


def _atomic_save(path: str, array: np.ndarray) -> None:
  with atomic_file.atomic_open(path, "wb") as f:
    np.save(f, array)


class FeatureCache:
  """Features of one checkpoint step, cached as .npy files in `directory`.

  Attributes:
    directory: where the files live (created on first write).
    step: the checkpoint step whose features are cached.
    hits: features loaded from disk so far.
    misses: features computed (and written) so far.
  """

  def __init__(self, directory: str, step: int):
    self.directory = directory
    self.step = int(step)
    self.hits = 0
    self.misses = 0

  def key(self, description: Mapping[str, Any], split: str) -> str:
    """20 hex digits identifying (step, description, split)."""
    text = json.dumps({"step": self.step, "split": split,
                       "domain": description}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]

  def path(self, description: Mapping[str, Any], split: str) -> str:
    """The file holding these features."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_",
                  str(description["domain"]["name"]))
    return os.path.join(
        self.directory,
        f"{name}_{split}_step{self.step}_{self.key(description, split)}.npy")

  def get(self, description: Mapping[str, Any], split: str,
          compute: Callable[[], np.ndarray], num_rows: int) -> np.ndarray:
    """The cached features, or `compute()`'s (then written to disk).

    Args:
      description: `describe_domain`'s dict for the domain.
      split: "train" or "test".
      compute: returns the [n, F] float32 features when not cached.
      num_rows: n, the number of images (a cached file must match it).

    Returns:
      [n, F] float32 features.
    """
    path = self.path(description, split)
    if os.path.isfile(path):
      try:
        feats = np.load(path, allow_pickle=False)
      except (OSError, ValueError) as e:
        logging.warning("Feature cache %s unreadable (%s); recomputing.",
                        path, e)
      else:
        if feats.ndim == 2 and feats.shape[0] == num_rows:
          self.hits += 1
          return feats
        logging.warning("Feature cache %s has shape %s, expected %d rows; "
                        "recomputing.", path, feats.shape, num_rows)
    feats = np.asarray(compute(), np.float32)
    _atomic_save(path, feats)
    self.misses += 1
    return feats
