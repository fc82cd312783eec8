"""Multi-domain, multi-view training batches in tf.data (METHODS §2.6, §3.6).

Synopsis::

  domains = sources.load_domains(config.data)
  it = pipeline.make_train_iterator(config, domains, start_step=step)
  batch = next(it)
  batch["large"]    # [D*N, L, H, W, 3] float32, normalised
  batch["small"]    # [D*N, S, h, w, 3] float32 (absent when S == 0)
  batch["domain"]   # [D*N] int32: row d*N + i belongs to domain d
  batch["label"]    # [D*N] int32 (for online probes only)
  batch["index"]    # [D*N] int64: row's index into its domain's train set

Every step draws exactly N = ``config.data.per_domain_batch`` images from
each of the D domains ("dataset batches", paper A.5). Each domain has its own
infinite stream: epoch e of domain d is a stateless permutation seeded by
(seed, d, e), and step s takes stream positions s·N … s·N + N − 1, so a small
domain simply cycles faster. The whole batch of step s, augmentations
included, is a pure function of (config.seed, s): starting at
``start_step`` (resume) gives exactly the batches an uninterrupted run sees.
All view randomness of a step comes from one stateless draw seeded by
(seed, step) and shaped [D*N, views, NUM_UNIFORMS], so the view of
(domain, row, view) is fixed by those indices and does not depend on the
process count.

View numbering follows METHODS.md §3.6: large views 1, 3, … and small view 1
use ``config.augment.odd``; large views 2, 4, … and small view 2 use
``config.augment.even``. RELICv2 saliency masking (§3.7) is applied to each
large view independently (a fresh draw per view; never to small views) when
a domain has masks and ``config.saliency.prob > 0``.

Multi-process: process p gets rows [p·B/P, (p+1)·B/P) of the global batch
(B = D·N must be divisible by P).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator, Sequence

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf

from mdssl_jax.data import augment
from mdssl_jax.data import sources
from mdssl_jax.data.sources import DomainData

try:  # Keep TF off accelerators: JAX owns them.
  tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):  # Already initialised, or no GPU API.
  pass

AUGMENT_KEYS = ("flip_p", "jitter_p", "brightness", "contrast", "saturation",
                "hue", "gray_p", "blur_p", "blur_sigma", "blur_kernel_frac",
                "solarize_p")
# Tags separating the stateless streams derived from config.seed.
_TAG_PERM, _TAG_VIEWS, _TAG_SALIENCY = 1, 2, 3
_NO_END = np.iinfo(np.int64).max
_get = sources.cfg_get


# ----------------------------------------------------------------------------
# Default config blocks (the lead's configs start from these)
# ----------------------------------------------------------------------------


def default_data_config() -> ml_collections.ConfigDict:
  """``config.data``: the three offline demo domains at 32 px."""
  c = ml_collections.ConfigDict()
  c.domains = [dict(name=n, source="demo", demo_name=n)
               for n in ("digits", "photos", "textures")]
  c.image_size = 32
  c.resize = "pad"  # "pad" (e.g. 28 -> 32 with 2 px borders) or "resize".
  c.data_dir = None  # TFDS data_dir; None: TFDS default.
  c.download = False  # Let TFDS download missing sets (needs network).
  c.per_domain_batch = 32  # N images per domain per step.
  c.mean = (0.485, 0.456, 0.406)  # [0, 1] units.
  c.std = (0.229, 0.224, 0.225)
  c.prefetch = 2
  c.num_parallel_calls = -1  # -1: tf.data.AUTOTUNE.
  c.max_in_memory_gb = 8.0
  # Data seed (demo generation, subsampling). Separate from config.seed so
  # runs with different training seeds see the same data.
  c.seed = 0
  return c


def default_views_config(image_size: int = 32) -> ml_collections.ConfigDict:
  """``config.views``: 2 large views at image_size, no small views."""
  c = ml_collections.ConfigDict()
  c.large = dict(count=2, size=image_size, crop_area=(0.08, 1.0))
  c.small = dict(count=0, size=16, crop_area=(0.05, 0.14))
  return c


def default_augment_config() -> ml_collections.ConfigDict:
  """``config.augment``: BYOL/RELICv2 odd and even columns (§1.4, §3.6)."""
  c = ml_collections.ConfigDict()
  c.aspect = (3 / 4, 4 / 3)
  c.odd = dict(flip_p=0.5, jitter_p=0.8, brightness=0.4, contrast=0.4,
               saturation=0.2, hue=0.1, gray_p=0.2, blur_p=0.1,
               blur_sigma=(0.1, 2.0), blur_kernel_frac=0.1, solarize_p=0.2)
  c.even = dict(c.odd.to_dict(), blur_p=1.0, solarize_p=0.0)
  return c


def default_saliency_config() -> ml_collections.ConfigDict:
  """``config.saliency``: RELICv2 masking (only for domains with masks)."""
  c = ml_collections.ConfigDict()
  c.prob = 0.1
  c.min_coverage = 0.05
  return c


# ----------------------------------------------------------------------------
# View specs
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ViewSpec:
  """How to produce one view.

  Attributes:
    group: "large" or "small".
    size: output side in pixels.
    crop_area: (min, max) crop area fraction.
    params: keyword arguments of ``augment.augment_view`` other than
      out_size/crop_area/mean/std (aspect plus the odd or even column).
    saliency: whether this view may be saliency-masked (large views only).
  """
  group: str
  size: int
  crop_area: tuple[float, float]
  params: dict
  saliency: bool


def _as_dict(cfg: Any) -> dict:
  return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


def _column(config: Any, name: str) -> dict:
  column = _as_dict(config.augment[name])
  missing = sorted(set(AUGMENT_KEYS) - set(column))
  unknown = sorted(set(column) - set(AUGMENT_KEYS))
  if missing or unknown:
    raise ValueError(f"config.augment.{name} must have exactly the keys "
                     f"{list(AUGMENT_KEYS)}; missing {missing}, unknown "
                     f"{unknown}.")
  column["blur_sigma"] = tuple(column["blur_sigma"])
  return column


def view_specs_from_config(config: Any) -> dict[str, list[ViewSpec]]:
  """Builds the large and small view specs (METHODS.md §3.6 numbering).

  Args:
    config: full config with ``views``, ``augment`` and ``data.image_size``.

  Returns:
    {"large": [ViewSpec] * L, "small": [ViewSpec] * S}; view j (0-based)
    uses the odd column when j is even (views 1, 3, … in 1-based numbering).
  """
  aspect = tuple(config.augment.aspect)
  columns = (_column(config, "odd"), _column(config, "even"))
  specs = {}
  for group in ("large", "small"):
    view_cfg = config.views[group]
    count = int(_get(view_cfg, "count", 0))
    size = _get(view_cfg, "size")
    if size is None:
      size = config.data.image_size
    crop_area = tuple(float(a) for a in view_cfg["crop_area"])
    if count < 0 or (group == "large" and count < 1):
      raise ValueError(f"config.views.{group}.count must be >= "
                       f"{1 if group == 'large' else 0}, got {count}.")
    if not isinstance(size, (int, np.integer)) or size < 1:
      raise ValueError(f"config.views.{group}.size must be a positive "
                       f"integer, got {size!r}.")
    if (len(crop_area) != 2 or not 0 < crop_area[0] <= crop_area[1] <= 1):
      raise ValueError(f"config.views.{group}.crop_area must be (min, max) "
                       f"with 0 < min <= max <= 1, got {crop_area!r}.")
    specs[group] = [
        ViewSpec(group=group, size=int(size), crop_area=crop_area,
                 params=dict(columns[j % 2], aspect=aspect),
                 saliency=group == "large")
        for j in range(count)]
  return specs


# ----------------------------------------------------------------------------
# Training stream
# ----------------------------------------------------------------------------


def _check_domains(domains: Sequence[DomainData]) -> tuple[int, int]:
  if not domains:
    raise ValueError("make_train_iterator needs at least one domain.")
  shapes = {d.train_images.shape[1:] for d in domains}
  if len(shapes) != 1:
    raise ValueError(f"All domains must share one image shape (load them "
                     f"with the same config.data.image_size), got "
                     f"{sorted(shapes)}.")
  for d in domains:
    if len(d.train_images) == 0:
      raise ValueError(f"Domain {d.name!r} has no train images.")
  h, w, _ = shapes.pop()
  return h, w


def _seed(base: tf.Tensor, *data: Any) -> tf.Tensor:
  """Chains stateless fold-ins: a [2] int64 seed for (base, *data)."""
  seed = base
  for x in data:
    seed = tf.random.experimental.stateless_fold_in(
        seed, tf.cast(x, tf.int64))
  return seed


def _domain_indices(step: tf.Tensor, base: tf.Tensor, domain: int, n: int,
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
          tf.range(n, dtype=tf.int64), _seed(base, _TAG_PERM, domain,
                                             first + j))
      for j in range(spans)])
  return tf.gather_nd(perms, tf.stack([epoch - first, pos % n], axis=1))


def make_train_dataset(config: Any, domains: Sequence[DomainData], *,
                       start_step: int, process_index: int = 0,
                       process_count: int = 1) -> tf.data.Dataset:
  """The infinite tf.data stream behind :func:`make_train_iterator`.

  Args:
    config: full config (``seed``, ``data``, ``views``, ``augment``,
      ``saliency``).
    domains: loaded domains sharing one image size.
    start_step: index of the first step to produce (resume point).
    process_index: this process's index.
    process_count: number of processes sharing the global batch.

  Returns:
    tf.data.Dataset of per-process batch dicts (see the module docstring);
    element k is the batch of step start_step + k.
  """
  height, width = _check_domains(domains)
  per_domain = int(config.data.per_domain_batch)
  num_domains = len(domains)
  global_batch = num_domains * per_domain
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"Need 0 <= process_index < process_count, got "
                     f"{process_index}, {process_count}.")
  if global_batch % process_count:
    raise ValueError(
        f"D*N = {num_domains}*{per_domain} = {global_batch} rows per step "
        f"are not divisible by process_count={process_count}; change "
        "config.data.per_domain_batch.")
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}.")
  local = global_batch // process_count
  lo, hi = process_index * local, (process_index + 1) * local

  specs = view_specs_from_config(config)
  large, small = specs["large"], specs["small"]
  mean = tuple(float(m) for m in config.data.mean)
  std = tuple(float(s) for s in config.data.std)
  sal_cfg = _get(config, "saliency", {})
  sal_prob = float(_get(sal_cfg, "prob", 0.0))
  min_cov = float(_get(sal_cfg, "min_coverage", 0.05))
  has_masks = [d.train_masks is not None for d in domains]
  saliency_on = sal_prob > 0 and any(has_masks)
  logging.info(
      "Saliency masking %s (prob=%g, min_coverage=%g, domains with masks: "
      "%s).", "ON" if saliency_on else "OFF", sal_prob, min_cov,
      [d.name for d, m in zip(domains, has_masks) if m] or "none")

  sizes = [len(d.train_images) for d in domains]
  offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
  images = tf.constant(np.concatenate([d.train_images for d in domains]))
  labels = tf.constant(np.concatenate(
      [d.train_labels.astype(np.int32) for d in domains]))
  if saliency_on:
    masks = tf.constant(np.concatenate([
        (d.train_masks > 0.5).astype(np.uint8) if d.train_masks is not None
        else np.zeros(d.train_images.shape[:3], np.uint8) for d in domains]))
    # Rows of mask-less domains get probability 0 (never masked).
    row_prob = tf.constant(np.repeat(
        np.where(has_masks, sal_prob, 0.0), per_domain)[lo:hi], tf.float32)
  domain_ids = np.repeat(np.arange(num_domains, dtype=np.int32), per_domain)
  domain_ids = tf.constant(domain_ids[lo:hi])
  base = tf.constant([int(config.seed), 0], tf.int64)
  num_views = len(large) + len(small)

  def make_views(srcs, u, view_specs):
    return tf.stack([
        augment.augment_batch(srcs[v], u[:, v], out_size=spec.size,
                              crop_area=spec.crop_area, mean=mean, std=std,
                              **spec.params)
        for v, spec in enumerate(view_specs)], axis=1)

  def step_batch(step):
    index = tf.concat([
        _domain_indices(step, base, d, n, per_domain)
        for d, n in enumerate(sizes)], axis=0)[lo:hi]
    rows = index + tf.gather(tf.constant(offsets), domain_ids)
    src = tf.gather(images, rows)
    u = tf.random.stateless_uniform(
        [global_batch, num_views, augment.NUM_UNIFORMS],
        _seed(base, _TAG_VIEWS, step))[lo:hi]
    large_src = [src] * len(large)
    if saliency_on:
      u_sal = tf.random.stateless_uniform(
          [global_batch, len(large), augment.NUM_SALIENCY_UNIFORMS],
          _seed(base, _TAG_SALIENCY, step))[lo:hi]
      row_masks = tf.gather(masks, rows)
      # A fresh decision per large view (not Listing 1's overwrite).
      large_src = [augment.saliency_mask_batch(
          src, row_masks, u_sal[:, v], prob=row_prob, min_coverage=min_cov)
                   for v in range(len(large))]
    out = {"large": make_views(large_src, u[:, :len(large)], large),
           "domain": domain_ids,
           "label": tf.gather(labels, rows),
           "index": index}
    if small:
      out["small"] = make_views([src] * len(small), u[:, len(large):], small)
    return out

  npc = int(_get(config.data, "num_parallel_calls", -1))
  ds = tf.data.Dataset.range(start_step, _NO_END)
  ds = ds.map(step_batch,
              num_parallel_calls=tf.data.AUTOTUNE if npc < 0 else max(1, npc),
              deterministic=True)
  prefetch = int(_get(config.data, "prefetch", 2))
  return ds.prefetch(prefetch) if prefetch > 0 else ds


def make_train_iterator(config: Any, domains: Sequence[DomainData], *,
                        start_step: int, process_index: int = 0,
                        process_count: int = 1
                        ) -> Iterator[dict[str, np.ndarray]]:
  """Infinite iterator of per-process training batches from ``start_step``.

  Args:
    config: full config (``seed``, ``data``, ``views``, ``augment``,
      ``saliency``).
    domains: loaded domains (same image size), e.g. from
      ``sources.load_domains(config.data)``.
    start_step: index of the first step to produce (resume point).
    process_index: this process's index.
    process_count: number of processes sharing the global batch.

  Returns:
    Iterator of dicts of NumPy arrays with B = D·N / process_count rows:
    "large" [B, L, H, W, 3] float32, "small" [B, S, h, w, 3] float32 (only
    if S > 0), "domain" [B] int32, "label" [B] int32, "index" [B] int64.
  """
  return iter(make_train_dataset(
      config, domains, start_step=start_step, process_index=process_index,
      process_count=process_count).as_numpy_iterator())


def num_train_batches_per_epoch(config: Any,
                                domains: Sequence[DomainData]) -> int:
  """Steps for the largest domain to be seen once: ceil(max n_d / N)."""
  per_domain = int(config.data.per_domain_batch)
  return math.ceil(max(len(d.train_images) for d in domains) / per_domain)


# ----------------------------------------------------------------------------
# Evaluation arrays
# ----------------------------------------------------------------------------


def _eval_images(images: np.ndarray, size: int, mean, std,
                 chunk: int = 2048) -> np.ndarray:
  out = [augment.eval_transform(images[i:i + chunk], out_size=size,
                                mean=mean, std=std).numpy()
         for i in range(0, len(images), chunk)]
  if not out:
    return np.zeros((0, size, size, 3), np.float32)
  return np.concatenate(out)


def make_eval_arrays(config: Any, domains: Sequence[DomainData], *,
                     max_train: int | None = None,
                     max_test: int | None = None) -> list[dict[str, Any]]:
  """Eval-transformed arrays per domain (for linear probes and kNN).

  Images are resized to ``config.views.large.size`` (central square) and
  normalised; never augmented or masked. Subsampling is class-stratified
  and deterministic (data seed).

  Args:
    config: full config (``data.mean``, ``data.std``, ``views.large.size``,
      ``data.seed``).
    domains: loaded domains.
    max_train: keep at most this many train images per domain.
    max_test: keep at most this many test images per domain.

  Returns:
    One dict per domain: "name", "train_images" [n, s, s, 3] float32,
    "train_labels" [n] int32, "test_images" [m, s, s, 3] float32,
    "test_labels" [m] int32, "num_classes" int.
  """
  size = _get(config.views.large, "size") or config.data.image_size
  mean = tuple(float(m) for m in config.data.mean)
  std = tuple(float(s) for s in config.data.std)
  seed = int(_get(config.data, "seed", 0))
  out = []
  for d in domains:
    tr = sources.subsample_indices(d.train_labels, max_train, seed)
    te = sources.subsample_indices(d.test_labels, max_test, seed + 1)
    out.append({
        "name": d.name,
        "train_images": _eval_images(d.train_images[tr], size, mean, std),
        "train_labels": d.train_labels[tr].astype(np.int32),
        "test_images": _eval_images(d.test_images[te], size, mean, std),
        "test_labels": d.test_labels[te].astype(np.int32),
        "num_classes": int(d.num_classes),
    })
  return out
