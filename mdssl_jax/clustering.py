"""k-means in JAX, robust outlier rules and the ε schedule (METHODS §2.8).

Synopsis::

  centroids, labels, inertia = kmeans(z, 2, seed=0, restarts=3, mesh=mesh)
  eps = epsilon_schedule(step, total_steps, warmup_steps=480, interval=2400)
  ignored, ratio = outlier_mask(z, centroids, eps)  # second/nearest rule
  purity(labels, domains), adjusted_rand_index(labels, domains)

MDSSL without domain labels (seed 000 §4) clusters the ℓ2-normalised
projections z of the whole training set into M pseudo-domains, drops the
samples that sit nearly equally far from two centroids, and relaxes that
filter round by round. `kmeans` expects those normalised projections
(`normalize=True` normalises for you); it runs Lloyd's algorithm from a
greedy k-means++ start, restarts in parallel (vmapped: on CPU one vmapped
call is as fast as looping over restarts when they converge together and
1.5x faster when they do not) and keeps the lowest inertia. The outlier
rules and metrics are host-side NumPy (float64) on [n, k] distances.
"""

from __future__ import annotations

import functools
import math

import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from mdssl_jax import config_lib
from mdssl_jax.sharding import DATA_AXIS

# Rows per distance block: a block's [rows, k] distances and its one-hot
# [rows, k] are the largest temporaries (never an [n, k, d] tensor).
_CHUNK_ROWS = 4096
_HIGHEST = lax.Precision.HIGHEST  # no TF32/bf16 passes in the distances

OUTLIER_RULES = config_lib.OUTLIER_RULES


def _sq_dists(x: jax.Array, c: jax.Array) -> jax.Array:
  """Squared distances [m, k] between rows x [m, d] and centroids c [k, d]."""
  cross = jnp.dot(x, c.T, precision=_HIGHEST)
  x_sq = jnp.sum(x * x, axis=-1, keepdims=True)
  c_sq = jnp.sum(c * c, axis=-1)
  return jnp.maximum(x_sq - 2.0 * cross + c_sq, 0.0)


def _pick_row(key, weights, x, rows):
  """Draws one row with probability ∝ weights, the same on any sharding.

  Gumbel-max with noise keyed by the global row index: the draw does not
  depend on how rows are split over devices or blocks.

  Args:
    key: PRNG key.
    weights: [m] non-negative local weights (0 for padding).
    x: [m, d] local rows.
    rows: [m] global row indices.

  Returns:
    The chosen row [d], identical on every device.
  """
  noise = jax.vmap(
      lambda r: jax.random.gumbel(jax.random.fold_in(key, r)))(rows)
  score = jnp.where(weights > 0, jnp.log(weights) + noise, -jnp.inf)
  i = jnp.argmax(score)
  # argmax takes the first maximum: device order = global row order.
  scores = lax.all_gather(score[i], DATA_AXIS)
  picked = lax.all_gather(x[i], DATA_AXIS)
  return picked[jnp.argmax(scores)]


def _kmeans_pp(key, x, w, rows, k):
  """Greedy k-means++ initial centroids [k, d] (sklearn's variant).

  The first centroid is uniform over the rows; each next one is the best,
  by resulting inertia, of 2 + ⌊ln k⌋ rows drawn ∝ squared distance to
  the nearest chosen centroid (Arthur & Vassilvitskii 2007, §6).
  """
  trials = 2 + int(math.log(k))
  first = _pick_row(jax.random.fold_in(key, 0), w, x, rows)
  d2 = _sq_dists(x, first[None])[:, 0]
  cents = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first)

  def body(j, carry):
    cents, d2 = carry
    keys = jax.random.split(jax.random.fold_in(key, j), trials)
    cand = jax.vmap(lambda kk: _pick_row(kk, w * d2, x, rows))(keys)
    cand_d2 = jnp.minimum(d2, _sq_dists(x, cand).T)  # [trials, m]
    best = jnp.argmin(lax.psum(jnp.sum(w * cand_d2, axis=-1), DATA_AXIS))
    return cents.at[j].set(cand[best]), cand_d2[best]

  cents, _ = lax.fori_loop(1, k, body, (cents, d2))
  return cents


def _assign_stats(xb, wb, c):
  """One assignment pass over the local blocks, reduced over devices.

  Args:
    xb: [blocks, rows, d] local rows.
    wb: [blocks, rows] weights (1 real, 0 padding).
    c: [k, d] centroids.

  Returns:
    sums [k, d], counts [k], inertia (), and the k rows farthest from their
    nearest centroid [k, d], farthest first.
  """
  k, d = c.shape

  def block(carry, inputs):
    sums, counts, inertia, far_v, far_x = carry
    x, w = inputs
    d2 = _sq_dists(x, c)
    nearest = jnp.min(d2, axis=-1)
    onehot = jax.nn.one_hot(jnp.argmin(d2, axis=-1), k) * w[:, None]
    sums = sums + jnp.dot(onehot.T, x, precision=_HIGHEST)
    counts = counts + jnp.sum(onehot, axis=0)
    inertia = inertia + jnp.sum(w * nearest)
    far_v, far_x = _top_rows(
        jnp.concatenate([far_v, jnp.where(w > 0, nearest, -jnp.inf)]),
        jnp.concatenate([far_x, x]), k)
    return (sums, counts, inertia, far_v, far_x), None

  init = (jnp.zeros((k, d)), jnp.zeros((k,)), jnp.zeros(()),
          jnp.full((k,), -jnp.inf), jnp.zeros((k, d)))
  (sums, counts, inertia, far_v, far_x), _ = lax.scan(block, init, (xb, wb))
  _, far_x = _top_rows(
      lax.all_gather(far_v, DATA_AXIS).reshape(-1),
      lax.all_gather(far_x, DATA_AXIS).reshape(-1, d), k)
  return (lax.psum(sums, DATA_AXIS), lax.psum(counts, DATA_AXIS),
          lax.psum(inertia, DATA_AXIS), far_x)


def _top_rows(values, x, k):
  """The k largest values and their rows, largest first."""
  values, idx = lax.top_k(values, k)
  return values, x[idx]


def _lloyd_step(xb, wb, c):
  """One Lloyd update of centroids c [k, d]; empty clusters are re-seeded.

  A cluster that no row chose moves to the row farthest from its nearest
  centroid, the e-th empty cluster (in index order) to the e-th farthest
  row; that row still counts in its old cluster's mean this step.
  """
  sums, counts, _, far_x = _assign_stats(xb, wb, c)
  empty = counts == 0
  rank = jnp.clip(jnp.cumsum(empty) - 1, 0, c.shape[0] - 1)
  return jnp.where(empty[:, None], far_x[rank],
                   sums / jnp.maximum(counts, 1.0)[:, None])


def _lloyd(key, xb, wb, rows, *, k, iters, tol_abs):
  """One restart: k-means++ then Lloyd; returns (centroids, inertia, iters)."""
  d = xb.shape[-1]
  c0 = _kmeans_pp(key, xb.reshape(-1, d), wb.reshape(-1), rows.reshape(-1), k)

  def cond(state):
    _, it, shift = state
    return (it < iters) & (shift > tol_abs)

  def body(state):
    c, it, _ = state
    new = _lloyd_step(xb, wb, c)
    return new, it + 1, jnp.sum((new - c) ** 2)

  c, it, _ = lax.while_loop(cond, body, (c0, jnp.int32(0), jnp.inf))
  _, _, inertia, _ = _assign_stats(xb, wb, c)
  return c, inertia, it


@functools.lru_cache(maxsize=16)
def _compiled(mesh: Mesh, k: int, restarts: int, iters: int):
  """The jitted, sharded k-means for one (mesh, k, restarts, iters)."""

  def fit(seed, xb, wb, rows, tol):
    # sklearn's tolerance: relative to the mean per-feature variance.
    n = lax.psum(jnp.sum(wb), DATA_AXIS)
    mean = lax.psum(jnp.einsum("br,brd->d", wb, xb), DATA_AXIS) / n
    var = lax.psum(
        jnp.einsum("br,brd->d", wb, (xb - mean) ** 2), DATA_AXIS) / n
    tol_abs = tol * jnp.mean(var)
    # Restart r is the single-restart run of seed + r.
    keys = jax.vmap(jax.random.key)(seed + jnp.arange(restarts))
    cents, inertias, n_iter = jax.vmap(
        functools.partial(_lloyd, k=k, iters=iters, tol_abs=tol_abs),
        in_axes=(0, None, None, None))(keys, xb, wb, rows)
    best = jnp.argmin(inertias)
    c = cents[best]
    labels = jax.vmap(lambda x: jnp.argmin(_sq_dists(x, c), axis=-1))(xb)
    return c, labels.reshape(-1).astype(jnp.int32), inertias, n_iter

  data = P(DATA_AXIS)
  # The replicated outputs come from all_gather, which the varying-axes
  # check cannot see as replicated: it is off.
  return jax.jit(jax.shard_map(
      fit, mesh=mesh, in_specs=(P(), data, data, data, P()),
      out_specs=(P(), data, P(), P()), check_vma=False))


def _fit(x, k, *, seed, restarts, iters, tol, mesh, normalize):
  """Validates, pads, shards and runs k-means; returns host arrays.

  Returns:
    centroids [k, d] float32, labels [n] int32, per-restart inertias
    [restarts] float32 and Lloyd iterations run per restart [restarts].
  """
  x = np.asarray(x, dtype=np.float32)
  if x.ndim != 2 or x.shape[0] == 0:
    raise ValueError(f"x must be a non-empty 2-D [n, d] array, got shape "
                     f"{x.shape}; flatten the projections first.")
  n, d = x.shape
  if not 1 <= k <= n:
    raise ValueError(f"k={k} must lie in [1, n={n}]: there must be at least "
                     "as many samples as clusters.")
  if restarts < 1 or iters < 1 or tol < 0:
    raise ValueError(f"need restarts >= 1, iters >= 1 and tol >= 0, got "
                     f"restarts={restarts}, iters={iters}, tol={tol}.")
  if not np.all(np.isfinite(x)):
    raise ValueError("x contains NaN or inf; check the encoder (diverged "
                     "training?) before clustering.")
  if normalize:
    x = x / np.sqrt(np.sum(x * x, axis=1, keepdims=True) + 1e-12)
  if mesh is None:
    mesh = Mesh(np.asarray(jax.devices()[:1]), (DATA_AXIS,))
  elif DATA_AXIS not in mesh.axis_names or len(mesh.axis_names) != 1:
    raise ValueError(f"mesh must be 1-D over the {DATA_AXIS!r} axis "
                     f"(sharding.make_mesh), got axes {mesh.axis_names}.")
  shards = mesh.devices.size
  # Pad to shards x blocks x rows; padding rows get weight 0.
  per_shard = math.ceil(n / shards)
  blocks = math.ceil(per_shard / _CHUNK_ROWS)
  rows = math.ceil(per_shard / blocks)
  padded = shards * blocks * rows
  xp = np.zeros((padded, d), np.float32)
  xp[:n] = x
  wp = np.zeros((padded,), np.float32)
  wp[:n] = 1.0
  sharding = NamedSharding(mesh, P(DATA_AXIS))
  put = lambda a: jax.device_put(
      a.reshape(shards * blocks, rows, *a.shape[1:]), sharding)
  fit = _compiled(mesh, int(k), int(restarts), int(iters))
  cents, labels, inertias, n_iter = fit(
      np.int32(seed), put(xp), put(wp), put(np.arange(padded, dtype=np.int32)),
      np.float32(tol))
  return (np.asarray(cents), np.asarray(labels)[:n], np.asarray(inertias),
          np.asarray(n_iter))


def kmeans(x, k: int, *, seed: int, restarts: int = 3, iters: int = 100,
           tol: float = 1e-4, mesh: Mesh | None = None,
           normalize: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
  """Lloyd's k-means from k-means++ starts, best of several restarts.

  Callers pass ℓ2-normalised projections (METHODS §2.8: z from the
  eval transform), or raw features with `normalize=True`. Each restart
  draws a greedy k-means++ start (sklearn's: each next centroid is the
  best of 2 + ⌊ln k⌋ rows drawn ∝ squared distance to the nearest chosen
  one) and runs Lloyd iterations in a `lax.while_loop`
  until the squared centroid shift Σ_j ‖c_j' − c_j‖² is at most
  tol × (mean per-feature variance of x), sklearn's rule, or `iters`
  iterations. A cluster left empty by an assignment restarts at the row
  farthest from its nearest centroid (the e-th empty one at the e-th
  farthest). The result is deterministic for a seed; restart r is the
  single-restart run with seed + r, and the lowest inertia wins (ties: the
  lowest r).

  Args:
    x: [n, d] samples (NumPy or JAX, cast to float32).
    k: number of clusters, 1 <= k <= n.
    seed: integer seed.
    restarts: independent k-means++ starts, run in parallel (vmapped).
    iters: maximum Lloyd iterations per restart.
    tol: relative centroid-shift tolerance (0: run all `iters`).
    mesh: optional 1-D device mesh over the `data` axis; rows are sharded
      over it and per-cluster sums reduce across devices (same result as
      unsharded up to float summation order).
    normalize: ℓ2-normalise the rows first.

  Returns:
    centroids [k, d] float32, labels [n] int32 (index of the nearest
    centroid), inertia = Σ_i ‖x_i − c_{labels_i}‖² as a float.
  """
  cents, labels, inertias, _ = _fit(
      x, k, seed=seed, restarts=restarts, iters=iters, tol=tol, mesh=mesh,
      normalize=normalize)
  return cents, labels, float(inertias.min())


def _sorted_sq_dists(x, centroids) -> np.ndarray:
  """Row-wise ascending squared distances [n, k], float64."""
  x = np.asarray(x, dtype=np.float64)
  c = np.asarray(centroids, dtype=np.float64)
  if x.ndim != 2 or c.ndim != 2 or x.shape[1] != c.shape[1]:
    raise ValueError(f"need x [n, d] and centroids [k, d] with the same d, "
                     f"got {x.shape} and {c.shape}.")
  if c.shape[0] < 2:
    raise ValueError("the outlier rules compare two centroids; need k >= 2, "
                     f"got {c.shape[0]}.")
  d2 = (np.sum(x * x, axis=1, keepdims=True) - 2.0 * x @ c.T
        + np.sum(c * c, axis=1))
  return np.sort(np.maximum(d2, 0.0), axis=1)


def _ratio(far: np.ndarray, near: np.ndarray) -> np.ndarray:
  """far / near with x/0 = inf (on a centroid) and 0/0 = 1 (tied)."""
  with np.errstate(divide="ignore", invalid="ignore"):
    r = far / near
  return np.where(near > 0, r, np.where(far > 0, np.inf, 1.0))


def second_to_nearest_ratio(x, centroids) -> np.ndarray:
  """ρ_i = d₍₂₎²/d₍₁₎², second-nearest over nearest squared distance.

  Args:
    x: [n, d] samples.
    centroids: [k, d], k >= 2.

  Returns:
    [n] float64 ratios >= 1 (inf for a sample on a centroid).
  """
  d2 = _sorted_sq_dists(x, centroids)
  return _ratio(d2[:, 1], d2[:, 0])


def farthest_to_nearest_ratio(x, centroids) -> np.ndarray:
  """ρ_i = max_{m,n} ‖z_i − c_m‖²/‖z_i − c_n‖², literal eq. 5 of seed 000.

  Farthest over nearest squared distance; equals the second-to-nearest
  ratio when k = 2.

  Args:
    x: [n, d] samples.
    centroids: [k, d], k >= 2.

  Returns:
    [n] float64 ratios >= 1 (inf for a sample on a centroid).
  """
  d2 = _sorted_sq_dists(x, centroids)
  return _ratio(d2[:, -1], d2[:, 0])


def outlier_mask(x, centroids, epsilon: float, *,
                 rule: str = "second_to_nearest"
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Samples the robust filter ignores: those with ρ_i <= 1 + ε (eq. 5).

  Eq. 5 keeps z_i when ρ_i > 1 + ε. `rule="second_to_nearest"` (default)
  uses ρ = d₍₂₎²/d₍₁₎², the paper's stated intent (drop points nearly
  equidistant from two centroids); `"farthest_to_nearest"` is the literal
  max/min form, which for k > 2 almost never drops anything.

  Args:
    x: [n, d] samples (the clustered projections).
    centroids: [k, d], k >= 2.
    epsilon: threshold ε >= 0.
    rule: one of OUTLIER_RULES.

  Returns:
    ignored [n] bool and the ratio ρ [n] float64 it was decided on.
  """
  if rule not in OUTLIER_RULES:
    raise ValueError(f"rule={rule!r}; choose one of {OUTLIER_RULES}.")
  if not epsilon >= 0:
    raise ValueError(f"epsilon={epsilon} must be >= 0.")
  ratio = (second_to_nearest_ratio if rule == "second_to_nearest"
           else farthest_to_nearest_ratio)(x, centroids)
  return ~(ratio > 1.0 + epsilon), ratio


def clustering_steps(total_steps: int, *, warmup_steps: int,
                     interval: int) -> list[int]:
  """Steps that re-cluster: warmup_steps + r·interval < total_steps.

  With seed 000's numbers (48 000 steps, warm-up 480, interval 2 400) these
  are 480, 2 880, …, 46 080: 20 rounds.
  """
  if not 0 <= warmup_steps < total_steps or interval < 1:
    raise ValueError(
        f"need 0 <= warmup_steps < total_steps and interval >= 1, got "
        f"warmup_steps={warmup_steps}, total_steps={total_steps}, "
        f"interval={interval}.")
  return list(range(warmup_steps, total_steps, interval))


def epsilon_schedule(step: int, total_steps: int, *, warmup_steps: int,
                     interval: int, eps0: float = 1.0,
                     eps_final: float = 1e-3) -> float:
  """Outlier threshold ε in force at `step` (METHODS §2.8 item 4).

  ε_r = eps0 · (eps_final/eps0)^(r/R) for clustering round
  r = ⌊(step − warmup_steps)/interval⌋, where R is the last round index
  (`clustering_steps`): ε0 = 1 at the first clustering, exponential decay
  per round, eps_final (1e-3) at the last round. With a single round
  (R = 0) ε stays eps0.

  Args:
    step: a training step >= warmup_steps (no clustering before).
    total_steps: training length.
    warmup_steps: steps of plain SimCLR before the first clustering.
    interval: steps between clusterings.
    eps0: ε of the first round, > 0.
    eps_final: ε of the last round, in (0, eps0].

  Returns:
    ε as a float.
  """
  last = len(clustering_steps(
      total_steps, warmup_steps=warmup_steps, interval=interval)) - 1
  if not warmup_steps <= step < total_steps:
    raise ValueError(f"step={step} must lie in [warmup_steps={warmup_steps}, "
                     f"total_steps={total_steps}): ε exists from the first "
                     "clustering on.")
  if not 0 < eps_final <= eps0:
    raise ValueError(f"need 0 < eps_final <= eps0, got eps_final={eps_final},"
                     f" eps0={eps0}.")
  if last == 0:
    return float(eps0)
  r = (step - warmup_steps) // interval
  return float(eps0 * (eps_final / eps0) ** (r / last))


def _check_pair(labels, truth) -> tuple[np.ndarray, np.ndarray]:
  labels, truth = np.asarray(labels), np.asarray(truth)
  if labels.ndim != 1 or labels.shape != truth.shape or labels.size == 0:
    raise ValueError(f"labels and truth must be non-empty 1-D arrays of the "
                     f"same length, got {labels.shape} and {truth.shape}.")
  return labels, truth


def _contingency(labels, truth) -> np.ndarray:
  """[clusters, classes] counts of samples per (label, truth) pair."""
  _, li = np.unique(labels, return_inverse=True)
  _, ti = np.unique(truth, return_inverse=True)
  table = np.zeros((li.max() + 1, ti.max() + 1), np.int64)
  np.add.at(table, (li, ti), 1)
  return table


def purity(labels, truth) -> float:
  """Fraction of samples in their cluster's majority true class.

  Args:
    labels: [n] cluster ids (any integers; filter ignored samples first).
    truth: [n] true domain ids.

  Returns:
    (1/n) Σ_clusters max_class |cluster ∩ class|, in (0, 1].
  """
  labels, truth = _check_pair(labels, truth)
  return float(_contingency(labels, truth).max(axis=1).sum() / labels.size)


def adjusted_rand_index(labels, truth) -> float:
  """Adjusted Rand index (Hubert & Arabie 1985), as sklearn computes it.

  From the pair confusion counts: ARI = 2(tp·tn − fn·fp) /
  ((tp+fn)(fn+tn) + (tp+fp)(fp+tn)), and 1 when the two partitions agree
  on every pair. Exact integer arithmetic, so large n does not overflow.

  Args:
    labels: [n] cluster ids.
    truth: [n] true ids.

  Returns:
    ARI in [-0.5, 1]; 1 for identical partitions up to relabelling.
  """
  labels, truth = _check_pair(labels, truth)
  table = _contingency(labels, truth)
  n = labels.size
  sum_sq = int((table * table).sum())
  rows_sq = int((table.sum(axis=1) ** 2).sum())
  cols_sq = int((table.sum(axis=0) ** 2).sum())
  tp = sum_sq - n
  fp = rows_sq - sum_sq
  fn = cols_sq - sum_sq
  tn = n * n - fp - fn - sum_sq
  if fn == 0 and fp == 0:
    return 1.0
  return float(2 * (tp * tn - fn * fp)
               / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)))
