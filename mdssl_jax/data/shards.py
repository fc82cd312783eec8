"""Input shards: each process holds 1/S of every domain.

Synopsis::

  held = shards.held_shards(S, jax.process_index(), jax.process_count())
  per_shard = {s: [shards.shard_domain(d, s, S) for d in domains]
               for s in held}
  local = [shards.merge([per_shard[s][k] for s in held])
           for k in range(len(domains))]   # this process's rows, for eval

Shard s of an in-memory domain is every index i ≡ s (mod S) of its
training split (after any ``fraction``), of its evaluation train split
and of its test split: disjoint, together the whole domain, balanced to
one example and indifferent to class-sorted files. A streaming TFDS domain
reads ``tfds.even_splits(split, S)[s]`` only. Process p of P holds the S/P
consecutive shards p·S/P … (p+1)·S/P − 1, so its rows of the global batch
(shard-major) are consecutive and the layout does not depend on P.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from mdssl_jax.data.domain import DomainData
from mdssl_jax.data.sources import tfds_streaming


def held_shards(total: int, process_index: int,
                process_count: int) -> tuple[int, ...]:
  """The input shards process `process_index` of `process_count` reads.

  Raises:
    ValueError: `total` not a positive multiple of `process_count`.
  """
  if total < 1 or total % process_count:
    raise ValueError(f"{total} input shards cannot be split over "
                     f"{process_count} processes; set data.input_shards "
                     f"to a multiple of {process_count} (or -1).")
  k = total // process_count
  return tuple(range(process_index * k, (process_index + 1) * k))


def shard_rows(n: int, shard: int, total: int) -> np.ndarray:
  """Indices i < n with i ≡ shard (mod total): [ceil((n − shard)/total)]."""
  return np.arange(shard, n, total)


def _take(x: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
  return None if x is None else x[idx]


def shard_domain(dom: DomainData, shard: int, total: int) -> DomainData:
  """Input shard `shard` of `total` of one loaded domain.

  Raises:
    ValueError: the shard would be empty (fewer examples than shards).
  """
  if total == 1:
    return dom
  if dom.is_streaming:
    spec = dataclasses.replace(dom.stream, shard=(shard, total))
    spec = dataclasses.replace(
        spec, num_train=tfds_streaming.shard_num_train(spec, dom.name))
    return dataclasses.replace(dom, stream=spec,
                               total_train=dom.global_num_train)
  tr = shard_rows(dom.num_train, shard, total)
  te = shard_rows(len(dom.test_labels), shard, total)
  if len(tr) == 0:
    raise ValueError(f"Domain {dom.name!r}: {dom.num_train} training "
                     f"examples cannot fill {total} input shards; lower "
                     "data.input_shards.")
  ev = {}
  if dom.eval_train_images is not None:
    rows = shard_rows(len(dom.eval_train_labels), shard, total)
    ev = {"eval_train_images": dom.eval_train_images[rows],
          "eval_train_labels": dom.eval_train_labels[rows]}
  return dataclasses.replace(
      dom, train_images=dom.train_images[tr],
      train_labels=dom.train_labels[tr],
      train_masks=_take(dom.train_masks, tr),
      test_images=dom.test_images[te], test_labels=dom.test_labels[te],
      total_train=dom.global_num_train, **ev)


def merge(parts: Sequence[DomainData]) -> DomainData:
  """One domain's shards held by a process, concatenated in shard order.

  Raises:
    ValueError: several shards of a streaming domain (one per process).
  """
  if len(parts) == 1:
    return parts[0]
  first = parts[0]
  if first.is_streaming:
    raise ValueError(f"Domain {first.name!r} streams from TFDS: each "
                     "process reads one input shard of it; set "
                     "data.input_shards=-1 (one per process).")
  cat = lambda key: (None if getattr(first, key) is None else
                     np.concatenate([getattr(p, key) for p in parts]))
  return dataclasses.replace(
      first, **{k: cat(k) for k in (
          "train_images", "train_labels", "train_masks", "test_images",
          "test_labels", "eval_train_images", "eval_train_labels")})


@dataclasses.dataclass(frozen=True)
class Held:
  """The input shards one process holds.

  Attributes:
    total: S, the number of input shards of the run.
    domains: shard id -> that shard of every configured domain, in order;
      the ids are consecutive (`held_shards`).
  """
  total: int
  domains: dict[int, list[DomainData]]

  @classmethod
  def split(cls, domains: Sequence[DomainData], total: int,
            held: Sequence[int]) -> "Held":
    """Cuts whole loaded domains into the `held` shards of `total`."""
    return cls(total, {s: [shard_domain(d, s, total) for d in domains]
                       for s in held})

  def merged(self) -> list[DomainData]:
    """Per domain, this process's rows (its shards concatenated)."""
    ids = sorted(self.domains)
    return [merge([self.domains[s][k] for s in ids])
            for k in range(len(self.domains[ids[0]]))]
