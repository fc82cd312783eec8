"""Tests for mdssl_jax.evaluation's pieces: kNN, linear probe, feature
extraction, results files (the suite and registry: test_evaluators.py)."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdssl_jax import evaluation
from mdssl_jax.evaluation import linear_probe


# --------------------------------------------------------------------------
# Independent NumPy references (float64, loops).


def _ref_knn_scores(train_x, train_y, test_x, num_classes, k, temperature):
  train = np.asarray(train_x, np.float64)
  test = np.asarray(test_x, np.float64)
  train = train / np.sqrt((train**2).sum(1, keepdims=True) + 1e-12)
  test = test / np.sqrt((test**2).sum(1, keepdims=True) + 1e-12)
  k = min(k, len(train))
  scores = np.zeros((len(test), num_classes))
  for i, u in enumerate(test):
    sims = [float(np.dot(u, v)) for v in train]
    order = sorted(range(len(train)), key=lambda j: -sims[j])[:k]
    for j in order:
      scores[i, train_y[j]] += np.exp(sims[j] / temperature)
  return scores


def _ref_probe_final_loss(x, y, num_classes, *, steps, lr, momentum,
                          nesterov, weight_decay, cosine):
  """Full-batch SGD (torch.optim.SGD semantics) on softmax regression."""
  x = np.asarray(x, np.float64)
  n, f = x.shape
  onehot = np.eye(num_classes)[y]
  params = [np.zeros((f, num_classes)), np.zeros(num_classes)]
  bufs = [np.zeros_like(p) for p in params]

  def loss_and_probs(w, b):
    z = x @ w + b
    z = z - z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -(onehot * logp).sum(1).mean(), np.exp(logp)

  for t in range(steps):
    _, probs = loss_and_probs(*params)
    g_z = (probs - onehot) / n
    grads = [x.T @ g_z, g_z.sum(0)]
    lr_t = lr * 0.5 * (1 + np.cos(np.pi * t / steps)) if cosine else lr
    for p, g, buf in zip(params, grads, bufs):
      g = g + weight_decay * p
      buf *= momentum
      buf += g
      update = g + momentum * buf if nesterov else buf
      p -= lr_t * update
  return loss_and_probs(*params)[0]


def _blobs(rng, n, num_classes, dim, sep):
  means = rng.normal(size=(num_classes, dim)) * sep
  y = np.arange(n) % num_classes
  x = means[y] + rng.normal(size=(n, dim))
  return x.astype(np.float32), y


# --------------------------------------------------------------------------
# kNN.


@pytest.mark.parametrize(
    "n_train,n_test,dim,num_classes,k,temperature",
    [(50, 13, 8, 3, 1, 0.07), (64, 21, 16, 7, 5, 0.5),
     (40, 9, 4, 10, 20, 1.0), (30, 11, 6, 5, 100, 0.1)])
def test_knn_matches_reference(n_train, n_test, dim, num_classes, k,
                               temperature):
  rng = np.random.default_rng(n_train + k)
  train_x = rng.normal(size=(n_train, dim)).astype(np.float32)
  test_x = rng.normal(size=(n_test, dim)).astype(np.float32)
  train_y = rng.integers(0, num_classes, n_train)
  test_y = rng.integers(0, num_classes, n_test)
  ref = _ref_knn_scores(train_x, train_y, test_x, num_classes, k, temperature)
  got = evaluation.knn_predict(train_x, train_y, test_x,
                               num_classes=num_classes, k=k,
                               temperature=temperature)
  assert got.shape == (n_test, num_classes) and got.dtype == np.float32
  np.testing.assert_allclose(got, ref, rtol=2e-4, atol=1e-6)
  np.testing.assert_array_equal(got.argmax(1), ref.argmax(1))
  acc = evaluation.knn_accuracy(train_x, train_y, test_x, test_y,
                                num_classes=num_classes, k=k,
                                temperature=temperature)
  ref_top1 = 100.0 * np.mean(ref.argmax(1) == test_y)
  assert acc["top1"] == pytest.approx(ref_top1)
  if num_classes >= 5:
    # Zero-score classes tie; documented tie-break: lower class index first.
    ref_top5 = 100.0 * np.mean(
        [y in sorted(range(num_classes), key=lambda c, s=s: (-s[c], c))[:5]
         for s, y in zip(ref, test_y)])
    assert acc["top5"] == pytest.approx(ref_top5)
  else:
    assert "top5" not in acc


def test_knn_two_separated_clusters_is_perfect():
  rng = np.random.default_rng(0)
  centre = np.zeros(8, np.float32)
  centre[0] = 10.0

  def sample(n):
    y = rng.integers(0, 2, n)
    x = np.where(y[:, None] == 1, centre, -centre)
    return (x + rng.normal(size=(n, 8))).astype(np.float32), y

  train_x, train_y = sample(100)
  test_x, test_y = sample(40)
  acc = evaluation.knn_accuracy(train_x, train_y, test_x, test_y,
                                num_classes=2, k=20)
  assert acc == {"top1": 100.0}


def test_knn_chunking_matches_unchunked():
  rng = np.random.default_rng(1)
  train_x = rng.normal(size=(70, 12)).astype(np.float32)
  train_y = rng.integers(0, 6, 70)
  test_x = rng.normal(size=(23, 12)).astype(np.float32)
  full = evaluation.knn_predict(train_x, train_y, test_x, num_classes=6, k=7,
                                chunk_size=10_000)
  for chunk in (1, 5, 23):
    chunked = evaluation.knn_predict(train_x, train_y, test_x, num_classes=6,
                                     k=7, chunk_size=chunk)
    # Different chunk shapes sum in a different order (float32).
    np.testing.assert_allclose(chunked, full, rtol=1e-5)
    np.testing.assert_array_equal(chunked.argmax(1), full.argmax(1))


def test_knn_invariant_to_feature_norms():
  rng = np.random.default_rng(2)
  train_x = rng.normal(size=(40, 5)).astype(np.float32)
  train_y = rng.integers(0, 4, 40)
  test_x = rng.normal(size=(9, 5)).astype(np.float32)
  base = evaluation.knn_predict(train_x, train_y, test_x, num_classes=4, k=6)
  scaled = evaluation.knn_predict(
      train_x * rng.uniform(0.1, 10, (40, 1)).astype(np.float32), train_y,
      test_x * 3.0, num_classes=4, k=6)
  np.testing.assert_allclose(scaled, base, rtol=1e-4)


@pytest.mark.parametrize("kwargs,match", [
    (dict(temperature=0.001), "temperature"),
    (dict(k=0), "k must be"),
    (dict(num_classes=2), "num_classes=2"),
])
def test_knn_rejects_bad_input(kwargs, match):
  x = np.ones((4, 3), np.float32)
  args = dict(num_classes=3, k=2, temperature=0.07)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    evaluation.knn_predict(x, np.array([0, 1, 2, 2]), x, **args)
  with pytest.raises(ValueError, match="Feature widths"):
    evaluation.knn_predict(x, np.array([0, 1, 2, 2]), np.ones((2, 5)),
                           num_classes=3)


def test_knn_and_probe_on_real_digits():
  """Raw 8x8 digit pixels (bundled with scikit-learn) are easy for both."""
  sklearn_datasets = pytest.importorskip("sklearn.datasets")
  digits = sklearn_datasets.load_digits()
  x = digits.data.astype(np.float32)
  y = digits.target
  perm = np.random.default_rng(0).permutation(len(y))
  tr, te = perm[:1400], perm[1400:]
  knn = evaluation.knn_accuracy(x[tr], y[tr], x[te], y[te], num_classes=10)
  assert knn["top1"] > 95.0 and knn["top5"] > 99.0
  probe = evaluation.train_linear_probe(x[tr], y[tr], x[te], y[te],
                                        num_classes=10, steps=300,
                                        batch_size=256)
  assert probe["top1"] > 92.0


# --------------------------------------------------------------------------
# Linear probe.


def test_probe_separable_blobs_reach_100():
  rng = np.random.default_rng(3)
  x, y = _blobs(rng, 600, 4, 16, sep=4.0)
  res = evaluation.train_linear_probe(x[:400], y[:400], x[400:], y[400:],
                                      num_classes=4, steps=200, batch_size=64)
  assert set(res) == {"top1", "train_top1", "final_loss"}
  assert res["top1"] == 100.0 and res["train_top1"] == 100.0
  assert 0.0 <= res["final_loss"] < 0.05


def test_probe_random_labels_near_chance():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(1400, 16)).astype(np.float32)
  y = rng.integers(0, 10, 1400)
  res = evaluation.train_linear_probe(x[:400], y[:400], x[400:], y[400:],
                                      num_classes=10, steps=200,
                                      batch_size=64)
  # 1000 test points: top-1 chance 10% (std 0.95%), top-5 50% (std 1.6%).
  assert 5.0 < res["top1"] < 15.0
  assert 42.0 < res["top5"] < 58.0
  assert res["train_top1"] > res["top1"] + 5.0  # It can only memorise.


def test_probe_is_deterministic_and_seeded():
  rng = np.random.default_rng(6)
  x, y = _blobs(rng, 300, 3, 8, sep=0.7)
  kw = dict(num_classes=3, steps=150, batch_size=32)
  a = evaluation.train_linear_probe(x[:200], y[:200], x[200:], y[200:], **kw)
  b = evaluation.train_linear_probe(x[:200], y[:200], x[200:], y[200:], **kw)
  c = evaluation.train_linear_probe(x[:200], y[:200], x[200:], y[200:],
                                    seed=1, **kw)
  assert a == b
  assert a["final_loss"] != c["final_loss"]


@pytest.mark.parametrize("momentum,nesterov,weight_decay,schedule", [
    (0.0, False, 0.0, "constant"), (0.9, False, 0.0, "constant"),
    (0.9, True, 1e-2, "cosine"), (0.5, False, 1e-3, "cosine")])
def test_probe_full_batch_matches_numpy_sgd(momentum, nesterov, weight_decay,
                                            schedule):
  """With batch = n the minibatch order is irrelevant: exact GD reference."""
  rng = np.random.default_rng(7)
  x, y = _blobs(rng, 48, 3, 5, sep=0.5)
  res = evaluation.train_linear_probe(
      x, y, x, y, num_classes=3, steps=40, batch_size=48, lr=0.3,
      momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
      schedule=schedule, standardize=False)
  ref = _ref_probe_final_loss(x, y, 3, steps=40, lr=0.3, momentum=momentum,
                              nesterov=nesterov, weight_decay=weight_decay,
                              cosine=schedule == "cosine")
  np.testing.assert_allclose(res["final_loss"], ref, rtol=1e-4)


def test_probe_runs_across_blocks_like_reference():
  # 1100 steps = one full 1000-step block plus a padded partial block.
  rng = np.random.default_rng(8)
  x, y = _blobs(rng, 16, 2, 3, sep=0.3)
  res = evaluation.train_linear_probe(x, y, x, y, num_classes=2, steps=1100,
                                      batch_size=16, lr=0.05, momentum=0.0,
                                      standardize=False)
  ref = _ref_probe_final_loss(x, y, 2, steps=1100, lr=0.05, momentum=0.0,
                              nesterov=False, weight_decay=0.0, cosine=False)
  np.testing.assert_allclose(res["final_loss"], ref, rtol=1e-3)


@pytest.mark.parametrize("num_classes", [3, 70])  # Fused and matmul VJPs.
def test_probe_custom_gradient_matches_autodiff(num_classes):
  rng = np.random.default_rng(14)
  x = jnp.asarray(rng.normal(size=(33, 9)), jnp.float32)
  y = jnp.asarray(rng.integers(0, num_classes, 33))
  params = {"kernel": jnp.asarray(rng.normal(size=(9, num_classes)),
                                  jnp.float32),
            "bias": jnp.asarray(rng.normal(size=num_classes), jnp.float32)}

  def plain_loss(p):
    logits = x @ p["kernel"] + p["bias"]
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(33), y])

  got = jax.grad(linear_probe._ce_loss)(params, x, y)
  want = jax.grad(plain_loss)(params)
  for key in ("kernel", "bias"):
    np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6)


def test_index_blocks_are_epoch_permutations():
  blocks = list(linear_probe._index_blocks(n=10, batch_size=3, steps=7,
                                           block=4, seed=0))
  assert [(b.shape, v) for b, v in blocks] == [((4, 3), 4), ((4, 3), 3)]
  rows = np.concatenate([b[:v] for b, v in blocks])
  for epoch in (rows[0:3], rows[3:6]):  # 3 batches per epoch, 1 row dropped.
    flat = epoch.reshape(-1)
    assert len(set(flat.tolist())) == 9 and flat.max() < 10
  np.testing.assert_array_equal(blocks[1][0][3], 0)  # Padding row.


def test_standardize_uses_train_statistics_only():
  rng = np.random.default_rng(9)
  train = rng.normal(3.0, 5.0, size=(50, 4)).astype(np.float32)
  train[:, 2] = 7.0  # Constant: only centred.
  test = rng.normal(size=(10, 4)).astype(np.float32)
  z_train, z_test = evaluation.standardize_features(train, test)
  np.testing.assert_allclose(z_train.mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(z_train.std(0), [1, 1, 0, 1], atol=1e-5)
  mean, std = train.mean(0), train.std(0)
  std[2] = 1.0
  np.testing.assert_allclose(z_test, (test - mean) / std, rtol=1e-4,
                             atol=1e-5)


def test_probe_standardize_makes_it_scale_invariant():
  rng = np.random.default_rng(10)
  x, y = _blobs(rng, 200, 3, 6, sep=0.8)
  scale = rng.uniform(0.01, 100.0, size=6).astype(np.float32)
  kw = dict(num_classes=3, steps=100, batch_size=32)
  a = evaluation.train_linear_probe(x[:150], y[:150], x[150:], y[150:], **kw)
  b = evaluation.train_linear_probe(x[:150] * scale + 5, y[:150],
                                    x[150:] * scale + 5, y[150:], **kw)
  assert a["top1"] == b["top1"]
  np.testing.assert_allclose(a["final_loss"], b["final_loss"], rtol=1e-3)


@pytest.mark.parametrize("kwargs,match", [
    (dict(schedule="linear"), "schedule"), (dict(num_classes=1), ">= 2"),
    (dict(momentum=1.0), "momentum"), (dict(lr=float("nan")), "lr"),
    (dict(steps=0), "steps")])
def test_probe_rejects_bad_input(kwargs, match):
  x = np.ones((4, 3), np.float32)
  args = dict(num_classes=3)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    evaluation.train_linear_probe(x, np.array([0, 1, 2, 0]), x,
                                  np.array([0, 1, 2, 0]), **args)
  with pytest.raises(ValueError, match="test_labels"):
    evaluation.train_linear_probe(x, np.array([0, 1, 2, 0]), x,
                                  np.array([0, 1, 2, 3]), num_classes=3)


# --------------------------------------------------------------------------
# Feature extraction.


def _embed(images):
  flat = images.reshape(images.shape[0], -1)
  w = jnp.linspace(-1.0, 1.0, flat.shape[1] * 5).reshape(flat.shape[1], 5)
  return jnp.tanh(flat @ w)


def _extractor(embed, **kwargs):
  return evaluation.FeatureExtractor(lambda params, stats, x: embed(x),
                                     **kwargs)


def _batch_sharding(num_devices):
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:num_devices]), ("data",))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))


def test_feature_extractor_pads_last_batch_and_compiles_once():
  def recording_embed(seen):
    # A fresh function each time, so jit caches cannot hide a retrace.
    def embed(images):
      seen.add(images.shape)
      return _embed(images)
    return embed

  images = np.random.default_rng(11).uniform(size=(10, 4, 4, 3))
  seen = set()
  feats = _extractor(recording_embed(seen), batch_size=4)(None, None, images)
  assert feats.shape == (10, 5) and feats.dtype == np.float32
  np.testing.assert_allclose(feats, _embed(images.astype(np.float32)),
                             rtol=1e-5, atol=1e-6)
  assert seen == {(4, 4, 4, 3)}  # Every call used the padded shape.

  seen = set()
  _extractor(recording_embed(seen), batch_size=4,
             sharding=_batch_sharding(2))(None, None, images[:3])
  assert seen == {(4, 4, 4, 3)}  # min(4, 3) rounded up to 2 devices.
  seen = set()
  small = _extractor(recording_embed(seen), batch_size=256)(None, None,
                                                             images[:3])
  assert seen == {(3, 4, 4, 3)}
  np.testing.assert_allclose(small, feats[:3], rtol=1e-5, atol=1e-6)


def test_feature_extractor_with_sharding_and_edge_cases():
  images = (np.arange(7 * 2 * 2 * 3) % 255).astype(np.uint8).reshape(
      7, 2, 2, 3)
  embed = lambda x: _embed(x / 255.0)
  feats = _extractor(embed, batch_size=3, sharding=_batch_sharding(1))(
      None, None, images)
  np.testing.assert_allclose(feats, embed(images.astype(np.float32)),
                             rtol=1e-5, atol=1e-5)
  empty = _extractor(_embed, batch_size=3)(None, None, images[:0])
  assert empty.shape == (0, 5)
  with pytest.raises(ValueError, match=r"\[b, F\]|F\] features"):
    _extractor(lambda x: x, batch_size=3)(None, None, images)
  with pytest.raises(ValueError, match="one \\[batch, F\\] array"):
    _extractor(lambda x: (_embed(x), x), batch_size=3)(None, None, images)
  with pytest.raises(ValueError, match="batch_size"):
    _extractor(_embed, batch_size=0)
  with pytest.raises(ValueError, match="leading batch axis"):
    _extractor(_embed, batch_size=3)(None, None, np.float32(1.0))


def test_feature_extractor_multi_device():
  """4 CPU devices: batch rounded to a multiple of 4, rows intact."""
  seen = []

  def embed(x):
    seen.append(x.shape)
    return jnp.tanh(x.reshape(x.shape[0], -1)[:, :5] * 2.0)

  imgs = np.random.default_rng(0).uniform(size=(11, 2, 2, 3))
  out = _extractor(embed, batch_size=6, sharding=_batch_sharding(4))(
      None, None, imgs)
  ref = np.tanh(imgs.reshape(11, -1)[:, :5] * 2.0)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
  assert set(seen) == {(8, 2, 2, 3)}, seen


# --------------------------------------------------------------------------
# Results files.


def _results():
  # A results file from before `config.evals` (flat eval_config).
  return {"domains": {"d": {"knn_top1": np.float32(12.5), "knn_top5": None,
                            "probe_top1": 50.0, "n_train": np.int64(8)}},
          "mean": {"knn_top1": 12.5, "probe_top1": float("nan")},
          "eval_config": {"knn_chunk_size": None}}


def test_write_results_round_trips(tmp_path):
  path = tmp_path / "sub" / "results.json"
  evaluation.write_results(_results(), path)
  loaded = json.loads(path.read_text())
  assert loaded == {"domains": {"d": {"knn_top1": 12.5, "knn_top5": None,
                                      "probe_top1": 50.0, "n_train": 8}},
                    "mean": {"knn_top1": 12.5, "probe_top1": None},
                    "eval_config": {"knn_chunk_size": None}}
  assert sorted(os.listdir(path.parent)) == ["results.json"]
  evaluation.format_table(loaded)  # Loaded results still render.


def test_write_results_never_leaves_a_partial_file(tmp_path, monkeypatch):
  path = tmp_path / "results.json"
  evaluation.write_results({"mean": {"knn_top1": 1.0}}, path)
  good = path.read_text()
  with pytest.raises(TypeError):
    evaluation.write_results({"mean": {"knn_top1": object()}}, path)
  assert path.read_text() == good

  def failing_replace(src, dst):
    raise OSError("disk vanished")

  monkeypatch.setattr(os, "replace", failing_replace)
  with pytest.raises(OSError, match="disk vanished"):
    evaluation.write_results({"mean": {"knn_top1": 2.0}}, path)
  assert path.read_text() == good
  assert os.listdir(tmp_path) == ["results.json"]  # Temp file removed.
