"""Tests for mdssl_jax.losses.swav (Sinkhorn-Knopp codes and the SwAV loss).

References are independent float64 NumPy code: the log-domain iterations
exactly as METHODS.md §5.7 states them (on the [K, B] matrix P), and the
original exp-domain SwAV loop for a cross-check at mild ε.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdssl_jax.losses.swav import normalize_prototypes, sinkhorn, swav_loss

RTOL = 2e-5
ATOL = 2e-5

# Jitted once per shape/hyperparameters (cheaper than op-by-op dispatch and
# checks tracing). Bad-input tests call the raw functions.
_sinkhorn = jax.jit(sinkhorn, static_argnames=("epsilon", "num_iters"))
_swav = jax.jit(swav_loss, static_argnames=(
    "num_global", "temperature", "epsilon", "num_iters"))


# ---------------------------------------------------------------------------
# Independent NumPy references (float64).


def np_lse(x, axis=None):
  m = np.max(x, axis=axis, keepdims=True)
  out = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
  return out if axis is not None else out.item()


def ref_sinkhorn_log(scores, eps, iters):
  """METHODS.md §5.7 verbatim: P is [K, B]; returns Q = B·Pᵀ [B, K]."""
  b, k = scores.shape
  log_p = scores.T / eps
  log_p = log_p - np_lse(log_p)
  for _ in range(iters):
    for r in range(k):  # Each prototype's row to mass 1/K.
      log_p[r] -= np_lse(log_p[r]) + np.log(k)
    for c in range(b):  # Each sample's column to mass 1/B.
      log_p[:, c] -= np_lse(log_p[:, c]) + np.log(b)
  return b * np.exp(log_p).T


def ref_sinkhorn_exp(scores, eps, iters):
  """The original SwAV/solo-learn loop in the exp domain (mild ε only)."""
  q = np.exp(scores / eps).T
  q /= q.sum()
  k, b = q.shape
  for _ in range(iters):
    q /= q.sum(axis=1, keepdims=True)
    q /= k
    q /= q.sum(axis=0, keepdims=True)
    q /= b
  return (q * b).T


def ref_swav(scores, num_global, tau, eps, iters, queue=None):
  v_count, b, _ = scores.shape
  total, count = 0.0, 0
  for g in range(num_global):
    s = scores[g] if queue is None else np.concatenate([queue[g], scores[g]])
    codes = ref_sinkhorn_log(s, eps, iters)[-b:]
    for w in range(v_count):
      if w == g:
        continue
      for i in range(b):
        log_pred = scores[w, i] / tau - np_lse(scores[w, i] / tau)
        total += -np.sum(codes[i] * log_pred)
        count += 1
  return total / count


def rand_scores(rng, *shape):
  """Cosine-like scores in [-1, 1], exactly representable in float32."""
  return rng.uniform(-1, 1, size=shape).astype(np.float32).astype(np.float64)


# ---------------------------------------------------------------------------
# Sinkhorn.


@pytest.mark.parametrize("b,k,eps,iters,seed", [
    (4, 3, 0.05, 3, 0), (6, 10, 0.05, 1, 1), (8, 5, 0.5, 7, 2),
    (5, 5, 0.1, 3, 3),
])
def test_sinkhorn_matches_log_domain_reference(b, k, eps, iters, seed):
  s = rand_scores(np.random.default_rng(seed), b, k)
  q = _sinkhorn(jnp.asarray(s, jnp.float32), epsilon=eps, num_iters=iters)
  assert q.shape == (b, k) and q.dtype == jnp.float32
  np.testing.assert_allclose(q, ref_sinkhorn_log(s, eps, iters), rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-5)


def test_sinkhorn_matches_exp_domain_swav_loop():
  s = rand_scores(np.random.default_rng(4), 6, 4)
  q = _sinkhorn(jnp.asarray(s, jnp.float32), epsilon=0.5, num_iters=3)
  np.testing.assert_allclose(q, ref_sinkhorn_exp(s, 0.5, 3), rtol=1e-5,
                             atol=1e-7)


def test_sinkhorn_converges_to_equipartition():
  b, k = 12, 4
  s = rand_scores(np.random.default_rng(5), b, k)
  q = _sinkhorn(jnp.asarray(s, jnp.float32), epsilon=0.5, num_iters=300)
  np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(q.sum(axis=0), b / k, rtol=1e-4)
  # One iteration leaves the columns visibly unbalanced at small ε.
  q1 = _sinkhorn(jnp.asarray(s, jnp.float32), epsilon=0.05, num_iters=1)
  assert np.abs(np.asarray(q1.sum(axis=0)) - b / k).max() > 1e-3


def test_sinkhorn_invariances():
  rng = np.random.default_rng(6)
  s = rand_scores(rng, 7, 5)
  q = _sinkhorn(jnp.asarray(s, jnp.float32))
  # A constant added to all scores, or per prototype (removed exactly by the
  # first prototype normalisation).
  for shift in (0.7, rng.normal(size=(1, 5))):
    q_shift = _sinkhorn(jnp.asarray(s + shift, jnp.float32))
    np.testing.assert_allclose(q_shift, q, rtol=1e-4, atol=1e-6)
  # A per-sample shift only drops out at convergence (the Sinkhorn limit
  # depends on P only up to diagonal scalings).
  shift = rng.normal(size=(7, 1)) * 0.1
  q_conv = _sinkhorn(jnp.asarray(s, jnp.float32), epsilon=0.5, num_iters=300)
  q_shift = _sinkhorn(jnp.asarray(s + shift, jnp.float32), epsilon=0.5,
                      num_iters=300)
  np.testing.assert_allclose(q_shift, q_conv, rtol=1e-4, atol=1e-6)
  # Permuting the samples permutes the codes.
  perm = rng.permutation(7)
  q_perm = _sinkhorn(jnp.asarray(s[perm], jnp.float32))
  np.testing.assert_allclose(q_perm, np.asarray(q)[perm], rtol=1e-4,
                             atol=1e-6)


def test_sinkhorn_extreme_scores_and_no_gradient():
  # Scores/ε = ±1000 would overflow exp in any precision.
  s = jnp.asarray(rand_scores(np.random.default_rng(7), 8, 6) * 10.0,
                  jnp.float32)
  q = _sinkhorn(s, epsilon=0.01, num_iters=3)
  assert np.all(np.isfinite(q))
  np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-5)
  g = jax.jit(jax.grad(lambda x: jnp.sum(sinkhorn(x) * x)))(s)
  # Only the explicit "* x" factor carries gradient: d/dx = Q.
  np.testing.assert_allclose(g, _sinkhorn(s), rtol=1e-4, atol=1e-7)
  # bf16 scores are computed in fp32 after rounding.
  s16 = s.astype(jnp.bfloat16) / 10
  q16 = _sinkhorn(s16)
  assert q16.dtype == jnp.float32
  np.testing.assert_allclose(
      q16, ref_sinkhorn_log(np.asarray(s16, np.float64), 0.05, 3), rtol=1e-4,
      atol=1e-6)


def test_sinkhorn_rejects_bad_input():
  with pytest.raises(ValueError, match=r"\[B, K\]"):
    sinkhorn(jnp.zeros((2, 3, 4)))
  with pytest.raises(ValueError, match="num_iters"):
    sinkhorn(jnp.zeros((3, 4)), num_iters=0)
  with pytest.raises(ValueError, match="epsilon"):
    sinkhorn(jnp.zeros((3, 4)), epsilon=-0.1)


# ---------------------------------------------------------------------------
# SwAV loss.


@pytest.mark.parametrize("v,vg,b,k,tau,eps,iters,seed", [
    (2, 2, 4, 6, 0.1, 0.05, 3, 0),
    (4, 2, 3, 5, 0.1, 0.05, 3, 1),
    (3, 1, 5, 4, 0.2, 0.1, 2, 2),
    (5, 3, 8, 4, 0.1, 0.05, 5, 3),
])
def test_swav_matches_reference(v, vg, b, k, tau, eps, iters, seed):
  s = rand_scores(np.random.default_rng(seed), v, b, k)
  loss, metrics = _swav(jnp.asarray(s, jnp.float32), num_global=vg,
                        temperature=tau, epsilon=eps, num_iters=iters)
  assert loss.shape == () and loss.dtype == jnp.float32
  np.testing.assert_allclose(loss, ref_swav(s, vg, tau, eps, iters),
                             rtol=RTOL, atol=ATOL)
  codes = [ref_sinkhorn_log(s[g], eps, iters) for g in range(vg)]
  entropy = np.mean([-np.sum(c * np.log(c), axis=1) for c in codes])
  np.testing.assert_allclose(metrics["codes_entropy"], entropy, rtol=1e-4)
  used = set(np.concatenate([np.argmax(c, axis=1) for c in codes]))
  np.testing.assert_allclose(metrics["prototype_usage"], len(used) / k)


@pytest.mark.parametrize("q_len,seed", [(6, 0), (16, 1)])
def test_swav_with_queue_keeps_only_batch_rows(q_len, seed):
  rng = np.random.default_rng(10 + seed)
  v, vg, b, k = 3, 2, 4, 5
  s = rand_scores(rng, v, b, k)
  queue = rand_scores(rng, vg, q_len, k)
  loss, _ = _swav(jnp.asarray(s, jnp.float32),
                  queue_scores=jnp.asarray(queue, jnp.float32))
  np.testing.assert_allclose(loss, ref_swav(s, vg, 0.1, 0.05, 3, queue),
                             rtol=RTOL, atol=ATOL)
  # The queue really changes the codes ...
  no_queue, _ = _swav(jnp.asarray(s, jnp.float32))
  assert abs(float(loss) - float(no_queue)) > 1e-4
  # ... but only as constants: no gradient reaches the queued scores.
  grad_queue = jax.jit(jax.grad(
      lambda x: swav_loss(jnp.asarray(s, jnp.float32), queue_scores=x)[0]))(
          jnp.asarray(queue, jnp.float32))
  np.testing.assert_array_equal(grad_queue, 0.0)


def test_swav_gradient_stops_at_codes():
  # dL/ds[w, i] = Σ_{g<Vg, g≠w} (softmax(s[w, i]/τ) − q[g, i]) / (τ · N):
  # holds only if no gradient flows through the Sinkhorn codes.
  rng = np.random.default_rng(20)
  v, vg, b, k, tau = 3, 2, 4, 5, 0.1
  s = rand_scores(rng, v, b, k)
  g = jax.jit(jax.grad(lambda x: swav_loss(x, num_global=vg,
                                           temperature=tau)[0]))(
                                               jnp.asarray(s, jnp.float32))
  n_terms = vg * (v - 1) * b
  codes = [ref_sinkhorn_log(s[gv], 0.05, 3) for gv in range(vg)]
  expected = np.zeros_like(s)
  for w in range(v):
    for i in range(b):
      pred = np.exp(s[w, i] / tau - np_lse(s[w, i] / tau))
      for gv in range(vg):
        if gv != w:
          expected[w, i] += (pred - codes[gv][i]) / (tau * n_terms)
  np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-6)


def test_swav_batch_permutation_invariance():
  rng = np.random.default_rng(21)
  s = rand_scores(rng, 4, 6, 5)
  perm = rng.permutation(6)
  base, _ = _swav(jnp.asarray(s, jnp.float32))
  permuted, _ = _swav(jnp.asarray(s[:, perm], jnp.float32))
  np.testing.assert_allclose(permuted, base, rtol=1e-5)


def test_swav_extreme_scores_and_bf16():
  rng = np.random.default_rng(22)
  # Unnormalised prototypes: scores ±20 give ±400 at ε = 0.05.
  s = jnp.asarray(rand_scores(rng, 4, 3, 6) * 20.0, jnp.float32)
  (loss, metrics), g = jax.jit(jax.value_and_grad(
      lambda x: swav_loss(x, temperature=0.05), has_aux=True))(s)
  assert np.isfinite(loss) and np.all(np.isfinite(g))
  assert all(np.isfinite(m) for m in metrics.values())
  s16 = (s / 20.0).astype(jnp.bfloat16)
  loss16, _ = _swav(s16)
  assert loss16.dtype == jnp.float32
  np.testing.assert_allclose(
      loss16, ref_swav(np.asarray(s16, np.float64), 2, 0.1, 0.05, 3),
      rtol=RTOL, atol=ATOL)
  g16 = jax.jit(jax.grad(lambda x: swav_loss(x)[0]))(s16)
  assert g16.dtype == jnp.bfloat16 and np.all(np.isfinite(np.float32(g16)))


def test_normalize_prototypes():
  rng = np.random.default_rng(23)
  kernel = rng.normal(size=(8, 5)).astype(np.float32)
  kernel[:, 2] = 0.0  # A dead prototype must not produce NaN.
  out = normalize_prototypes(jnp.asarray(kernel))
  assert out.shape == (8, 5) and out.dtype == jnp.float32
  expected = kernel / np.sqrt(np.sum(kernel.astype(np.float64) ** 2, axis=0)
                              + 1e-12)
  np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)
  norms = np.linalg.norm(np.asarray(out), axis=0)
  np.testing.assert_allclose(norms[[0, 1, 3, 4]], 1.0, rtol=1e-6)
  g = jax.grad(lambda x: jnp.sum(normalize_prototypes(x)[0]))(
      jnp.asarray(kernel))
  assert np.all(np.isfinite(g))
  with pytest.raises(ValueError, match=r"\[d, K\]"):
    normalize_prototypes(jnp.zeros((2, 3, 4)))


def test_swav_rejects_bad_input():
  s = jnp.zeros((3, 4, 5))
  with pytest.raises(ValueError, match=r"\[V, B, K\]"):
    swav_loss(jnp.zeros((4, 5)))
  with pytest.raises(ValueError, match="num_global"):
    swav_loss(s, num_global=4)
  with pytest.raises(ValueError, match="num_global"):
    swav_loss(s, num_global=0)
  with pytest.raises(ValueError, match="2 views"):
    swav_loss(jnp.zeros((1, 4, 5)), num_global=1)
  with pytest.raises(ValueError, match="queue_scores"):
    swav_loss(s, queue_scores=jnp.zeros((2, 6, 4)))
  with pytest.raises(ValueError, match="queue_scores"):
    swav_loss(s, queue_scores=jnp.zeros((3, 6, 5)))
  with pytest.raises(ValueError, match="temperature"):
    swav_loss(s, temperature=0.0)
