"""Rows of in-memory domains: stateless epoch permutations, batched views.

Each in-memory domain has its own infinite stream: epoch e of domain d is a
stateless permutation seeded by (config.seed, d, e), and step s takes
stream positions s·N … s·N + N − 1, so a small domain simply cycles faster.
All view uniforms of a step come from one stateless draw seeded by
(config.seed, step) and shaped [D·N, views, NUM_UNIFORMS] over the global
batch, so a row's views do not depend on the process count.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from mdssl_jax.data import augment
from mdssl_jax.data.domain import DomainData
from mdssl_jax.data.pipeline import settings as settings_lib

# A block's rows: (domain index, first row, end row) within the domain's N.
Parts = Sequence[tuple[int, int, int]]


def domain_indices(step: tf.Tensor, base: tf.Tensor, domain: int, n: int,
                   per_domain: int) -> tf.Tensor:
  """Indices into domain `domain`'s train set for one step: [N] int64.

  Stream position p = step·N + i lies in epoch p // n at offset p % n of
  that epoch's permutation; only the (static) few epochs the step spans are
  materialised, so any step is computed directly (O(n) work).
  """
  pos = step * per_domain + tf.range(per_domain, dtype=tf.int64)
  epoch = pos // n
  first = (step * per_domain) // n
  spans = (per_domain - 1) // n + 2
  perms = tf.stack([
      tf.random.experimental.stateless_shuffle(
          tf.range(n, dtype=tf.int64),
          settings_lib.fold_seed(base, settings_lib.TAG_PERM, domain,
                                 first + j))
      for j in range(spans)])
  return tf.gather_nd(perms, tf.stack([epoch - first, pos % n], axis=1))


def step_uniforms(step: tf.Tensor, s: settings_lib.Settings,
                  global_batch: int, masked: bool):
  """(view uniforms [B, views, U], saliency uniforms [B, L, 2] or None)."""
  u_all = tf.random.stateless_uniform(
      [global_batch, s.num_views, augment.NUM_UNIFORMS],
      settings_lib.fold_seed(s.base, settings_lib.TAG_VIEWS, step))
  u_sal_all = None
  if masked:
    u_sal_all = tf.random.stateless_uniform(
        [global_batch, len(s.large), augment.NUM_SALIENCY_UNIFORMS],
        settings_lib.fold_seed(s.base, settings_lib.TAG_SALIENCY, step))
  return u_all, u_sal_all


class MemoryRows:
  """The in-memory domains' train sets as constants, and their step rows."""

  def __init__(self, domains: Sequence[DomainData],
               s: settings_lib.Settings):
    memory = [d for d in domains if not d.is_streaming]
    self._s = s
    self._sizes = [d.num_train for d in domains]
    self._offsets, total = [], 0
    for d in domains:  # Row offset of each in-memory domain in `images`.
      self._offsets.append(total)
      total += 0 if d.is_streaming else len(d.train_images)
    self._images = tf.constant(np.concatenate(
        [d.train_images for d in memory]))
    self._labels = tf.constant(np.concatenate(
        [d.train_labels.astype(np.int32) for d in memory]))
    self.masked = s.saliency_on and any(d.train_masks is not None
                                        for d in memory)
    if self.masked:
      self._masks = tf.constant(np.concatenate([
          (d.train_masks > 0.5).astype(np.uint8)
          if d.train_masks is not None
          else np.zeros(d.train_images.shape[:3], np.uint8)
          for d in memory]))
      # Rows of mask-less domains get probability 0 (never masked).
      self._row_prob = np.repeat(
          np.where(s.has_masks, s.sal_prob, 0.0), s.per_domain)

  def _views(self, srcs, u, view_specs):
    s = self._s
    return tf.stack([
        augment.augment_batch(srcs[v], u[:, v], out_size=spec.size,
                              crop_area=spec.crop_area, mean=s.mean,
                              std=s.std, **spec.params)
        for v, spec in enumerate(view_specs)], axis=1)

  @property
  def num_pooled(self) -> int:
    """Rows of the pooled in-memory train sets (the mixture's size)."""
    return int(self._images.shape[0])

  def pooled_domains(self) -> np.ndarray:
    """[num_pooled] int32: the configured domain of each pooled row (all
    domains in memory)."""
    return np.repeat(np.arange(len(self._sizes), dtype=np.int32),
                     self._sizes)

  def row_probs(self, source_domains: tf.Tensor) -> tf.Tensor:
    """Saliency probability of rows of the given domains: [r] float32."""
    per_domain = np.where(self._s.has_masks, self._s.sal_prob, 0.0)
    return tf.gather(tf.constant(per_domain, tf.float32), source_domains)

  def gather(self, rows: tf.Tensor, u: tf.Tensor, u_sal: tf.Tensor | None,
             prob: tf.Tensor | None) -> dict[str, tf.Tensor]:
    """Views and labels of pooled rows (domain offsets applied).

    Args:
      rows: [r] int64 rows of the pooled train sets.
      u: [r, views, NUM_UNIFORMS] the rows' view uniforms.
      u_sal: [r, L, 2] saliency uniforms (None when not masked).
      prob: [r] saliency probability of each row (None when not masked).

    Returns:
      {"large" [r, L, s, s, 3], "label" [r], ["small"]}.
    """
    s = self._s
    large, small = s.large, s.small
    src = tf.gather(self._images, rows)
    large_src = [src] * len(large)
    if self.masked:
      row_masks = tf.gather(self._masks, rows)
      # A fresh decision per large view (not Listing 1's overwrite).
      large_src = [augment.saliency_mask_batch(
          src, row_masks, u_sal[:, v], prob=prob, min_coverage=s.min_cov)
                   for v in range(len(large))]
    out = {"large": self._views(large_src, u[:, :len(large)], large),
           "label": tf.gather(self._labels, rows)}
    if small:
      out["small"] = self._views([src] * len(small), u[:, len(large):],
                                 small)
    return out

  def block(self, step: tf.Tensor, parts: Parts, u_all: tf.Tensor,
            u_sal_all: tf.Tensor | None) -> dict[str, tf.Tensor]:
    """The batch rows of consecutive in-memory `parts` for one step.

    Args:
      step: scalar int64 step.
      parts: (domain, i0, i1) row ranges, consecutive in the global batch.
      u_all: [D·N, views, NUM_UNIFORMS] uniforms of the global batch.
      u_sal_all: [D·N, L, 2] saliency uniforms (None when not masked).

    Returns:
      {"large" [r, L, s, s, 3], "label" [r], "index" [r], ["small"]}.
    """
    s = self._s
    per_domain = s.per_domain
    g0 = parts[0][0] * per_domain + parts[0][1]
    g1 = parts[-1][0] * per_domain + parts[-1][2]
    index = tf.concat([
        domain_indices(step, s.base, d, self._sizes[d], per_domain)[i0:i1]
        for d, i0, i1 in parts], axis=0)
    row_offsets = np.concatenate([
        np.full(i1 - i0, self._offsets[d], np.int64) for d, i0, i1 in parts])
    prob = None
    if self.masked:
      prob = tf.constant(self._row_prob[g0:g1], tf.float32)
    out = self.gather(index + tf.constant(row_offsets), u_all[g0:g1],
                      None if u_sal_all is None else u_sal_all[g0:g1], prob)
    out["index"] = index
    return out
