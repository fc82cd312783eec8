"""The training stream: per-step batches assembled from row blocks.

A step's global batch is D·N rows, N per domain in domain order. This
process's rows are cut into blocks of consecutive rows that are all in
memory (``memory.MemoryRows``) or all from one streaming domain
(``streaming.stream_views``); every step builds each block and concatenates
them in row order.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Sequence

import numpy as np
import tensorflow as tf

from mdssl_jax import cli
from mdssl_jax import config_lib
from mdssl_jax.data import shards as shards_lib
from mdssl_jax.data.domain import DomainData
from mdssl_jax.data.pipeline import memory as memory_lib
from mdssl_jax.data.pipeline import pseudo as pseudo_lib
from mdssl_jax.data.pipeline import settings as settings_lib
from mdssl_jax.data.pipeline import streaming

# (kind, parts): kind "memory" or "stream", parts [(domain, i0, i1)].
Block = tuple[str, list[tuple[int, int, int]]]


def _check_domains(domains: Sequence[DomainData]) -> None:
  """In-memory domains must be non-empty and share one image shape."""
  if not domains:
    raise ValueError("make_train_iterator needs at least one domain.")
  in_memory = [d for d in domains if not d.is_streaming]
  for d in in_memory:
    if len(d.train_images) == 0:
      raise ValueError(f"Domain {d.name!r} has no train images.")
  shapes = {d.train_images.shape[1:] for d in in_memory}
  if len(shapes) > 1:
    raise ValueError(f"All domains must share one image shape (load them "
                     f"with the same config.data.image_size), got "
                     f"{sorted(shapes)}.")


def _process_rows(num_domains: int, per_domain: int, *, start_step: int,
                  process_index: int, process_count: int) -> tuple[int, int]:
  """This process's rows [lo, hi) of the global batch."""
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
  return process_index * local, (process_index + 1) * local


def _row_blocks(domains: Sequence[DomainData], per_domain: int, lo: int,
                hi: int) -> list[Block]:
  """Rows [lo, hi) cut into all-in-memory or one-stream blocks."""
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
  return blocks


def _step_batch_fn(blocks: list[Block],
                   memory: memory_lib.MemoryRows | None,
                   s: settings_lib.Settings, domain_ids: tf.Tensor,
                   global_batch: int):
  """(step, *stream batches) -> this process's batch dict of the step."""

  def step_batch(step, *stream_batches):
    u_all = u_sal_all = None
    if memory is not None:
      u_all, u_sal_all = memory_lib.step_uniforms(step, s, global_batch,
                                                  memory.masked)
    pieces, k = [], 0
    for kind, parts in blocks:
      if kind == "memory":
        pieces.append(memory.block(step, parts, u_all, u_sal_all))
      else:
        pieces.append(streaming.colour_block(stream_batches[k], s))
        k += 1
    out = {key: tf.concat([p[key] for p in pieces], axis=0)
           if len(pieces) > 1 else pieces[0][key] for key in pieces[0]}
    out["domain"] = domain_ids
    return out

  return step_batch


def _finish(ds: tf.data.Dataset, config: Any) -> tf.data.Dataset:
  options = tf.data.Options()
  options.deterministic = True
  ds = ds.with_options(options)
  prefetch = int(config.data.prefetch)
  return ds.prefetch(prefetch) if prefetch > 0 else ds


def _pseudo_dataset(config: Any, domains: Sequence[DomainData],
                    table: pseudo_lib.Table | None, *, start_step: int,
                    process_index: int, process_count: int
                    ) -> tf.data.Dataset:
  """The pseudo-domain stream (`pipeline.pseudo`) from `start_step`."""
  streaming_names = [d.name for d in domains if d.is_streaming]
  if streaming_names:
    raise ValueError(
        f"data.domain_labels={config.data.domain_labels!r} clusters the "
        f"whole training set, which must be in memory; {streaming_names} "
        "stream from disk. Raise config.data.max_in_memory_gb (or set "
        "in_memory=True on those domains).")
  if table is None:
    raise ValueError("Pseudo-domain batches need the run's table "
                     "(pseudo_table=..., from the train state).")
  n = sum(d.num_train for d in domains)
  if table.labels.shape != (n,) or table.keep.shape != (n,):
    raise ValueError(f"The pseudo-domain table covers "
                     f"{table.labels.shape[0]} examples, the domains hold "
                     f"{n}.")
  if start_step < table.start_step:
    raise ValueError(f"start_step={start_step} lies before the table's "
                     f"round (from step {table.start_step}).")
  num_domains = config_lib.batch_domains(config)
  per_domain = int(config.data.per_domain_batch)
  lo, hi = _process_rows(num_domains, per_domain, start_step=start_step,
                         process_index=process_index,
                         process_count=process_count)
  s = settings_lib.from_config(config, domains)
  memory = memory_lib.MemoryRows(domains, s)
  fn = pseudo_lib.step_fn(memory, s, table, num_domains=num_domains, lo=lo,
                          hi=hi, ignored=config.pseudo_domains.ignored)
  ds = tf.data.Dataset.range(start_step, settings_lib.NO_END).map(
      settings_lib.unconverted(fn),
      num_parallel_calls=settings_lib.parallel_calls(config),
      deterministic=True)
  return _finish(ds, config)


def make_train_dataset(config: Any, domains: Sequence[DomainData], *,
                       start_step: int, process_index: int = 0,
                       process_count: int = 1,
                       pseudo_table: pseudo_lib.Table | None = None,
                       held: shards_lib.Held | None = None
                       ) -> tf.data.Dataset:
  """The infinite tf.data stream behind :func:`make_train_iterator`.

  Args:
    config: full config (``seed``, ``data``, ``views``, ``augment``,
      ``saliency``, ``pseudo_domains``).
    domains: loaded domains (in-memory ones sharing one image size;
      streaming ones in any mix); not read when `held` is given.
    start_step: index of the first step to produce (resume point).
    process_index: this process's index.
    process_count: number of processes sharing the global batch (rows
      [lo, hi) of the D·N layout each; only without `held`).
    pseudo_table: the pseudo-domain table in force from `start_step` on
      (needed iff config.data.domain_labels != "given"; `pipeline.pseudo`).
    held: this process's input shards (`data.shards`): each yields N/S
      rows of every domain per step, from its own seeded streams, and the
      process's batch is its shards' rows in shard order.

  Returns:
    tf.data.Dataset of per-process batch dicts (see the package docstring);
    element k is the batch of step start_step + k.
  """
  cli.hide_gpus_from_tf()  # tf.data only: keep TF off the accelerators.
  if held is not None and held.total > 1:
    return _sharded_dataset(config, held, start_step=start_step)
  _check_domains(domains)
  if config_lib.uses_pseudo_domains(config):
    return _pseudo_dataset(config, domains, pseudo_table,
                           start_step=start_step, process_index=process_index,
                           process_count=process_count)
  per_domain = int(config.data.per_domain_batch)
  lo, hi = _process_rows(len(domains), per_domain, start_step=start_step,
                         process_index=process_index,
                         process_count=process_count)
  s = settings_lib.from_config(config, domains)
  return _finish(_rows_dataset(config, domains, s, lo, hi,
                               start_step=start_step), config)


def _sharded_dataset(config: Any, held: shards_lib.Held, *,
                     start_step: int) -> tf.data.Dataset:
  """Every held shard's stream of N/S rows per domain, concatenated."""
  if config_lib.uses_pseudo_domains(config):
    raise ValueError("Pseudo-domain batches take one input shard "
                     "(data.input_shards=-1 on one host).")
  per_domain = int(config.data.per_domain_batch)
  if per_domain % held.total:
    raise ValueError(f"data.per_domain_batch={per_domain} is not divisible "
                     f"by the {held.total} input shards.")
  parts = []
  for shard, domains in sorted(held.domains.items()):
    _check_domains(domains)
    s = settings_lib.from_config(config, domains)
    s = dataclasses.replace(
        s, per_domain=per_domain // held.total,
        base=settings_lib.fold_seed(s.base, settings_lib.TAG_SHARD, shard))
    ds = _rows_dataset(config, domains, s, 0, len(domains) * s.per_domain,
                       start_step=start_step)
    # Local indices i of shard s are dataset indices i·S + s.
    parts.append(ds.map(lambda b, shard=shard: {
        **b, "index": b["index"] * held.total + shard}))
  if len(parts) == 1:
    return _finish(parts[0], config)
  ds = tf.data.Dataset.zip(tuple(parts)).map(
      lambda *bs: {k: tf.concat([b[k] for b in bs], 0) for k in bs[0]})
  return _finish(ds, config)


def _rows_dataset(config: Any, domains: Sequence[DomainData],
                  s: settings_lib.Settings, lo: int, hi: int, *,
                  start_step: int) -> tf.data.Dataset:
  """Rows [lo, hi) of the domains' D·s.per_domain layout, per step."""
  per_domain = s.per_domain
  blocks = _row_blocks(domains, per_domain, lo, hi)
  streams = [
      streaming.stream_views(config, domains[d], domain=d, rows=(i0, i1),
                             start_step=start_step, s=s)
      for kind, parts in blocks if kind == "stream" for d, i0, i1 in parts]
  memory = None
  if any(not d.is_streaming for d in domains):
    memory = memory_lib.MemoryRows(domains, s)
  domain_ids = tf.constant(np.repeat(
      np.arange(len(domains), dtype=np.int32), per_domain)[lo:hi])
  ds = tf.data.Dataset.range(start_step, settings_lib.NO_END)
  if streams:
    ds = tf.data.Dataset.zip((ds, *streams))
  step_batch = _step_batch_fn(blocks, memory, s, domain_ids,
                              len(domains) * per_domain)
  return ds.map(settings_lib.unconverted(step_batch),
                num_parallel_calls=settings_lib.parallel_calls(config),
                deterministic=True)


def make_train_iterator(config: Any, domains: Sequence[DomainData], *,
                        start_step: int, process_index: int = 0,
                        process_count: int = 1,
                        pseudo_table: pseudo_lib.Table | None = None,
                        held: shards_lib.Held | None = None
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
    pseudo_table: the pseudo-domain table (see `make_train_dataset`).
    held: this process's input shards (see `make_train_dataset`).

  Returns:
    Iterator of dicts of NumPy arrays with B = D·N / process_count rows:
    "large" [B, L, H, W, 3] float32, "small" [B, S, h, w, 3] float32 (only
    if S > 0), "domain" [B] int32, "label" [B] int32, "index" [B] int64;
    pseudo-domain batches also carry "source_domain" [B] int32 and "valid"
    [B] float32 (`pipeline.pseudo`).
  """
  return iter(make_train_dataset(
      config, domains, start_step=start_step, process_index=process_index,
      process_count=process_count, pseudo_table=pseudo_table,
      held=held).as_numpy_iterator())
