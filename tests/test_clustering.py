"""k-means, robust outlier rules, ε schedule and cluster metrics."""

import math

import jax
from jax.sharding import Mesh, PartitionSpec as P
import numpy as np
import pytest
from sklearn import cluster as sk_cluster
from sklearn import metrics as sk_metrics

from mdssl_jax import clustering
from mdssl_jax import sharding

# Unequal cluster sizes; the total stays 400 so every draw shares one
# compiled k-means.
_SIZES = ((40, 100, 250, 10), (10, 250, 40, 100), (130, 130, 130, 10))


def _blobs(seed, sizes, d=16, noise=0.1):
  """Well-separated clusters on the unit sphere; returns (x, truth)."""
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(len(sizes), d))
  truth = np.repeat(np.arange(len(sizes)), sizes)
  x = centers[truth] / np.linalg.norm(centers[truth], axis=1, keepdims=True)
  x = x + noise * rng.normal(size=x.shape) / math.sqrt(d)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  perm = rng.permutation(len(truth))
  return x[perm].astype(np.float32), truth[perm]


@pytest.mark.parametrize("seed,sizes", list(enumerate(_SIZES)))
def test_kmeans_recovers_separated_clusters(seed, sizes):
  x, truth = _blobs(seed, sizes)
  centroids, labels, inertia = clustering.kmeans(x, 4, seed=seed)
  assert centroids.shape == (4, 16) and labels.shape == (400,)
  assert labels.dtype == np.int32
  assert clustering.adjusted_rand_index(labels, truth) >= 0.9
  # Labels are the nearest centroids and inertia their squared distances.
  d2 = ((x[:, None] - centroids[None]) ** 2).sum(-1)
  np.testing.assert_array_equal(labels, d2.argmin(1))
  np.testing.assert_allclose(inertia, d2.min(1).sum(), rtol=1e-5)


def test_kmeans_matches_sklearn_and_normalize():
  x, _ = _blobs(3, _SIZES[0])
  _, labels, inertia = clustering.kmeans(x, 4, seed=0)
  reference = sk_cluster.KMeans(4, n_init=10, random_state=0).fit(x)
  np.testing.assert_allclose(inertia, reference.inertia_, rtol=1e-4)
  assert clustering.adjusted_rand_index(labels, reference.labels_) == 1.0
  # normalize=True undoes any positive per-row scaling.
  scale = np.random.default_rng(0).uniform(0.5, 3.0, size=(400, 1))
  _, labels_scaled, _ = clustering.kmeans(
      x * scale.astype(np.float32), 4, seed=0, normalize=True)
  np.testing.assert_array_equal(labels_scaled, labels)


def test_kmeans_deterministic_and_keeps_best_restart():
  x = np.random.default_rng(0).uniform(size=(300, 2)).astype(np.float32)
  first = clustering.kmeans(x, 8, seed=5, restarts=4)
  again = clustering.kmeans(x, 8, seed=5, restarts=4)
  np.testing.assert_array_equal(first[0], again[0])
  np.testing.assert_array_equal(first[1], again[1])
  assert first[2] == again[2]
  # Restart r is the single-restart run of seed + r; the best one is kept.
  singles = [clustering.kmeans(x, 8, seed=5 + r, restarts=1)
             for r in range(4)]
  inertias = [s[2] for s in singles]
  assert max(inertias) > min(inertias) * 1.01  # the restarts do differ
  best = singles[int(np.argmin(inertias))]
  np.testing.assert_allclose(first[2], min(inertias), rtol=1e-5)
  np.testing.assert_allclose(first[0], best[0], atol=1e-5)
  np.testing.assert_array_equal(first[1], best[1])


def test_kmeans_sharded_over_eight_devices_equals_unsharded(monkeypatch):
  x, truth = _blobs(1, _SIZES[1])
  reference = clustering.kmeans(x, 4, seed=3)
  mesh = sharding.make_mesh()
  assert mesh.devices.size == 8
  # Small blocks: 400 rows -> 8 shards x 4 blocks x 13 rows, 16 padding.
  monkeypatch.setattr(clustering, "_CHUNK_ROWS", 16)
  centroids, labels, inertia = clustering.kmeans(x, 4, seed=3, mesh=mesh)
  np.testing.assert_array_equal(labels, reference[1])
  np.testing.assert_allclose(centroids, reference[0], atol=1e-5)
  np.testing.assert_allclose(inertia, reference[2], rtol=1e-5)
  assert clustering.adjusted_rand_index(labels, truth) == 1.0


def test_lloyd_step_reseeds_empty_clusters_at_farthest_rows():
  x = np.array([[0.0], [0.1], [10.0], [10.2], [20.0]], np.float32)
  step = jax.jit(jax.shard_map(
      clustering._lloyd_step,  # pylint: disable=protected-access
      mesh=Mesh(np.asarray(jax.devices()[:1]), ("data",)),
      in_specs=(P("data"), P("data"), P()), out_specs=P(), check_vma=False))
  xb, wb = x[None], np.ones((1, 5), np.float32)
  # Cluster 2 gets no row: it moves to 20, the farthest from its centroid.
  new = step(xb, wb, np.array([[0.0], [10.0], [100.0]], np.float32))
  np.testing.assert_allclose(new[:, 0], [0.05, 13.4, 20.0], rtol=1e-6)
  # Two empty clusters take the farthest (20, d² 100) and the next (10.2).
  new = step(xb, wb, np.array([[0.0], [100.0], [200.0]], np.float32))
  np.testing.assert_allclose(new[:, 0], [8.06, 20.0, 10.2], rtol=1e-6)


def test_kmeans_with_fewer_distinct_points_than_k():
  x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
  centroids, labels, inertia = clustering.kmeans(x, 3, seed=0)
  assert np.all(np.isfinite(centroids)) and inertia == 0.0
  assert labels[0] == labels[1] != labels[2]


@pytest.mark.parametrize("x,k,match", [
    (np.zeros((5,), np.float32), 2, "2-D"),
    (np.zeros((0, 3), np.float32), 1, "2-D"),
    (np.zeros((5, 3), np.float32), 0, "k=0"),
    (np.zeros((5, 3), np.float32), 6, "k=6"),
    (np.array([[0.0, np.nan]], np.float32), 1, "NaN"),
])
def test_kmeans_input_errors(x, k, match):
  with pytest.raises(ValueError, match=match):
    clustering.kmeans(x, k, seed=0)


def test_kmeans_rejects_bad_settings_and_mesh():
  x = np.zeros((4, 2), np.float32)
  with pytest.raises(ValueError, match="restarts >= 1"):
    clustering.kmeans(x, 2, seed=0, restarts=0)
  mesh = Mesh(np.asarray(jax.devices()[:2]), ("model",))
  with pytest.raises(ValueError, match="'data' axis"):
    clustering.kmeans(x, 2, seed=0, mesh=mesh)


# Centroids (0,0), (4,0), (0,10) and four probes; squared distances:
#   (1,0): 1, 9, 101   (2,0): 4, 4, 104   (0,0): 0, 16, 100
#   (2.2,0): 4.84, 3.24, 104.84
_CENTROIDS = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 10.0]])
_PROBES = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 0.0], [2.2, 0.0]])


def test_second_to_nearest_rule_by_hand():
  ratio = clustering.second_to_nearest_ratio(_PROBES, _CENTROIDS)
  np.testing.assert_allclose(ratio, [9.0, 1.0, np.inf, 4.84 / 3.24])
  ignored, score = clustering.outlier_mask(_PROBES, _CENTROIDS, 0.5)
  np.testing.assert_array_equal(score, ratio)
  np.testing.assert_array_equal(ignored, [False, True, False, True])
  # Keep only when ρ > 1 + ε: an exact tie is ignored even at ε = 0.
  ignored, _ = clustering.outlier_mask(_PROBES, _CENTROIDS, 0.0)
  np.testing.assert_array_equal(ignored, [False, True, False, False])


def test_farthest_to_nearest_rule_by_hand():
  ratio = clustering.farthest_to_nearest_ratio(_PROBES, _CENTROIDS)
  np.testing.assert_allclose(ratio, [101.0, 26.0, np.inf, 104.84 / 3.24])
  ignored, score = clustering.outlier_mask(
      _PROBES, _CENTROIDS, 0.5, rule="farthest_to_nearest")
  np.testing.assert_array_equal(score, ratio)
  assert not ignored.any()  # the literal form keeps every probe here
  ignored, _ = clustering.outlier_mask(
      _PROBES, _CENTROIDS, 30.0, rule="farthest_to_nearest")
  np.testing.assert_array_equal(ignored, [False, True, False, False])


def test_rules_agree_for_two_centroids_and_ties():
  two = _CENTROIDS[:2]
  np.testing.assert_array_equal(
      clustering.second_to_nearest_ratio(_PROBES, two),
      clustering.farthest_to_nearest_ratio(_PROBES, two))
  # A probe on two coincident centroids is a 0/0 tie: ρ = 1, ignored.
  same = np.array([[0.0, 0.0], [0.0, 0.0]])
  ignored, ratio = clustering.outlier_mask(_PROBES[2:3], same, 0.0)
  assert ratio[0] == 1.0 and ignored[0]


def test_outlier_errors():
  with pytest.raises(ValueError, match="k >= 2"):
    clustering.outlier_mask(_PROBES, _CENTROIDS[:1], 0.5)
  with pytest.raises(ValueError, match="same d"):
    clustering.outlier_mask(_PROBES, np.zeros((2, 3)), 0.5)
  with pytest.raises(ValueError, match="rule="):
    clustering.outlier_mask(_PROBES, _CENTROIDS, 0.5, rule="eq5")
  with pytest.raises(ValueError, match="epsilon"):
    clustering.outlier_mask(_PROBES, _CENTROIDS, -0.1)


def test_epsilon_schedule_paper_numbers():
  kw = dict(warmup_steps=480, interval=2400)
  steps = clustering.clustering_steps(48_000, **kw)
  assert len(steps) == 20 and steps[0] == 480 and steps[-1] == 46_080
  eps = lambda s: clustering.epsilon_schedule(s, 48_000, **kw)
  assert eps(480) == 1.0 and eps(2879) == 1.0  # round 0
  np.testing.assert_allclose(eps(2880), 1e-3 ** (1 / 19), rtol=1e-12)
  np.testing.assert_allclose(eps(46_080), 1e-3, rtol=1e-12)
  np.testing.assert_allclose(eps(47_999), 1e-3, rtol=1e-12)
  with pytest.raises(ValueError, match="first clustering"):
    eps(479)


def test_epsilon_schedule_middle_and_single_round():
  kw = dict(warmup_steps=0, interval=2000, eps0=0.5, eps_final=0.005)
  values = [clustering.epsilon_schedule(s, 5000, **kw)
            for s in (0, 1999, 2000, 4000, 4999)]
  np.testing.assert_allclose(values, [0.5, 0.5, 0.05, 0.005, 0.005],
                             rtol=1e-12)
  assert clustering.epsilon_schedule(
      150, 200, warmup_steps=100, interval=500) == 1.0
  with pytest.raises(ValueError, match="eps_final"):
    clustering.epsilon_schedule(0, 10, warmup_steps=0, interval=5,
                                eps_final=2.0)
  with pytest.raises(ValueError, match="interval >= 1"):
    clustering.clustering_steps(10, warmup_steps=0, interval=0)


def test_purity_and_ari_by_hand():
  labels = np.array([0, 0, 1, 1, 1, 2])
  truth = np.array([0, 0, 0, 1, 1, 1])
  # Majorities 2 + 2 + 1 of 6. ARI: Σ C(n_ij,2) = 2, Σ C(a,2) = 4,
  # Σ C(b,2) = 6, C(6,2) = 15: (2 - 1.6) / (5 - 1.6) = 2/17.
  assert clustering.purity(labels, truth) == pytest.approx(5 / 6)
  assert clustering.adjusted_rand_index(labels, truth) == pytest.approx(2 / 17)
  relabelled = np.array([7, 7, -1, -1, -1, 3])
  assert clustering.adjusted_rand_index(relabelled, truth) == pytest.approx(
      2 / 17)
  assert clustering.adjusted_rand_index(truth, truth) == 1.0
  assert clustering.purity(truth, truth) == 1.0
  assert clustering.adjusted_rand_index(np.zeros(4), np.zeros(4)) == 1.0


def test_ari_matches_sklearn():
  rng = np.random.default_rng(0)
  for n, k in ((50, 3), (5000, 7), (200, 200)):
    labels, truth = rng.integers(0, k, n), rng.integers(0, 4, n)
    truth[: n // 2] = labels[: n // 2] % 4  # partly agreeing
    assert clustering.adjusted_rand_index(labels, truth) == pytest.approx(
        sk_metrics.adjusted_rand_score(truth, labels), abs=1e-12)
  with pytest.raises(ValueError, match="same length"):
    clustering.purity(np.zeros(3), np.zeros(4))
