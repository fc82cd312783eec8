"""MSBReg terms against independent float64 NumPy references, every reading."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdssl_jax.losses.msbreg import (brownian_loss, msbreg_centroid_loss,
                                     msbreg_loss, singular_value_loss)


def _n(x):
  x = np.asarray(x, np.float64)
  return x / np.sqrt((x * x).sum(-1, keepdims=True) + 1e-12)


def np_centroid(preds, projs, mode, renorm):
  """Loops over images and views, written from METHODS.md §4.2."""
  k, b, _ = preds.shape
  p, t = _n(preds), _n(projs)
  fix = _n if renorm else (lambda v: v)
  total = 0.0
  for i in range(b):
    if mode == "centroid_to_centroid":
      pc = fix(sum(p[v, i] for v in range(k)) / k)
      tc = fix(sum(t[v, i] for v in range(k)) / k)
      total += ((pc - tc) ** 2).sum()
      continue
    for v in range(k):
      if mode == "leave_one_out":
        c = sum(t[j, i] for j in range(k) if j != v) / (k - 1)
      else:
        c = sum(t[j, i] for j in range(k)) / k
      total += ((p[v, i] - fix(c)) ** 2).sum()
  return total / b if mode == "centroid_to_centroid" else total / (b * k)


def np_singular(preds, mode, center, eps=1e-4):
  """Per view σ from float64 numpy SVD, written from METHODS.md §4.3."""
  k = preds.shape[0]
  losses, nuclears = [], []
  for v in range(k):
    pk = _n(preds[v])
    if center:
      pk = pk - pk.mean(0)
    s = np.linalg.svd(pk, compute_uv=False)
    nuclears.append(s.sum())
    if mode == "nuclear":
      losses.append(-s.sum())
    elif mode == "log":
      losses.append(-np.log(s + eps).sum())
    else:
      losses.append(((s - s.mean()) ** 2).sum())
  return np.mean(losses), np.mean(nuclears)


def np_brownian(preds, r, per):
  """r: [B, d] ("image") or [K, B, d] ("view") raw Gaussian draws."""
  k, b, _ = preds.shape
  p, r_hat = _n(preds), _n(r)
  total = 0.0
  for v in range(k):
    for i in range(b):
      direction = r_hat[i] if per == "image" else r_hat[v, i]
      total += p[v, i] @ direction
  return -total / (b * k)


def np_byol(p1, p2, t1, t2):
  """Symmetrised BYOL (METHODS.md §5.3): mean_i[‖p1−t2‖² + ‖p2−t1‖²]."""
  p1, p2, t1, t2 = map(_n, (p1, p2, t1, t2))
  return np.mean(((p1 - t2) ** 2).sum(-1) + ((p2 - t1) ** 2).sum(-1))


def _views(seed, k, b, d):
  rng = np.random.default_rng(seed)
  preds = rng.normal(size=(k, b, d)).astype(np.float32)
  # Targets correlated with the predictions, each with its own norm.
  projs = (preds + 0.8 * rng.normal(size=(k, b, d))) * rng.uniform(
      0.5, 3.0, size=(k, b, 1))
  return preds, projs.astype(np.float32)


MODES = ["leave_one_out", "centroid_to_centroid", "full_centroid"]


@pytest.mark.parametrize("mode,renorm,shape", [
    (m, r, (2, 5, 3) if r else (4, 6, 8))
    for m, r in itertools.product(MODES, [False, True])]
    + [("leave_one_out", False, (3, 9, 4))])
def test_centroid_matches_numpy(mode, renorm, shape):
  preds, projs = _views(sum(shape) + len(mode), *shape)
  fn = jax.jit(functools.partial(msbreg_centroid_loss, centroid_mode=mode,
                                 renormalize_centroid=renorm))
  loss, m = fn(preds, projs)
  np.testing.assert_allclose(loss, np_centroid(preds, projs, mode, renorm),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(m["mc"], loss)


def test_k2_leave_one_out_is_half_symmetrised_byol():
  preds, projs = _views(0, 2, 16, 8)
  loss, m = msbreg_loss(preds, projs, jax.random.key(0), lambda_s=0.0,
                        lambda_b=0.0)
  byol = np_byol(preds[0], preds[1], projs[0], projs[1])
  np.testing.assert_allclose(loss, 0.5 * byol, rtol=1e-5)
  np.testing.assert_allclose(m["mc"], 0.5 * byol, rtol=1e-5)
  # The other readings are genuinely different losses.
  for mode in MODES[1:]:
    other, _ = msbreg_centroid_loss(preds, projs, centroid_mode=mode)
    assert abs(float(other) - 0.5 * byol) > 1e-3


@pytest.mark.parametrize("mode,center,shape", [
    ("nuclear", False, (2, 5, 3)), ("nuclear", True, (3, 4, 7)),
    ("log", False, (3, 4, 7)), ("log", True, (2, 5, 3)),
    ("log", True, (3, 4, 7)),  # rank-deficient after centring
    ("spread", False, (2, 5, 3)), ("spread", True, (3, 4, 7))])
def test_singular_matches_numpy(mode, center, shape):
  preds, _ = _views(sum(shape) * 3 + len(mode), *shape)
  # Centred with B ≤ d one σ is 0 exactly in float64 but ~1e-7 in float32;
  # a larger eps keeps "log" comparable there (default eps tested below).
  eps = 1e-2 if center and shape[1] <= shape[2] else 1e-4
  fn = jax.jit(functools.partial(singular_value_loss, singular_mode=mode,
                                 center_singular=center, eps=eps))
  loss, m = fn(preds)
  ref, nuc = np_singular(preds, mode, center, eps)
  np.testing.assert_allclose(loss, ref, rtol=1e-4, atol=2e-4)
  np.testing.assert_allclose(m["nuclear_norm"], nuc, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(m["sv"], loss)


def test_nuclear_norm_bounds():
  b, d = 6, 8
  q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(d, b)))
  orth = q.T[None].astype(np.float32)  # orthonormal rows: all σ = 1
  _, m = singular_value_loss(orth)
  np.testing.assert_allclose(m["nuclear_norm"], b, rtol=1e-5)  # the maximum
  same = np.tile(orth[:, :1], (1, b, 1))  # identical rows: rank 1
  _, m = singular_value_loss(same)
  np.testing.assert_allclose(m["nuclear_norm"], np.sqrt(b), rtol=1e-5)
  spread, _ = singular_value_loss(orth, singular_mode="spread")
  np.testing.assert_allclose(spread, 0.0, atol=1e-6)


@pytest.mark.parametrize("per", ["image", "view"])
def test_brownian_matches_numpy(per):
  k, b, d = 3, 7, 5
  preds, _ = _views(2, k, b, d)
  key = jax.random.key(42)
  loss, m = jax.jit(functools.partial(brownian_loss, brownian_per=per))(
      preds, key)
  # The draw is part of the documented contract; the rest is NumPy.
  draw_shape = (b, d) if per == "image" else (k, b, d)
  r = np.asarray(jax.random.normal(key, draw_shape, jnp.float32))
  np.testing.assert_allclose(loss, np_brownian(preds, r, per), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(m["brownian"], loss)


def test_brownian_direction_shared_per_image_not_per_view():
  k, b, d = 4, 5, 6
  one_view = np.random.default_rng(3).normal(size=(1, b, d))
  preds = np.tile(one_view, (k, 1, 1)).astype(np.float32)
  key = jax.random.key(7)
  grads = {}
  for per in ("image", "view"):
    grads[per] = np.asarray(jax.jit(jax.grad(
        lambda x, per=per: brownian_loss(x, key, brownian_per=per)[0]))(preds))
    assert np.all(np.isfinite(grads[per]))
  # Identical views + shared direction → identical kicks for every view.
  for v in range(1, k):
    np.testing.assert_allclose(grads["image"][v], grads["image"][0],
                               rtol=1e-6)
    assert not np.allclose(grads["view"][v], grads["view"][0], atol=1e-3)
  # The kick is tangent to the sphere at p: ⟨grad, p⟩ = 0 for each row.
  np.testing.assert_allclose((grads["image"] * preds).sum(-1), 0.0,
                             atol=1e-6)
  # Fresh key → fresh direction; same key → same value.
  value = jax.jit(lambda x, k: brownian_loss(x, k)[0])
  a = value(preds, key)
  assert float(a) == float(value(preds, key))
  assert float(a) != float(value(preds, jax.random.key(8)))
  # Raw uint32 keys work too.
  assert np.isfinite(float(brownian_loss(preds, jax.random.PRNGKey(0))[0]))


@pytest.mark.parametrize("mode,smode,per,renorm,center", [
    ("leave_one_out", "nuclear", "image", False, False),
    ("centroid_to_centroid", "log", "view", True, False),
    ("full_centroid", "spread", "image", False, True)])
def test_full_loss_matches_numpy(mode, smode, per, renorm, center):
  k, b, d = 3, 6, 5
  preds, projs = _views(4, k, b, d)
  key = jax.random.key(5)
  ls, lb = 0.004, 0.5
  fn = jax.jit(functools.partial(
      msbreg_loss, lambda_s=ls, lambda_b=lb, centroid_mode=mode,
      renormalize_centroid=renorm, singular_mode=smode,
      center_singular=center, brownian_per=per))
  loss, m = fn(preds, projs, key)
  r = np.asarray(jax.random.normal(key, (b, d) if per == "image"
                                   else (k, b, d), jnp.float32))
  mc = np_centroid(preds, projs, mode, renorm)
  sv, nuc = np_singular(preds, smode, center)
  br = np_brownian(preds, r, per)
  np.testing.assert_allclose(m["mc"], mc, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(m["sv"], sv, rtol=1e-4, atol=2e-4)
  np.testing.assert_allclose(m["brownian"], br, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(m["nuclear_norm"], nuc, rtol=1e-5)
  np.testing.assert_allclose(loss, mc + ls * sv + lb * br, rtol=1e-5,
                             atol=2e-6)


@pytest.mark.parametrize("mode", MODES)
def test_centroid_and_singular_invariant_to_batch_permutation(mode):
  preds, projs = _views(6, 3, 8, 4)
  perm = np.random.default_rng(7).permutation(8)
  a, _ = msbreg_centroid_loss(preds, projs, centroid_mode=mode)
  b, _ = msbreg_centroid_loss(preds[:, perm], projs[:, perm],
                              centroid_mode=mode)
  np.testing.assert_allclose(a, b, rtol=1e-6)
  # Jointly permuting the views changes nothing either.
  vperm = [2, 0, 1]
  c, _ = msbreg_centroid_loss(preds[vperm], projs[vperm], centroid_mode=mode)
  np.testing.assert_allclose(a, c, rtol=1e-6)
  s1, _ = singular_value_loss(preds)
  s2, _ = singular_value_loss(preds[:, perm])
  np.testing.assert_allclose(s1, s2, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_no_gradient_to_targets(mode):
  preds, projs = _views(8, 3, 5, 4)
  key = jax.random.key(0)
  gp, gt = jax.jit(jax.grad(
      lambda p, t: msbreg_loss(p, t, key, centroid_mode=mode)[0],
      argnums=(0, 1)))(preds, projs)
  assert np.all(np.asarray(gt) == 0.0)
  assert np.abs(np.asarray(gp)).sum() > 0
  gt = jax.jit(jax.grad(lambda t: msbreg_centroid_loss(
      preds, t, centroid_mode=mode)[0]))(projs)
  assert np.all(np.asarray(gt) == 0.0)


@pytest.mark.parametrize("smode,center", [
    ("nuclear", False), ("nuclear", True), ("log", True), ("spread", False)])
def test_gradients_finite_with_repeated_singular_values(smode, center):
  k, b, d = 2, 4, 6
  rng = np.random.default_rng(9)
  row = rng.normal(size=(1, 1, d))
  identical = np.tile(row, (k, b, 1)).astype(np.float32)  # σ = (√b, 0, 0, 0)
  q, _ = np.linalg.qr(rng.normal(size=(d, b)))
  orth = np.tile(q.T[None], (k, 1, 1)).astype(np.float32)  # σ all equal
  grad_fn = jax.jit(jax.grad(lambda p: msbreg_loss(
      p, p, jax.random.key(1), lambda_s=1.0, singular_mode=smode,
      center_singular=center)[0]))
  for preds in (identical, orth):
    grad = grad_fn(preds)
    assert np.all(np.isfinite(np.asarray(grad))), (smode, center)


def test_bad_inputs_raise():
  preds, projs = _views(10, 2, 4, 3)
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="K, B, d"):
    msbreg_loss(preds[0], projs[0], key)
  with pytest.raises(ValueError, match="same"):
    msbreg_loss(preds, projs[..., :2], key)
  with pytest.raises(ValueError, match="centroid_mode"):
    msbreg_loss(preds, projs, key, centroid_mode="loo")
  with pytest.raises(ValueError, match="singular_mode"):
    msbreg_loss(preds, projs, key, singular_mode="frobenius")
  with pytest.raises(ValueError, match="brownian_per"):
    brownian_loss(preds, key, brownian_per="batch")
  with pytest.raises(ValueError, match="K >= 2"):
    msbreg_centroid_loss(preds[:1], projs[:1])
  # K = 1 is fine for the modes that include a view's own target.
  loss, _ = msbreg_centroid_loss(preds[:1], projs[:1],
                                 centroid_mode="full_centroid")
  assert np.isfinite(float(loss))
