"""Representation metrics on frozen features (pure NumPy, float64 inside).

Synopsis::

  from mdssl_jax import evaluation
  evaluation.linear_cka(x, y)            # x [n, p1], y [n, p2] -> [0, 1]
  evaluation.frechet_distance(f1, f2)    # f1 [n1, p], f2 [n2, p] -> FD²
  evaluation.rankme(z)                   # z [n, d] -> effective rank
  evaluation.alignment(z1, z2)           # positive pairs, Wang & Isola
  evaluation.uniformity(z)               # log E exp(-2‖zi - zj‖²)

Definitions: METHODS §6.5 (FD), §6.6 (CKA); Garrido et al. 2023 (RankMe);
Wang & Isola 2020 (alignment, uniformity); RELICv2 G.3 (class distance
ratio); MDSSL Fig. A.1/A.2 (class-averaged cosine similarity).
Every function accepts NumPy or JAX arrays.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
import warnings

import numpy as np
from scipy.spatial import distance
from scipy.special import logsumexp

# Garrido et al. 2023, eq. 1.
_RANKME_EPS = 1e-7
_CKA_FORMS = ("auto", "feature", "gram")


def _matrix(name: str, x, min_rows: int = 2) -> np.ndarray:
  """x as a finite float64 [n, p] array with n >= min_rows."""
  x = np.asarray(x, dtype=np.float64)
  if x.ndim != 2:
    raise ValueError(
        f"{name} must be a 2-D [n, features] array, got shape {x.shape}; "
        "pool or flatten per-image tensors first.")
  if x.shape[0] < min_rows or x.shape[1] < 1:
    raise ValueError(
        f"{name} has shape {x.shape}; need at least {min_rows} rows and one "
        "feature column.")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} contains NaN or inf values.")
  return x


def _unit_rows(name: str, z: np.ndarray) -> np.ndarray:
  norms = np.linalg.norm(z, axis=1, keepdims=True)
  if np.any(norms == 0):
    raise ValueError(
        f"{name} has all-zero rows, which cannot be l2-normalised; drop "
        "them first.")
  return z / norms


def _labels(name: str, labels, n: int) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.shape != (n,):
    raise ValueError(
        f"{name} must have shape [{n}] (one per feature row), got "
        f"{labels.shape}.")
  return labels


def linear_cka(x, y, form: str = "auto") -> float:
  """Linear CKA of two representations of the same n images (§6.6).

  CKA = ‖Yᵀ X‖_F² / (‖Xᵀ X‖_F · ‖Yᵀ Y‖_F) on column-centred X and Y,
  equal to the Gram form ⟨K, L⟩_F / (‖K‖_F ‖L‖_F) with K = XXᵀ, L = YYᵀ.

  Args:
    x: [n, p1] features.
    y: [n, p2] features of the same n images, row i with row i of x.
    form: "feature" (cost n·(p1 + p2)²), "gram" (cost n²·(p1 + p2)), or
      "auto": the cheaper of the two (feature when p1 + p2 <= n).

  Returns:
    CKA in [0, 1] (Python float).

  Raises:
    ValueError: bad shapes, fewer than 2 rows, different n, an unknown
      form, or a constant representation (CKA is undefined).
  """
  x = _matrix("x", x)
  y = _matrix("y", y)
  if x.shape[0] != y.shape[0]:
    raise ValueError(
        f"x and y must describe the same images: got {x.shape[0]} and "
        f"{y.shape[0]} rows.")
  if form not in _CKA_FORMS:
    raise ValueError(f"form must be one of {_CKA_FORMS}, got {form!r}.")
  x = x - x.mean(axis=0)
  y = y - y.mean(axis=0)
  n, p = x.shape[0], x.shape[1] + y.shape[1]
  if form == "feature" or (form == "auto" and p <= n):
    cross = np.sum(np.square(y.T @ x))
    den = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
  else:
    k, l = x @ x.T, y @ y.T
    cross = np.sum(k * l)
    den = np.linalg.norm(k) * np.linalg.norm(l)
  if den == 0:
    raise ValueError(
        "CKA is undefined for a constant representation (all rows equal "
        "in x or y).")
  return float(cross / den)


def _unit_gram(name: str, x) -> np.ndarray:
  """The centred Gram matrix of x scaled to unit Frobenius norm, [n, n]."""
  x = _matrix(name, x)
  x = x - x.mean(axis=0)
  k = x @ x.T
  norm = np.linalg.norm(k)
  if norm == 0:
    raise ValueError(f"{name} is a constant representation; CKA is "
                     "undefined.")
  return k / norm


def cka_matrix(reps_a: Sequence, reps_b: Sequence | None = None
               ) -> np.ndarray:
  """Linear CKA of every pair of representations of the same n images.

  Each representation's centred Gram matrix is formed once (n × n, so
  keep n to a few thousand), which makes the block × block matrix cost
  one Gram per block instead of one per pair.

  Args:
    reps_a: A representations, each [n, p_i] (p_i may differ).
    reps_b: B representations of the same images; None: reps_a (the
      within-encoder matrix, symmetric with unit diagonal).

  Returns:
    [A, B] float64 matrix, entry (i, j) = linear_cka(reps_a[i], reps_b[j]).

  Raises:
    ValueError: empty lists, bad shapes, or different n.
  """
  grams_a = [_unit_gram(f"reps_a[{i}]", r) for i, r in enumerate(reps_a)]
  grams_b = grams_a if reps_b is None else [
      _unit_gram(f"reps_b[{i}]", r) for i, r in enumerate(reps_b)]
  if not grams_a or not grams_b:
    raise ValueError("cka_matrix needs at least one representation per side.")
  sizes = {g.shape[0] for g in grams_a + grams_b}
  if len(sizes) != 1:
    raise ValueError(
        f"all representations must describe the same images; got row counts "
        f"{sorted(sizes)}.")
  flat_a = np.stack([g.ravel() for g in grams_a])
  flat_b = flat_a if reps_b is None else np.stack([g.ravel()
                                                   for g in grams_b])
  return np.clip(flat_a @ flat_b.T, 0.0, 1.0)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh(a)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(x, y) -> float:
  """Fréchet distance FD² between two feature sets (METHODS §6.5).

  FD² = ‖μ1 − μ2‖² + Tr Σ1 + Tr Σ2 − 2 Tr (Σ1^½ Σ2 Σ1^½)^½ with unbiased
  covariances, all square roots by `eigh` with eigenvalues clamped at 0
  (no complex parts, unlike sqrtm(Σ1 Σ2)). The squared value is returned,
  as FID reports it. The estimate is biased in n: compare at equal n, and
  with n > p (a warning is issued otherwise).

  Args:
    x: [n1, p] features of the first dataset.
    y: [n2, p] features of the second.

  Returns:
    FD² >= 0 (Python float).

  Raises:
    ValueError: bad shapes, fewer than 2 rows, or different p.
  """
  x = _matrix("x", x)
  y = _matrix("y", y)
  if x.shape[1] != y.shape[1]:
    raise ValueError(
        f"x and y must have the same feature width: got {x.shape[1]} and "
        f"{y.shape[1]}.")
  p = x.shape[1]
  if min(x.shape[0], y.shape[0]) <= p:
    warnings.warn(
        f"frechet_distance with {x.shape[0]} and {y.shape[0]} rows for "
        f"{p} features: the covariances are rank-deficient (n <= p), so "
        "the estimate is strongly biased; use more rows than features.",
        stacklevel=2)
  s1 = np.atleast_2d(np.cov(x, rowvar=False))
  s2 = np.atleast_2d(np.cov(y, rowvar=False))
  r1 = _sqrt_psd(s1)
  m = r1 @ s2 @ r1
  trace_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2),
                                      0.0, None)))
  diff = x.mean(axis=0) - y.mean(axis=0)
  fd = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt
  return float(max(fd, 0.0))


def rankme(z) -> float:
  """RankMe effective rank (Garrido et al. 2023) of an embedding matrix.

  p_k = σ_k / ‖σ‖₁ + ε (ε = 1e-7) over the singular values σ of z;
  RankMe = exp(−Σ_k p_k log p_k). No centring, as in the paper.

  Args:
    z: [n, d] embeddings.

  Returns:
    A value in [1, min(n, d)] (Python float): ≈ k for rank k with equal
    singular values, ≈ 1 for a collapsed (rank-1) embedding.

  Raises:
    ValueError: bad shape, fewer than 2 rows, or an all-zero z.
  """
  z = _matrix("z", z)
  s = np.linalg.svd(z, compute_uv=False)
  total = s.sum()
  if total == 0:
    raise ValueError("rankme of an all-zero matrix is undefined.")
  p = s / total + _RANKME_EPS
  return float(np.exp(-np.sum(p * np.log(p))))


def alignment(z1, z2, alpha: float = 2.0) -> float:
  """Alignment E‖f(x) − f(x⁺)‖₂^α of positive pairs (Wang & Isola 2020).

  Args:
    z1: [n, d] embeddings of one view.
    z2: [n, d] embeddings of the other view, row i paired with z1's row i.
      Rows are l2-normalised first.
    alpha: the exponent (the paper's default 2).

  Returns:
    Mean in [0, 2^α] (Python float); 0 for identical pairs. Lower is
    better aligned.

  Raises:
    ValueError: bad or different shapes, fewer than 1 row, zero rows.
  """
  z1 = _unit_rows("z1", _matrix("z1", z1, min_rows=1))
  z2 = _unit_rows("z2", _matrix("z2", z2, min_rows=1))
  if z1.shape != z2.shape:
    raise ValueError(
        f"z1 and z2 must be paired row by row with the same width: got "
        f"{z1.shape} and {z2.shape}.")
  return float(np.mean(np.linalg.norm(z1 - z2, axis=1) ** alpha))


def uniformity(z, t: float = 2.0) -> float:
  """Uniformity log E_{i≠j} exp(−t‖zi − zj‖²) (Wang & Isola 2020).

  Args:
    z: [n, d] embeddings (n >= 2); rows are l2-normalised first.
    t: the temperature (the paper's default 2).

  Returns:
    A value in [−4t, 0] (Python float): 0 for a collapsed set, more
    negative for points spread more uniformly on the sphere.

  Raises:
    ValueError: bad shape, fewer than 2 rows, all-zero rows.
  """
  z = _unit_rows("z", _matrix("z", z))
  sq = distance.pdist(z, "sqeuclidean")  # The n(n−1)/2 pairs i < j.
  return float(logsumexp(-t * sq) - np.log(sq.size))


def class_distance_ratios(features, labels) -> tuple[np.ndarray, np.ndarray]:
  """Per-class between/within ℓ2-distance ratios (RELICv2 App. G.3).

  For class c: the mean distance from c's points to the points of every
  other class, divided by the mean distance between two distinct points
  of c. Larger means tighter, better separated classes (RELICv2 Fig. 7
  plots their distribution).

  Args:
    features: [n, p] features.
    labels: [n] class labels (any sortable values).

  Returns:
    (classes [C], ratios [C] float64), classes sorted.

  Raises:
    ValueError: bad shapes, fewer than 2 classes, a class with fewer than
      2 points, or a class whose points all coincide.
  """
  x = _matrix("features", features)
  labels = _labels("labels", labels, x.shape[0])
  classes, counts = np.unique(labels, return_counts=True)
  if classes.size < 2:
    raise ValueError(
        f"class_distance_ratios needs at least 2 classes, got {classes.size}.")
  if counts.min() < 2:
    raise ValueError(
        f"every class needs at least 2 points for a within-class distance; "
        f"class {classes[counts.argmin()]!r} has {counts.min()}.")
  dist = distance.squareform(distance.pdist(x))
  ratios = np.empty(classes.size)
  for i, c in enumerate(classes):
    inside = labels == c
    k = int(inside.sum())
    within = dist[np.ix_(inside, inside)].sum() / (k * (k - 1))
    if within == 0:
      raise ValueError(
          f"class {c!r} has all its points equal; the ratio is undefined.")
    ratios[i] = dist[np.ix_(inside, ~inside)].mean() / within
  return classes, ratios


def class_distance_ratio(features, labels) -> float:
  """Mean over classes of `class_distance_ratios` (RELICv2 App. G.3).

  Args:
    features: [n, p] features.
    labels: [n] class labels.

  Returns:
    The mean per-class between/within distance ratio (Python float).
  """
  return float(np.mean(class_distance_ratios(features, labels)[1]))


def class_cosine_matrix(features, labels, domains
                        ) -> tuple[np.ndarray, list[tuple[Hashable,
                                                          Hashable]]]:
  """Cosine similarity of class-averaged features across domains.

  The MDSSL Fig. A.1/A.2 heatmap: average the features of every
  (domain, class) group, then take the cosine similarity of every pair of
  group means.

  Args:
    features: [n, p] features.
    labels: [n] class labels.
    domains: [n] domain of each row (names or ids).

  Returns:
    (matrix [G, G] float64 in [−1, 1], groups): groups is the list of the
    G (domain, label) pairs present, sorted by domain then label; row and
    column g belong to groups[g].

  Raises:
    ValueError: bad shapes or a group whose mean feature is zero.
  """
  x = _matrix("features", features, min_rows=1)
  labels = _labels("labels", labels, x.shape[0])
  domains = _labels("domains", domains, x.shape[0])
  groups = sorted(set(zip(domains.tolist(), labels.tolist())))
  means = np.stack([
      x[(domains == d) & (labels == c)].mean(axis=0) for d, c in groups])
  norms = np.linalg.norm(means, axis=1, keepdims=True)
  if np.any(norms == 0):
    bad = groups[int(np.argmin(norms[:, 0]))]
    raise ValueError(
        f"group (domain, class) = {bad!r} has a zero mean feature; its "
        "cosine similarity is undefined.")
  unit = means / norms
  return np.clip(unit @ unit.T, -1.0, 1.0), groups


def balanced_indices(labels, max_count: int, seed: int) -> np.ndarray:
  """A class-balanced random subset of at most `max_count` rows.

  Classes are visited round-robin, each contributing its rows in a seeded
  random order, so every class gets max_count // C rows (±1) unless it runs
  out.

  Args:
    labels: [n] labels.
    max_count: subset size cap (>= 1).
    seed: the random order's seed; the same seed gives the same subset.

  Returns:
    Sorted int64 indices into labels, min(n, max_count) of them.
  """
  if max_count < 1:
    raise ValueError(f"max_count must be >= 1, got {max_count}.")
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  per_class = [rng.permutation(np.flatnonzero(labels == c))
               for c in np.unique(labels)]
  longest = max((len(rows) for rows in per_class), default=0)
  # Rank r of every class before rank r + 1 of any: round-robin order.
  order = [rows[r] for r in range(longest) for rows in per_class
           if r < len(rows)]
  return np.sort(np.asarray(order[:max_count], dtype=np.int64))


def tsne_embedding(features, *, perplexity: float, seed: int,
                   threads: int = 1) -> np.ndarray:
  """2-D t-SNE of features with scikit-learn (Barnes-Hut, PCA init, seeded).

  Args:
    features: [n, p] features, n > perplexity.
    perplexity: t-SNE perplexity (sklearn requires it below n).
    seed: sklearn's random_state.
    threads: OpenMP threads of the gradient loop. Its spin-waits make
      threads slower on shared cores (measured on 2 busy cores, 1500
      points: 44 s with 2 threads, 9 s with 1), hence the default of 1.

  Returns:
    [n, 2] float64 embedding.

  Raises:
    ValueError: bad shape, or n <= perplexity.
  """
  # pylint: disable=g-import-not-at-top
  from sklearn import manifold
  import threadpoolctl
  # pylint: enable=g-import-not-at-top
  x = _matrix("features", features)
  if x.shape[0] <= perplexity:
    raise ValueError(
        f"t-SNE needs more points than its perplexity: got {x.shape[0]} "
        f"points for perplexity {perplexity}; lower the perplexity or use "
        "more points.")
  tsne = manifold.TSNE(n_components=2, perplexity=perplexity,
                       random_state=seed, init="pca")
  with threadpoolctl.threadpool_limits(threads):
    return tsne.fit_transform(x).astype(np.float64)
