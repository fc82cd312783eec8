"""MDSSL without domain labels: the clustering rounds (seed 000 §4).

METHODS §2.8, with `config.data.domain_labels` "kmeans" or
"robust_kmeans" and the keys of `config.pseudo_domains`:

1. Warm-up: the first `warmup_steps` steps are plain SimCLR on mixed
   batches (`methods.mdssl.MDSSL.lambdas`, `data.pipeline.pseudo`).
2. At steps warmup + r·every_steps (r = 0, 1, …; `schedule`) the whole
   pooled training set is embedded under the eval transform with the
   current encoder (`MDSSL.cluster_embeddings`) and clustered into M
   pseudo-domains with `clustering.kmeans` over the device mesh.
3. "robust_kmeans" ignores rows with ratio ≤ 1 + ε_r
   (`clustering.outlier_mask`), ε decaying from eps0 to eps_final
   (`clustering.epsilon_schedule`).
4. The table (pooled row → pseudo-domain, keep flag, round) lives in
   `TrainState.buffers[PSEUDO_KEY]`, so it is checkpointed with the state
   and a resume anywhere in a round draws exactly the same batches.

Cluster ids are put in a canonical order (by each cluster's smallest
pooled row), so a permutation of k-means' labels changes nothing at all.
Each round appends a record to `<workdir>/clustering.jsonl` (and to
metrics.jsonl and TensorBoard as "clustering/..." scalars) and redraws
`<workdir>/clustering_confusion.png`; with several configured domains
the record scores the clusters against them (purity, adjusted Rand index).
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import os
import time
from typing import Any, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mdssl_jax import atomic_file
from mdssl_jax import clustering
from mdssl_jax import config_lib
from mdssl_jax import progress
from mdssl_jax import sharding as sharding_lib
from mdssl_jax.data import augment
from mdssl_jax.data.domain import DomainData
from mdssl_jax.data.pipeline import pseudo as pseudo_lib
from mdssl_jax.evaluation.features import FeatureExtractor

PSEUDO_KEY = "pseudo_domains"
LOG_NAME = "clustering.jsonl"
CONFUSION_NAME = "clustering_confusion.png"
_EMBED_CHUNK = 4096  # Images eval-transformed per host chunk.


def init_buffers(num_examples: int) -> dict[str, jax.Array]:
  """The warm-up table as state buffers (labels, keep, round)."""
  return {"labels": jnp.zeros((num_examples,), jnp.int32),
          "keep": jnp.ones((num_examples,), jnp.int32),
          "round": jnp.full((), -1, jnp.int32)}


def schedule(config: ml_collections.ConfigDict, total_steps: int
             ) -> list[int]:
  """Steps that cluster: warmup_steps + r·every_steps < total_steps.

  Raises:
    config_lib.ConfigError: the warm-up does not end before training does.
  """
  pd = config.pseudo_domains
  if not pd.warmup_steps < total_steps:
    raise config_lib.ConfigError(
        f"pseudo_domains.warmup_steps={pd.warmup_steps} must be below the "
        f"run's {total_steps} steps, or no clustering ever happens; lower "
        "it or train longer.")
  return clustering.clustering_steps(total_steps,
                                     warmup_steps=pd.warmup_steps,
                                     interval=pd.every_steps)


def round_at(steps: Sequence[int], step: int) -> int:
  """The round in force for the step after `step` steps (-1: warm-up)."""
  return bisect.bisect_right(steps, step) - 1


def segments(steps: Sequence[int], start: int, end: int
             ) -> list[tuple[int, int]]:
  """[start, end) cut at the clustering steps inside it."""
  cuts = [start] + [s for s in steps if start < s < end] + [end]
  return [(a, b) for a, b in zip(cuts, cuts[1:]) if a < b]


def table(buffers: dict[str, Any], steps: Sequence[int]) -> pseudo_lib.Table:
  """The host-side table of a state's `buffers[PSEUDO_KEY]`."""
  host = jax.device_get(buffers[PSEUDO_KEY])
  r = int(host["round"])
  return pseudo_lib.Table(
      labels=np.asarray(host["labels"], np.int32),
      keep=np.asarray(host["keep"]).astype(bool), round=r,
      start_step=steps[r] if r >= 0 else 0)


def canonical_order(labels: np.ndarray, k: int) -> np.ndarray:
  """[k] old id of each new id: clusters sorted by their smallest member
  row (empty clusters last)."""
  labels = np.asarray(labels)
  first = np.full(k, len(labels), np.int64)
  np.minimum.at(first, labels, np.arange(len(labels)))
  return np.argsort(first, kind="stable")


def canonical_labels(labels: np.ndarray, k: int) -> np.ndarray:
  """Relabels clusters 0…k−1 in `canonical_order`.

  A function of the partition only: any permutation of `labels` maps to
  the same output.
  """
  new_of_old = np.empty(k, np.int32)
  new_of_old[canonical_order(labels, k)] = np.arange(k, dtype=np.int32)
  return new_of_old[np.asarray(labels)]


def embed_pool(extractor: FeatureExtractor, params: Any, batch_stats: Any,
               domains: Sequence[DomainData], config: ml_collections.ConfigDict
               ) -> np.ndarray:
  """Embeddings [n, d] of every pooled train image (eval transform)."""
  size = config.views.large.size
  out = []
  for d in domains:
    for i in range(0, d.num_train, _EMBED_CHUNK):
      images = augment.eval_transform(
          d.train_images[i:i + _EMBED_CHUNK], out_size=size,
          mean=config.data.mean, std=config.data.std).numpy()
      out.append(extractor(params, batch_stats, images))
  return np.concatenate(out).astype(np.float32)


def _seed(config: ml_collections.ConfigDict, r: int) -> int:
  return int(np.random.SeedSequence([int(config.seed), 13, r])
             .generate_state(1)[0] >> 1)


@dataclasses.dataclass
class Round:
  """One clustering round's outcome: the new table buffers and its log."""
  buffers: dict[str, np.ndarray]
  record: dict[str, Any]
  confusion: np.ndarray  # [M + 1, D]: per pseudo-domain (last: ignored).


def cluster(config: ml_collections.ConfigDict, z: np.ndarray, *, r: int,
            step: int, total_steps: int, truth: np.ndarray,
            mesh: jax.sharding.Mesh | None = None) -> Round:
  """Clusters embeddings `z` [n, d] for round `r` (at `step`).

  Args:
    config: the run config.
    z: the pooled embeddings (`embed_pool`).
    r: the round index.
    step: the round's first step.
    total_steps: the run's length (ε schedule).
    truth: [n] configured domain of each pooled row (scores only).
    mesh: shard k-means over this mesh.

  Returns:
    The round (table buffers as NumPy, log record, confusion counts).
  """
  pd = config.pseudo_domains
  m = config_lib.batch_domains(config)
  t0 = time.time()
  centroids, labels, inertia = clustering.kmeans(
      z, m, seed=_seed(config, r), restarts=pd.restarts, iters=pd.iters,
      tol=pd.tol, mesh=mesh)
  canon = canonical_labels(labels, m)
  centroids = centroids[canonical_order(labels, m)]
  epsilon = None
  keep = np.ones(len(z), bool)
  if config.data.domain_labels == "robust_kmeans":
    epsilon = clustering.epsilon_schedule(
        step, total_steps, warmup_steps=pd.warmup_steps,
        interval=pd.every_steps, eps0=pd.eps0, eps_final=pd.eps_final)
    outlier, _ = clustering.outlier_mask(z, centroids, epsilon,
                                         rule=pd.outlier_rule)
    keep = ~outlier
  sizes = np.bincount(canon, minlength=m)
  kept_sizes = np.bincount(canon[keep], minlength=m)
  num_true = int(truth.max()) + 1
  confusion = np.zeros((m + 1, num_true), np.int64)
  np.add.at(confusion, (np.where(keep, canon, m), truth), 1)
  record = {
      "step": int(step), "round": int(r),
      "epsilon": epsilon, "ignored_fraction": float(1.0 - keep.mean()),
      "cluster_sizes": sizes.tolist(), "kept_sizes": kept_sizes.tolist(),
      "inertia": float(inertia), "seconds_kmeans": round(time.time() - t0, 3),
  }
  if num_true > 1:
    record.update(
        purity=clustering.purity(canon, truth),
        ari=clustering.adjusted_rand_index(canon, truth))
    if keep.any():
      record.update(
          purity_kept=clustering.purity(canon[keep], truth[keep]),
          ari_kept=clustering.adjusted_rand_index(canon[keep], truth[keep]))
  buffers = {"labels": canon.astype(np.int32),
             "keep": keep.astype(np.int32), "round": np.int32(r)}
  return Round(buffers, record, confusion)


def scalars(record: dict[str, Any]) -> dict[str, float]:
  """A round's record as "clustering/..." scalars (TensorBoard, jsonl)."""
  out = {f"clustering/{k}": float(v) for k, v in record.items()
         if k != "step" and isinstance(v, (int, float)) and v is not None}
  sizes = record["kept_sizes"]
  out["clustering/min_kept_size"] = float(min(sizes))
  return out


def read_log(workdir: str) -> list[dict[str, Any]]:
  """The records of `<workdir>/clustering.jsonl` (damaged lines skipped)."""
  return progress.read_jsonl(os.path.join(workdir, LOG_NAME),
                             required=("round",))


def keep_log_until(workdir: str, r: int) -> None:
  """Drops records of rounds after `r` (a resume redoes them)."""
  path = os.path.join(workdir, LOG_NAME)
  if not os.path.exists(path):
    return
  kept = [x for x in read_log(workdir) if x["round"] <= r]
  with atomic_file.atomic_open(path) as f:
    f.writelines(json.dumps(x) + "\n" for x in kept)


def append_log(workdir: str, record: dict[str, Any]) -> None:
  with open(os.path.join(workdir, LOG_NAME), "a") as f:
    f.write(json.dumps(record) + "\n")


def save_confusion(path: str, confusion: np.ndarray,
                   domain_names: Sequence[str], record: dict[str, Any]
                   ) -> str:
  """Cluster-vs-domain confusion (fraction of each domain) as a PNG."""
  from mdssl_jax.evaluation import plots  # pylint: disable=g-import-not-at-top
  totals = np.maximum(confusion.sum(axis=0, keepdims=True), 1)
  m = confusion.shape[0] - 1
  rows = [f"pseudo {j} ({confusion[j].sum()})" for j in range(m)]
  rows.append(f"ignored ({confusion[m].sum()})")
  score = ""
  if "ari" in record:
    score = f", ARI {record['ari']:.3f}, purity {record['purity']:.3f}"
  return plots.heatmap(
      confusion / totals, path, rows=rows, cols=list(domain_names),
      title=f"round {record['round']} (step {record['step']}){score}",
      vmin=0.0, vmax=1.0)


class Rounds:
  """The clustering rounds of one training run (host side).

  Synopsis (what `train._train_and_evaluate` does)::

    rounds = Rounds(config, setup.method, setup.pseudo_steps, domains,
                    mesh, total_steps=total, workdir=workdir)
    rounds.resume(state, jsonl)              # drop logs of undone rounds
    for a, b in segments(setup.pseudo_steps, start, end):
      state = rounds.maybe_cluster(state, a, writer=writer, jsonl=jsonl)
      it = pipeline.make_train_iterator(..., pseudo_table=rounds.table(state))
      state = train_loop(..., end_step=b)
  """

  def __init__(self, config: ml_collections.ConfigDict, method: Any,
               steps: Sequence[int], domains: Sequence[DomainData],
               mesh: jax.sharding.Mesh, *, total_steps: int,
               workdir: str | None):
    """Compiles the embedding function once.

    Args:
      config: the run config.
      method: the MDSSL method (`cluster_embeddings`).
      steps: the clustering steps (`schedule`).
      domains: the run's (in-memory) domains, pooled in order.
      mesh: the training mesh (embeddings and k-means are split over it).
      total_steps: the run's length.
      workdir: where logs go; None on processes that write no files.

    Raises:
      ValueError: more than one process (the embedding pass needs every
        device of the mesh to be addressable).
    """
    if jax.process_count() > 1:
      raise ValueError(
          "Pseudo-domain clustering runs in a single process (the "
          "embedding pass gathers the whole training set on one host); "
          "train with data.domain_labels=given on several hosts.")
    self._config = config
    self._steps = list(steps)
    self._domains = list(domains)
    self._mesh = mesh
    self._total = total_steps
    self._workdir = workdir
    self._replicated = sharding_lib.replicated(mesh)
    self._extractor = FeatureExtractor(
        method.cluster_embeddings,
        batch_size=config.eval.feature_batch_size,
        sharding=sharding_lib.batch_sharding(mesh))
    self.truth = np.repeat(np.arange(len(domains), dtype=np.int32),
                           [d.num_train for d in domains])

  def table(self, state: Any) -> pseudo_lib.Table:
    """The table in force in `state`."""
    return table(state.buffers, self._steps)

  def resume(self, state: Any, jsonl: Any | None) -> None:
    """Drops logged rounds that `state` has not applied (a resume redoes
    them): from clustering.jsonl and metrics.jsonl."""
    r = int(jax.device_get(state.buffers[PSEUDO_KEY]["round"]))
    if self._workdir is not None:
      keep_log_until(self._workdir, r)
    if jsonl is not None:
      jsonl.keep(lambda x: x.get("clustering/round", -1) <= r)

  def maybe_cluster(self, state: Any, step: int, *, writer: Any,
                    jsonl: Any | None) -> Any:
    """Runs the round due at `step` unless `state` has it already.

    Returns:
      `state` with the round's table (unchanged when nothing was due).
    """
    r = round_at(self._steps, step)
    done = int(jax.device_get(state.buffers[PSEUDO_KEY]["round"]))
    if r < 0 or done >= r:
      return state
    t0 = time.time()
    z = embed_pool(self._extractor, state.params, state.batch_stats,
                   self._domains, self._config)
    seconds_embed = time.time() - t0
    result = cluster(self._config, z, r=r, step=step,
                     total_steps=self._total, truth=self.truth,
                     mesh=self._mesh)
    record = {**result.record, "seconds_embed": round(seconds_embed, 3)}
    logging.info("Clustering round %d at step %d: %s", r, step, record)
    eps = record["epsilon"]
    print(f"clustering round {r} at step {step}: ε="
          f"{'-' if eps is None else f'{eps:.3g}'} ignored "
          f"{100 * record['ignored_fraction']:.1f}% sizes "
          f"{record['kept_sizes']}"
          + (f" ARI {record['ari']:.3f}" if "ari" in record else ""),
          flush=True)
    new = jax.device_put({k: jnp.asarray(v) for k, v in
                          result.buffers.items()}, self._replicated)
    writer.write_scalars(step, scalars(record))
    if jsonl is not None:
      jsonl.write({"step": step, **scalars(record)})
    if self._workdir is not None:
      append_log(self._workdir, record)
      save_confusion(os.path.join(self._workdir, CONFUSION_NAME),
                     result.confusion, [d.name for d in self._domains],
                     record)
    return state.replace(buffers={**state.buffers, PSEUDO_KEY: new})
