"""Rows of streaming TFDS domains: epochs of records, decoded and cropped.

A streaming domain's stream is epoch 0, 1, 2, … concatenated; epoch e has
a fresh shard order and shuffle buffer seeded by (config.data.seed,
domain, e), and step s takes stream positions s·N … s·N + N − 1. Each row
is decoded once and every view is cropped from the full-resolution image
(after that view's saliency masking); the colour ops then run batched in
:func:`colour_block`. View and saliency uniforms derive from (config.seed,
step, global row), so they do not depend on the process count.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from mdssl_jax.data import augment
from mdssl_jax.data.domain import DomainData
from mdssl_jax.data.pipeline import settings as settings_lib
from mdssl_jax.data.pipeline import views
from mdssl_jax.data.sources import tfds_streaming

_fold = settings_lib.fold_seed


def _records(config: Any, dom: DomainData, domain: int, start_step: int,
             per_domain: int) -> tf.data.Dataset:
  """(stream position, record) pairs from step start_step on.

  Starting at start_step skips whole epochs for free and then
  ``(start_step·N) mod n`` records of the current epoch (read and parsed,
  not decoded).
  """
  n = int(dom.stream.num_train)
  buffer = int(config.data.shuffle_buffer)
  epoch_fn, _ = tfds_streaming.stream_epoch_fn(dom.stream, domain=dom.name)
  data_base = tf.constant([int(config.data.seed), 0], tf.int64)

  def epoch(e):
    seed = _fold(data_base, settings_lib.TAG_STREAM_ORDER, domain, e)
    shuffle_seed = tf.random.stateless_uniform(
        [], _fold(seed, 1), minval=0, maxval=2 ** 62, dtype=tf.int64)
    return epoch_fn(_fold(seed, 0)).shuffle(
        buffer, seed=shuffle_seed, reshuffle_each_iteration=False)

  start = start_step * per_domain
  first_epoch, offset = divmod(start, n)
  ds = tf.data.Dataset.range(first_epoch, settings_lib.NO_END).flat_map(epoch)
  return ds.skip(offset).enumerate(start=start)


def _masked_sources(dom: DomainData, image: tf.Tensor, rec: dict,
                    u_sal: tf.Tensor, s: settings_lib.Settings) -> list:
  """One saliency-masked copy of the image per large view."""
  spec = dom.stream
  mask = tfds_streaming.decode_stream_mask(
      rec["mask"], image_size=spec.image_size, mode=spec.resize)
  with tf.control_dependencies([tf.debugging.assert_equal(
      tf.shape(mask), tf.shape(image)[:2],
      message=f"Domain {dom.name!r}: mask '{spec.mask_key}' and image "
      "sizes differ")]):
    mask = tf.identity(mask)
  # A fresh decision per large view (not Listing 1's overwrite).
  return [augment.saliency_mask_batch(
      image[None], mask[None], u_sal[v][None], prob=s.sal_prob,
      min_coverage=s.min_cov)[0] for v in range(len(s.large))]


def _crops(srcs, u_views, view_specs) -> tf.Tensor:
  return tf.stack([
      augment.random_resized_crop(src, u_views[v], out_size=vs.size,
                                  crop_area=vs.crop_area,
                                  aspect=vs.params["aspect"])
      for v, (src, vs) in enumerate(zip(srcs, view_specs))])


def _prepare_fn(dom: DomainData, domain: int, s: settings_lib.Settings,
                saliency: bool):
  """(position, record) -> the row's crops, uniforms, label and index."""
  spec = dom.stream
  large, small = s.large, s.small

  def prepare(pos, rec):
    step, row = pos // s.per_domain, pos % s.per_domain
    global_row = domain * s.per_domain + row
    u = tf.random.stateless_uniform(
        [s.num_views, augment.NUM_UNIFORMS],
        _fold(s.base, settings_lib.TAG_STREAM_VIEWS, step, global_row))
    image = tfds_streaming.decode_stream_image(
        rec["image"], image_size=spec.image_size, mode=spec.resize)
    large_src = [image] * len(large)
    if saliency:
      u_sal = tf.random.stateless_uniform(
          [len(large), augment.NUM_SALIENCY_UNIFORMS],
          _fold(s.base, settings_lib.TAG_STREAM_SALIENCY, step, global_row))
      large_src = _masked_sources(dom, image, rec, u_sal, s)
    out = {"large": _crops(large_src, u[:len(large)], large), "u": u,
           "label": tf.cast(rec["label"], tf.int32), "index": pos}
    if small:
      out["small"] = _crops([image] * len(small), u[len(large):], small)
    return out

  return prepare


def stream_views(config: Any, dom: DomainData, *, domain: int,
                 rows: tuple[int, int], start_step: int,
                 s: settings_lib.Settings) -> tf.data.Dataset:
  """Per-step cropped views of one streaming domain's rows.

  Args:
    config: full config (``seed``, ``data``).
    dom: the streaming domain.
    domain: its index d among the domains.
    rows: this process's rows [lo, hi) of the domain's s.per_domain.
    start_step: first step.
    s: step-wide settings.

  Returns:
    Dataset whose k-th element (step start_step + k) is a dict for rows
    [rows[0], rows[1]) of the domain: "large" [r, L, s, s, 3] and "small"
    [r, S, t, t, 3] float32 crops in [0, 1] (before colour ops), "u"
    [r, L + S, NUM_UNIFORMS] the views' uniforms, "label" [r] int32 and
    "index" [r] int64 stream positions.
  """
  per_domain = s.per_domain
  ds = _records(config, dom, domain, start_step, per_domain)
  lo, hi = rows
  if (lo, hi) != (0, per_domain):
    ds = ds.filter(lambda p, rec: tf.logical_and(p % per_domain >= lo,
                                                 p % per_domain < hi))
  saliency = s.saliency_on and s.has_masks[domain]
  prepare = _prepare_fn(dom, domain, s, saliency)
  ds = ds.map(settings_lib.unconverted(prepare),
              num_parallel_calls=settings_lib.parallel_calls(config),
              deterministic=True)
  return ds.batch(hi - lo, drop_remainder=True)


def colour_block(crops: dict[str, tf.Tensor],
                 s: settings_lib.Settings) -> dict[str, tf.Tensor]:
  """Colour ops on one stream batch from :func:`stream_views`.

  Returns:
    {"large" [r, L, s, s, 3], "label", "index", ["small"]}, normalised.
  """
  large, small = s.large, s.small

  def colour(group, view_specs, u):
    return tf.stack([
        augment.augment_cropped_batch(crops[group][:, v], u[:, v],
                                      mean=s.mean, std=s.std,
                                      **views.colour_params(spec))
        for v, spec in enumerate(view_specs)], axis=1)

  out = {"large": colour("large", large, crops["u"][:, :len(large)]),
         "label": crops["label"], "index": crops["index"]}
  if small:
    out["small"] = colour("small", small, crops["u"][:, len(large):])
  return out
