"""NT-Xent and MDSSL losses against an independent float64 NumPy reference."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdssl_jax.losses import mdssl_loss, nt_xent


def _np_normalize(x):
  return x / np.sqrt((x * x).sum(-1, keepdims=True) + 1e-12)


def _np_lse(values):
  values = np.asarray(values, np.float64)
  m = values.max()
  return m + np.log(np.exp(values - m).sum())


def np_mdssl(z1, z2, dom, tau, lam1, lam2):
  """Loop-based reference written straight from the issue's formula."""
  z = _np_normalize(np.concatenate([z1, z2]).astype(np.float64))
  d = np.concatenate([dom, dom])
  b = z1.shape[0]
  n = 2 * b
  s = lambda a, c: z[a] @ z[c] / tau
  align = np.mean([s(i, i + b) for i in range(b)])
  within, cross = [], []
  for a in range(n):
    within.append(_np_lse([s(a, c) for c in range(n)
                           if c != a and d[c] == d[a]]))
    other = [s(a, c) for c in range(n) if d[c] != d[a]]
    cross.append(_np_lse(other) if other else 0.0)
  return -align + lam1 * np.mean(within) + lam2 * np.mean(cross)


def np_nt_xent(z1, z2, tau):
  z = _np_normalize(np.concatenate([z1, z2]).astype(np.float64))
  b = z1.shape[0]
  n = 2 * b
  total = 0.0
  for a in range(n):
    p = (a + b) % n
    total += -z[a] @ z[p] / tau + _np_lse(
        [z[a] @ z[c] / tau for c in range(n) if c != a])
  return total / n


@pytest.mark.parametrize("b,d,tau", [(4, 3, 0.1), (9, 16, 0.5), (16, 8, 1.0)])
def test_nt_xent_matches_numpy(b, d, tau):
  rng = np.random.default_rng(b * 100 + d)
  z1, z2 = rng.normal(size=(2, b, d)).astype(np.float32)
  loss, m = jax.jit(lambda a, c: nt_xent(a, c, temperature=tau))(z1, z2)
  np.testing.assert_allclose(loss, np_nt_xent(z1, z2, tau), rtol=1e-5,
                             atol=1e-5)
  assert 0.0 <= m["acc"] <= 1.0


CASES = list(itertools.product(
    [  # domain layouts: equal, unequal sizes, a domain with a single image
        [0, 0, 0, 1, 1, 1],
        [0, 0, 0, 0, 1, 2, 2],
        [2, 0, 1, 1, 0, 0, 0, 1, 1, 2],
        [0, 1, 1, 1, 1],
    ],
    [0.1, 0.5],
    [(1.0, 0.1), (0.9, 0.15), (0.5, 0.0), (0.2, 1.3)],
))


@pytest.mark.parametrize("dom,tau,lams", CASES)
def test_mdssl_matches_numpy(dom, tau, lams):
  lam1, lam2 = lams
  dom = np.asarray(dom, np.int32)
  rng = np.random.default_rng(len(dom) + int(tau * 10))
  z1, z2 = rng.normal(size=(2, len(dom), 5)).astype(np.float32)
  loss, metrics = mdssl_loss(z1, z2, jnp.asarray(dom), temperature=tau,
                             lambda1=lam1, lambda2=lam2)
  np.testing.assert_allclose(loss, np_mdssl(z1, z2, dom, tau, lam1, lam2),
                             rtol=1e-5, atol=1e-5)
  recombined = (-metrics["align"] + lam1 * metrics["within"]
                + lam2 * metrics["cross"])
  np.testing.assert_allclose(recombined, loss, rtol=1e-6, atol=1e-6)


def test_single_domain_batch_has_zero_cross_term_and_finite_grad():
  rng = np.random.default_rng(0)
  z1, z2 = rng.normal(size=(2, 6, 4)).astype(np.float32)
  dom = jnp.zeros(6, jnp.int32)
  f = lambda a: mdssl_loss(a, z2, dom, temperature=0.1, lambda1=1.0,
                           lambda2=0.5)
  (loss, m), g = jax.value_and_grad(f, has_aux=True)(z1)
  assert float(m["cross"]) == 0.0 and float(m["cross_valid"]) == 0.0
  assert np.all(np.isfinite(g))
  np.testing.assert_allclose(loss, np_mdssl(z1, z2, np.zeros(6), 0.1, 1, .5),
                             rtol=1e-5)


@pytest.mark.parametrize("b,tau", [(5, 0.1), (12, 0.3)])
def test_one_domain_mdssl_equals_nt_xent(b, tau):
  rng = np.random.default_rng(b)
  z1, z2 = rng.normal(size=(2, b, 7)).astype(np.float32)
  a, _ = mdssl_loss(z1, z2, jnp.zeros(b, jnp.int32), temperature=tau,
                    lambda1=1.0, lambda2=0.0)
  c, _ = nt_xent(z1, z2, temperature=tau)
  np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)


def test_gradients_match_between_mdssl_and_nt_xent_for_one_domain():
  rng = np.random.default_rng(3)
  z1, z2 = rng.normal(size=(2, 8, 6)).astype(np.float32)
  g1 = jax.grad(lambda a: mdssl_loss(a, z2, jnp.zeros(8, jnp.int32),
                                     temperature=.2, lambda1=1.,
                                     lambda2=0.)[0])(z1)
  g2 = jax.grad(lambda a: nt_xent(a, z2, temperature=.2)[0])(z1)
  np.testing.assert_allclose(g1, g2, rtol=1e-4, atol=1e-6)


def test_invariant_to_joint_batch_permutation_and_relabelling():
  rng = np.random.default_rng(4)
  z1, z2 = rng.normal(size=(2, 9, 5)).astype(np.float32)
  dom = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])
  perm = rng.permutation(9)
  kw = dict(temperature=0.2, lambda1=0.9, lambda2=0.1)
  a, _ = mdssl_loss(z1, z2, dom, **kw)
  c, _ = mdssl_loss(z1[perm], z2[perm], (dom[perm] + 1) % 3 * 7, **kw)
  np.testing.assert_allclose(a, c, rtol=1e-5)


def test_bf16_inputs_compute_in_float32():
  rng = np.random.default_rng(5)
  z1, z2 = rng.normal(size=(2, 8, 16)).astype(np.float32)
  dom = np.array([0, 1] * 4)
  l32, _ = mdssl_loss(z1, z2, dom, temperature=.1, lambda1=1., lambda2=.1)
  l16, _ = mdssl_loss(jnp.bfloat16(z1), jnp.bfloat16(z2), dom,
                      temperature=.1, lambda1=1., lambda2=.1)
  assert l16.dtype == jnp.float32
  np.testing.assert_allclose(l16, l32, rtol=2e-2)


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match="same shape"):
    nt_xent(jnp.ones((4, 3)), jnp.ones((5, 3)), temperature=0.1)
  with pytest.raises(ValueError, match="domains"):
    mdssl_loss(jnp.ones((4, 3)), jnp.ones((4, 3)), jnp.zeros(3, jnp.int32),
               temperature=0.1, lambda1=1.0, lambda2=0.0)
