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
                    #   (stream position for streaming domains)

Every step draws exactly N = ``config.data.per_domain_batch`` images from
each of the D domains ("dataset batches", paper A.5). Each domain has its own
infinite stream: epoch e of domain d is a stateless permutation seeded by
(seed, d, e), and step s takes stream positions s·N … s·N + N − 1, so a small
domain simply cycles faster. The whole batch of step s, augmentations
included, is a pure function of (config.seed, config.data.seed for
streaming domains, s): starting at
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

Streaming TFDS domains (``DomainData.stream``; e.g. ImageNet at 224 px) are
read from disk instead of memory and mix freely with in-memory domains:

* Order: the domain's stream is epoch 0, 1, 2, … concatenated. Epoch e reads
  every example of the split once: its tfrecord shards in a stateless
  permutation seeded by (config.data.seed, domain, e), 16 shards
  interleaved, then a ``config.data.shuffle_buffer``-example shuffle buffer
  seeded the same way (buffer entries are encoded images: ~1 GB for 10 000
  ImageNet JPEGs). Step s takes stream positions s·N … s·N + N − 1, as for
  in-memory domains; the order is a function of the data seed only.
* Decoding: records are read with the image undecoded
  (``tfds.decode.SkipDecoding``); only this process's rows are decoded,
  once per image, and every view is cropped from the full-resolution image
  (``augment.random_resized_crop``; same window rule and resampling as the
  in-memory crop) after that view's saliency masking when the domain has a
  ``mask_key``. The colour ops then run batched
  (``augment.augment_cropped_batch``). View uniforms derive from
  (config.seed, step, global row), saliency draws likewise.
* Resume: starting at step s skips whole epochs without reading them and
  then skips (s·N) mod n records of the current epoch: each is read and
  parsed but not decoded, so a resume costs at most one epoch of I/O
  (ImageNet: up to one pass over ~140 GB of records, minutes from local
  disk) and yields exactly the batches an uninterrupted run would have
  produced.
* Multi-process: every process reads the full record stream of each
  streaming domain it has rows in (so batches do not depend on the process
  count) but decodes only its own rows.
* The "index" of a streamed row is its stream position s·N + i (TFDS
  records carry no stable index).
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
_TAG_STREAM_ORDER, _TAG_STREAM_VIEWS, _TAG_STREAM_SALIENCY = 4, 5, 6
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
  # TFDS domains larger than this (or with in_memory=False) stream from
  # disk instead of being held as uint8 arrays.
  c.max_in_memory_gb = 8.0
  # Streaming TFDS domains: examples in the (seeded, per-epoch) shuffle
  # buffer; each holds one encoded image (~110 KB for ImageNet JPEGs).
  c.shuffle_buffer = 10_000
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


def _check_domains(domains: Sequence[DomainData]) -> tuple[int, int] | None:
  """Checks the domains; returns the in-memory (H, W) (None if all stream)."""
  if not domains:
    raise ValueError("make_train_iterator needs at least one domain.")
  in_memory = [d for d in domains if not d.is_streaming]
  for d in in_memory:
    if len(d.train_images) == 0:
      raise ValueError(f"Domain {d.name!r} has no train images.")
  if not in_memory:
    return None
  shapes = {d.train_images.shape[1:] for d in in_memory}
  if len(shapes) != 1:
    raise ValueError(f"All domains must share one image shape (load them "
                     f"with the same config.data.image_size), got "
                     f"{sorted(shapes)}.")
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


def _colour_params(spec: ViewSpec) -> dict:
  """augment_cropped_batch kwargs of a view (its params minus the crop)."""
  return {k: v for k, v in spec.params.items() if k != "aspect"}


def _stream_views(config: Any, dom: DomainData, *, domain: int,
                  rows: tuple[int, int], start_step: int,
                  specs: dict[str, list[ViewSpec]], saliency: bool,
                  sal_prob: float, min_cov: float) -> tf.data.Dataset:
  """Per-step cropped views of one streaming domain's rows.

  Stream: epoch e (a fresh shard order and shuffle buffer seeded by
  (config.data.seed, domain, e)) of the domain's records, concatenated
  over e; step s takes stream positions s·N … s·N + N − 1. Starting at
  start_step skips whole epochs for free and then ``(start_step·N) mod n``
  records of the current epoch (read and parsed, not decoded).

  Returns:
    Dataset whose k-th element (step start_step + k) is a dict for rows
    [rows[0], rows[1]) of the domain: "large" [r, L, s, s, 3] and "small"
    [r, S, t, t, 3] float32 crops in [0, 1] (before colour ops), "u"
    [r, L + S, NUM_UNIFORMS] the views' uniforms, "label" [r] int32 and
    "index" [r] int64 stream positions.
  """
  spec = dom.stream
  per_domain = int(config.data.per_domain_batch)
  n = int(spec.num_train)
  buffer = int(_get(config.data, "shuffle_buffer", 10_000))
  npc = int(_get(config.data, "num_parallel_calls", -1))
  npc = tf.data.AUTOTUNE if npc < 0 else max(1, npc)
  large, small = specs["large"], specs["small"]
  num_views = len(large) + len(small)
  epoch_fn, _ = sources.stream_epoch_fn(spec, domain=dom.name)
  data_base = tf.constant([int(_get(config.data, "seed", 0)), 0], tf.int64)
  base = tf.constant([int(config.seed), 0], tf.int64)

  def epoch(e):
    seed = _seed(data_base, _TAG_STREAM_ORDER, domain, e)
    shuffle_seed = tf.random.stateless_uniform(
        [], _seed(seed, 1), minval=0, maxval=2 ** 62, dtype=tf.int64)
    return epoch_fn(_seed(seed, 0)).shuffle(
        buffer, seed=shuffle_seed, reshuffle_each_iteration=False)

  start = start_step * per_domain
  first_epoch, offset = divmod(start, n)
  ds = tf.data.Dataset.range(first_epoch, _NO_END).flat_map(epoch)
  ds = ds.skip(offset).enumerate(start=start)
  lo, hi = rows
  if (lo, hi) != (0, per_domain):
    ds = ds.filter(lambda p, rec: tf.logical_and(p % per_domain >= lo,
                                                 p % per_domain < hi))

  def prepare(pos, rec):
    step, row = pos // per_domain, pos % per_domain
    global_row = domain * per_domain + row
    u = tf.random.stateless_uniform(
        [num_views, augment.NUM_UNIFORMS],
        _seed(base, _TAG_STREAM_VIEWS, step, global_row))
    image = sources.decode_stream_image(
        rec["image"], image_size=spec.image_size, mode=spec.resize)
    large_src = [image] * len(large)
    if saliency:
      mask = sources.decode_stream_mask(
          rec["mask"], image_size=spec.image_size, mode=spec.resize)
      with tf.control_dependencies([tf.debugging.assert_equal(
          tf.shape(mask), tf.shape(image)[:2],
          message=f"Domain {dom.name!r}: mask '{spec.mask_key}' and image "
          "sizes differ")]):
        mask = tf.identity(mask)
      u_sal = tf.random.stateless_uniform(
          [len(large), augment.NUM_SALIENCY_UNIFORMS],
          _seed(base, _TAG_STREAM_SALIENCY, step, global_row))
      # A fresh decision per large view (not Listing 1's overwrite).
      large_src = [augment.saliency_mask_batch(
          image[None], mask[None], u_sal[v][None], prob=sal_prob,
          min_coverage=min_cov)[0] for v in range(len(large))]

    def crops(srcs, u_views, view_specs):
      return tf.stack([
          augment.random_resized_crop(src, u_views[v], out_size=vs.size,
                                      crop_area=vs.crop_area,
                                      aspect=vs.params["aspect"])
          for v, (src, vs) in enumerate(zip(srcs, view_specs))])

    out = {"large": crops(large_src, u[:len(large)], large), "u": u,
           "label": tf.cast(rec["label"], tf.int32), "index": pos}
    if small:
      out["small"] = crops([image] * len(small), u[len(large):], small)
    return out

  ds = ds.map(prepare, num_parallel_calls=npc, deterministic=True)
  return ds.batch(hi - lo, drop_remainder=True)


def make_train_dataset(config: Any, domains: Sequence[DomainData], *,
                       start_step: int, process_index: int = 0,
                       process_count: int = 1) -> tf.data.Dataset:
  """The infinite tf.data stream behind :func:`make_train_iterator`.

  Args:
    config: full config (``seed``, ``data``, ``views``, ``augment``,
      ``saliency``).
    domains: loaded domains (in-memory ones sharing one image size;
      streaming ones in any mix).
    start_step: index of the first step to produce (resume point).
    process_index: this process's index.
    process_count: number of processes sharing the global batch.

  Returns:
    tf.data.Dataset of per-process batch dicts (see the module docstring);
    element k is the batch of step start_step + k.
  """
  shape = _check_domains(domains)
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
  has_masks = [d.has_masks for d in domains]
  saliency_on = sal_prob > 0 and any(has_masks)
  logging.info(
      "Saliency masking %s (prob=%g, min_coverage=%g, domains with masks: "
      "%s).", "ON" if saliency_on else "OFF", sal_prob, min_cov,
      [d.name for d, m in zip(domains, has_masks) if m] or "none")
  base = tf.constant([int(config.seed), 0], tf.int64)
  num_views = len(large) + len(small)

  # This process's rows, cut into blocks of consecutive rows that are all
  # in memory or all from one streaming domain: (kind, [(d, i0, i1)]).
  blocks = []
  for d, dom in enumerate(domains):
    i0 = max(lo, d * per_domain) - d * per_domain
    i1 = min(hi, (d + 1) * per_domain) - d * per_domain
    if i0 >= i1:
      continue
    kind = "stream" if dom.is_streaming else "memory"
    if kind == "memory" and blocks and blocks[-1][0] == "memory":
      blocks[-1][1].append((d, i0, i1))
    else:
      blocks.append((kind, [(d, i0, i1)]))

  streams = [
      _stream_views(config, domains[d], domain=d, rows=(i0, i1),
                    start_step=start_step, specs=specs,
                    saliency=saliency_on and has_masks[d],
                    sal_prob=sal_prob, min_cov=min_cov)
      for kind, parts in blocks if kind == "stream" for d, i0, i1 in parts]

  memory = [d for d in domains if not d.is_streaming]
  if memory:
    sizes = [d.num_train for d in domains]
    offsets, total = [], 0
    for d in domains:  # Row offset of each in-memory domain in `images`.
      offsets.append(total)
      total += 0 if d.is_streaming else len(d.train_images)
    images = tf.constant(np.concatenate([d.train_images for d in memory]))
    labels = tf.constant(np.concatenate(
        [d.train_labels.astype(np.int32) for d in memory]))
    memory_masks = saliency_on and any(d.train_masks is not None
                                       for d in memory)
    if memory_masks:
      masks = tf.constant(np.concatenate([
          (d.train_masks > 0.5).astype(np.uint8)
          if d.train_masks is not None
          else np.zeros(d.train_images.shape[:3], np.uint8)
          for d in memory]))
      # Rows of mask-less domains get probability 0 (never masked).
      row_prob = np.repeat(np.where(has_masks, sal_prob, 0.0), per_domain)

  def make_views(srcs, u, view_specs):
    return tf.stack([
        augment.augment_batch(srcs[v], u[:, v], out_size=spec.size,
                              crop_area=spec.crop_area, mean=mean, std=std,
                              **spec.params)
        for v, spec in enumerate(view_specs)], axis=1)

  def memory_block(step, parts, u_all, u_sal_all):
    g0 = parts[0][0] * per_domain + parts[0][1]
    g1 = parts[-1][0] * per_domain + parts[-1][2]
    index = tf.concat([
        _domain_indices(step, base, d, sizes[d], per_domain)[i0:i1]
        for d, i0, i1 in parts], axis=0)
    row_offsets = np.concatenate([np.full(i1 - i0, offsets[d], np.int64)
                                  for d, i0, i1 in parts])
    rows = index + tf.constant(row_offsets)
    src = tf.gather(images, rows)
    u = u_all[g0:g1]
    large_src = [src] * len(large)
    if memory_masks:
      row_masks = tf.gather(masks, rows)
      prob = tf.constant(row_prob[g0:g1], tf.float32)
      # A fresh decision per large view (not Listing 1's overwrite).
      large_src = [augment.saliency_mask_batch(
          src, row_masks, u_sal_all[g0:g1, v], prob=prob,
          min_coverage=min_cov) for v in range(len(large))]
    out = {"large": make_views(large_src, u[:, :len(large)], large),
           "label": tf.gather(labels, rows), "index": index}
    if small:
      out["small"] = make_views([src] * len(small), u[:, len(large):], small)
    return out

  def stream_block(views):
    def colour(group, view_specs, u):
      return tf.stack([
          augment.augment_cropped_batch(views[group][:, v], u[:, v],
                                        mean=mean, std=std,
                                        **_colour_params(spec))
          for v, spec in enumerate(view_specs)], axis=1)

    out = {"large": colour("large", large, views["u"][:, :len(large)]),
           "label": views["label"], "index": views["index"]}
    if small:
      out["small"] = colour("small", small, views["u"][:, len(large):])
    return out

  domain_ids = tf.constant(np.repeat(
      np.arange(num_domains, dtype=np.int32), per_domain)[lo:hi])

  def step_batch(step, *stream_batches):
    u_all = u_sal_all = None
    if memory:
      u_all = tf.random.stateless_uniform(
          [global_batch, num_views, augment.NUM_UNIFORMS],
          _seed(base, _TAG_VIEWS, step))
      if memory_masks:
        u_sal_all = tf.random.stateless_uniform(
            [global_batch, len(large), augment.NUM_SALIENCY_UNIFORMS],
            _seed(base, _TAG_SALIENCY, step))
    pieces, k = [], 0
    for kind, parts in blocks:
      if kind == "memory":
        pieces.append(memory_block(step, parts, u_all, u_sal_all))
      else:
        pieces.append(stream_block(stream_batches[k]))
        k += 1
    out = {key: tf.concat([p[key] for p in pieces], axis=0)
           if len(pieces) > 1 else pieces[0][key] for key in pieces[0]}
    out["domain"] = domain_ids
    return out

  npc = int(_get(config.data, "num_parallel_calls", -1))
  ds = tf.data.Dataset.range(start_step, _NO_END)
  if streams:
    ds = tf.data.Dataset.zip((ds, *streams))
  ds = ds.map(step_batch,
              num_parallel_calls=tf.data.AUTOTUNE if npc < 0 else max(1, npc),
              deterministic=True)
  options = tf.data.Options()
  options.deterministic = True
  ds = ds.with_options(options)
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
  return math.ceil(max(d.num_train for d in domains) / per_domain)


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


def _stream_eval_split(dom: DomainData, split: str, max_count: int | None,
                       *, size: int, mean, std, max_gb: float,
                       what: str) -> tuple[np.ndarray, np.ndarray]:
  """The first max_count examples of a streamed split, eval-transformed."""
  spec = dom.stream
  ds = sources.stream_records(spec, split, domain=dom.name)
  if max_count is not None:
    ds = ds.take(max_count)

  def prepare(rec):
    image = sources.decode_stream_image(rec["image"],
                                        image_size=spec.image_size,
                                        mode=spec.resize)
    return (augment.eval_transform(image, out_size=size, mean=mean, std=std),
            tf.cast(rec["label"], tf.int32))

  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True).batch(256).prefetch(2)
  images, labels, count = [], [], 0
  limit = max_gb * 2 ** 30
  for image_batch, label_batch in ds.as_numpy_iterator():
    count += len(image_batch)
    if count * image_batch[0].nbytes > limit:
      raise ValueError(
          f"Domain {dom.name!r}: evaluation {what} images of the streamed "
          f"split {split!r} exceed config.data.max_in_memory_gb={max_gb} as "
          f"float32 at {size}x{size}; cap them with "
          f"config.eval.max_{what}_per_domain.")
    images.append(image_batch)
    labels.append(label_batch)
  if not images:
    return (np.zeros((0, size, size, 3), np.float32),
            np.zeros((0,), np.int32))
  return np.concatenate(images), np.concatenate(labels)


def make_eval_arrays(config: Any, domains: Sequence[DomainData], *,
                     max_train: int | None = None,
                     max_test: int | None = None) -> list[dict[str, Any]]:
  """Eval-transformed arrays per domain (for linear probes and kNN).

  Images are resized to ``config.views.large.size`` (central square) and
  normalised; never augmented or masked. In-memory domains are subsampled
  class-stratified and deterministically (data seed). Streaming domains
  read the first ``max_train`` examples of their train split and the first
  ``max_test`` of their ``eval_split`` (TFDS's fixed order, class subset
  applied), decoding only those; uncapped reads that would exceed
  ``config.data.max_in_memory_gb`` as float32 raise a ValueError.

  Args:
    config: full config (``data.mean``, ``data.std``, ``views.large.size``,
      ``data.seed``, ``data.max_in_memory_gb``).
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
  max_gb = float(_get(config.data, "max_in_memory_gb", 8.0))
  out = []
  for d in domains:
    if d.is_streaming:
      train_x, train_y = _stream_eval_split(
          d, d.stream.split, max_train, size=size, mean=mean, std=std,
          max_gb=max_gb, what="train")
      test_x, test_y = _stream_eval_split(
          d, d.stream.eval_split, max_test, size=size, mean=mean, std=std,
          max_gb=max_gb, what="test")
      out.append({"name": d.name, "train_images": train_x,
                  "train_labels": train_y, "test_images": test_x,
                  "test_labels": test_y, "num_classes": int(d.num_classes)})
      continue
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
