"""What every block of a training step needs, read once from the config.

Also the stateless seed derivation shared by the in-memory and streaming
rows: every random draw of the pipeline is ``fold_seed(base, tag, ...)``
with one of the tags below, so the streams never overlap.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from mdssl_jax.data.domain import DomainData
from mdssl_jax.data.pipeline import views

# Tags separating the stateless streams derived from config.seed.
TAG_PERM, TAG_VIEWS, TAG_SALIENCY = 1, 2, 3
TAG_STREAM_ORDER, TAG_STREAM_VIEWS, TAG_STREAM_SALIENCY = 4, 5, 6
TAG_PSEUDO = 7  # Pseudo-domain draws (pipeline/pseudo.py).
TAG_SHARD = 8  # Each input shard's own streams (data.input_shards > 1).
NO_END = np.iinfo(np.int64).max


def fold_seed(base: tf.Tensor, *data: Any) -> tf.Tensor:
  """Chains stateless fold-ins: a [2] int64 seed for (base, *data)."""
  seed = base
  for x in data:
    seed = tf.random.experimental.stateless_fold_in(
        seed, tf.cast(x, tf.int64))
  return seed


def parallel_calls(config: Any) -> int:
  """config.data.num_parallel_calls (-1: tf.data.AUTOTUNE)."""
  npc = int(config.data.num_parallel_calls)
  return tf.data.AUTOTUNE if npc < 0 else max(1, npc)


def unconverted(fn):
  """`fn` for `Dataset.map`, traced as written: without AutoGraph's source
  rewrite (the pipeline's functions branch with tf.cond / tf.where only),
  which builds a demo's step graph in ~0.7 s instead of ~1.8 s."""
  return tf.autograph.experimental.do_not_convert(fn)


@dataclasses.dataclass(frozen=True)
class Settings:
  """Step-wide settings of :func:`make_train_dataset`.

  Attributes:
    per_domain: N, rows per domain per step.
    large: view specs of the large views (L of them).
    small: view specs of the small views (S of them).
    mean: per-channel mean in [0, 1] units.
    std: per-channel std in [0, 1] units.
    sal_prob: saliency masking probability (config.saliency.prob).
    min_cov: minimum mask coverage for masking.
    saliency_on: whether any domain is masked (prob > 0 and masks exist).
    has_masks: per domain, whether it has saliency masks.
    base: [2] int64 seed (config.seed, 0) of the view randomness.
  """
  per_domain: int
  large: list[views.ViewSpec]
  small: list[views.ViewSpec]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  sal_prob: float
  min_cov: float
  saliency_on: bool
  has_masks: list[bool]
  base: tf.Tensor

  @property
  def num_views(self) -> int:
    return len(self.large) + len(self.small)


def from_config(config: Any, domains: Sequence[DomainData]) -> Settings:
  """Reads the settings (and logs whether saliency masking is on)."""
  specs = views.view_specs_from_config(config)
  sal_prob = float(config.saliency.prob)
  min_cov = float(config.saliency.min_coverage)
  has_masks = [d.has_masks for d in domains]
  saliency_on = sal_prob > 0 and any(has_masks)
  logging.info(
      "Saliency masking %s (prob=%g, min_coverage=%g, domains with masks: "
      "%s).", "ON" if saliency_on else "OFF", sal_prob, min_cov,
      [d.name for d, m in zip(domains, has_masks) if m] or "none")
  return Settings(
      per_domain=int(config.data.per_domain_batch), large=specs["large"],
      small=specs["small"], mean=tuple(float(m) for m in config.data.mean),
      std=tuple(float(s) for s in config.data.std), sal_prob=sal_prob,
      min_cov=min_cov, saliency_on=saliency_on, has_masks=has_masks,
      base=tf.constant([int(config.seed), 0], tf.int64))
