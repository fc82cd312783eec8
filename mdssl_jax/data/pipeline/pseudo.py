"""Pseudo-domain batches: N rows per k-means cluster of the pooled mixture.

MDSSL without domain labels (seed 000 §4, METHODS §2.8) pools every
configured (in-memory) domain into one unlabelled mixture; pooled row
g = offset_d + i is example i of domain d. A :class:`Table` assigns each
pooled row a pseudo-domain and a keep flag (the robust filter); it is part
of the training checkpoint and changes only at clustering steps.

* Warm-up (``table.round == -1``): every step draws M·N rows from the whole
  pool, all in pseudo-domain 0 (plain SimCLR on mixed batches).
* Round r (from step ``table.start_step``): every step draws N rows of each
  pseudo-domain m in order, "dataset batches" (paper A.5). Pseudo-domain
  m's members are its rows (kept rows only under ``ignored="drop"``); they
  are visited in stateless epoch permutations seeded by (config.seed,
  round, m, epoch), from the round's first step on, so a cluster smaller
  than N is simply cycled within a step (sampling with replacement, as
  METHODS §2.8 item 6 allows).

A step's batch is a pure function of (config.seed, step, table): resuming
at any step of a round with the checkpointed table gives exactly the
batches an uninterrupted run sees. Views and their randomness are those of
the in-memory pipeline (``memory.MemoryRows``); row r of the global batch
uses the view uniforms of row r.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from absl import logging
import numpy as np
import tensorflow as tf

from mdssl_jax.data.pipeline import memory as memory_lib
from mdssl_jax.data.pipeline import settings as settings_lib


@dataclasses.dataclass(frozen=True)
class Table:
  """The pseudo-domain of every pooled training example.

  Attributes:
    labels: [n] int32 pseudo-domain of each pooled row (ignored while
      warming up).
    keep: [n] bool, False where the robust filter removed the row.
    round: clustering round in force (-1: warm-up, before any clustering).
    start_step: the round's first step (0 while warming up).
  """
  labels: np.ndarray
  keep: np.ndarray
  round: int
  start_step: int

  @classmethod
  def warmup(cls, n: int) -> "Table":
    """The table before the first clustering."""
    return cls(np.zeros(n, np.int32), np.ones(n, bool), -1, 0)


def members(table: Table, num_domains: int, ignored: str
            ) -> list[np.ndarray]:
  """Sorted pooled rows drawn for each pseudo-domain of a clustered table.

  Under ``ignored="drop"`` only kept rows are drawn. A pseudo-domain whose
  rows were all filtered out draws from all its rows, and an empty one from
  the whole kept pool (both logged as warnings), so that every step keeps
  the M·N layout.
  """
  out = []
  for m in range(num_domains):
    rows = np.flatnonzero(table.labels == m)
    if ignored == "drop":
      kept = rows[table.keep[rows]]
      if len(kept) == 0 and len(rows):
        logging.warning("Pseudo-domain %d: all %d rows were filtered out; "
                        "drawing from all of them this round.", m, len(rows))
      rows = kept if len(kept) else rows
    if len(rows) == 0:
      logging.warning("Pseudo-domain %d is empty; drawing its rows from the "
                      "whole kept pool this round.", m)
      rows = np.flatnonzero(table.keep)
      rows = rows if len(rows) else np.arange(len(table.labels))
    out.append(rows.astype(np.int64))
  return out


def step_fn(memory: memory_lib.MemoryRows, s: settings_lib.Settings,
            table: Table, *, num_domains: int, lo: int, hi: int,
            ignored: str):
  """step -> rows [lo, hi) of the step's global batch under `table`.

  The batch dict has "large", ["small"], "label", "index" (pooled row),
  "domain" (pseudo-domain, int32), "source_domain" (configured domain the
  row came from, int32) and "valid" (float32: 0 for rows the robust filter
  removed under ``ignored="mask"``, else 1).
  """
  per_domain = s.per_domain
  global_batch = num_domains * per_domain
  if table.round < 0:
    pools = [np.arange(memory.num_pooled, dtype=np.int64)]
    counts = [global_batch]
    domain_ids = np.zeros(global_batch, np.int32)
  else:
    pools = members(table, num_domains, ignored)
    counts = [per_domain] * num_domains
    domain_ids = np.repeat(np.arange(num_domains, dtype=np.int32),
                           per_domain)
  pool_consts = [tf.constant(p) for p in pools]
  source = tf.constant(memory.pooled_domains())
  valid = table.keep if ignored == "mask" and table.round >= 0 else None
  valid = None if valid is None else tf.constant(valid.astype(np.float32))
  base = settings_lib.fold_seed(s.base, settings_lib.TAG_PSEUDO,
                                table.round + 1)
  domain_ids = tf.constant(domain_ids[lo:hi])
  start = np.int64(table.start_step)

  def step_batch(step: tf.Tensor) -> dict[str, Any]:
    rel = step - start
    rows = tf.concat([
        tf.gather(pool, memory_lib.domain_indices(rel, base, m, len(p), c))
        for m, (pool, p, c) in enumerate(zip(pool_consts, pools, counts))],
                     axis=0)[lo:hi]
    u_all, u_sal_all = memory_lib.step_uniforms(step, s, global_batch,
                                                memory.masked)
    sources = tf.gather(source, rows)
    out = memory.gather(
        rows, u_all[lo:hi], None if u_sal_all is None else u_sal_all[lo:hi],
        memory.row_probs(sources) if memory.masked else None)
    out.update(index=rows, domain=domain_ids, source_domain=sources,
               valid=(tf.ones([hi - lo], tf.float32) if valid is None
                      else tf.gather(valid, rows)))
    return out

  return step_batch
