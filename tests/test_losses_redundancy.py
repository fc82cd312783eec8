"""VICReg and Barlow Twins against independent float64 NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdssl_jax.losses.redundancy import barlow_twins_loss, vicreg_loss


def np_vicreg(z1, z2, lam, mu, nu, gamma, eps):
  """Loop-based reference written from METHODS.md §5.5."""
  z1 = np.asarray(z1, np.float64)
  z2 = np.asarray(z2, np.float64)
  b, d = z1.shape
  inv = sum((z1[i, j] - z2[i, j]) ** 2 for i in range(b) for j in range(d))
  inv /= b * d

  def var(z):
    total = 0.0
    for j in range(d):
      m = sum(z[:, j]) / b
      v = sum((z[i, j] - m) ** 2 for i in range(b)) / (b - 1)
      total += max(0.0, gamma - np.sqrt(v + eps))
    return total / d

  def cov(z):
    m = z.mean(0)
    total = 0.0
    for p in range(d):
      for q in range(d):
        if p != q:
          c = sum((z[i, p] - m[p]) * (z[i, q] - m[q]) for i in range(b))
          total += (c / (b - 1)) ** 2
    return total / d

  v = var(z1) + var(z2)
  c = cov(z1) + cov(z2)
  return lam * inv + mu * v + nu * c, inv, v, c


def np_barlow(z1, z2, lambd, scale, eps=1e-5):
  """Loop-based reference written from METHODS.md §5.4 (biased variance)."""
  z1 = np.asarray(z1, np.float64)
  z2 = np.asarray(z2, np.float64)
  b, d = z1.shape

  def standardize(z):
    out = np.empty_like(z)
    for j in range(d):
      m = z[:, j].sum() / b
      v = ((z[:, j] - m) ** 2).sum() / b
      out[:, j] = (z[:, j] - m) / np.sqrt(v + eps)
    return out

  h1, h2 = standardize(z1), standardize(z2)
  on, off = 0.0, 0.0
  for p in range(d):
    for q in range(d):
      c = sum(h1[i, p] * h2[i, q] for i in range(b)) / b
      if p == q:
        on += (1.0 - c) ** 2
      else:
        off += c ** 2
  return scale * (on + lambd * off), on, off


def _pair(seed, b, d, std=1.0):
  rng = np.random.default_rng(seed)
  z1 = rng.normal(size=(b, d)) * std
  # Correlated second view so that every term is non-trivial.
  z2 = 0.7 * z1 + 0.5 * rng.normal(size=(b, d)) * std
  return z1.astype(np.float32), z2.astype(np.float32)


# ------------------------------------------------------------------ VICReg


@pytest.mark.parametrize(
    "b,d,lam,mu,nu,gamma,std",
    [(4, 3, 25.0, 25.0, 1.0, 1.0, 1.0),
     (8, 5, 25.0, 25.0, 1.0, 1.0, 0.3),   # variance hinge active
     (13, 7, 1.0, 10.0, 4.0, 2.0, 1.0),
     (32, 16, 5.0, 0.5, 0.1, 0.5, 2.0)])  # hinge inactive
def test_vicreg_matches_numpy(b, d, lam, mu, nu, gamma, std):
  z1, z2 = _pair(b * 31 + d, b, d, std)
  eps = 1e-4
  fn = jax.jit(lambda x, y: vicreg_loss(
      x, y, sim_coeff=lam, std_coeff=mu, cov_coeff=nu, gamma=gamma, eps=eps))
  loss, m = fn(z1, z2)
  ref, inv, var, cov = np_vicreg(z1, z2, lam, mu, nu, gamma, eps)
  np.testing.assert_allclose(loss, ref, rtol=2e-5, atol=1e-5)
  np.testing.assert_allclose(m["inv"], inv, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(m["var"], var, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(m["cov"], cov, rtol=2e-5, atol=1e-6)
  assert loss.dtype == jnp.float32


def test_vicreg_eps_inside_sqrt():
  # A constant dimension has std sqrt(eps), not 0 or sqrt(0)+eps.
  z = np.zeros((6, 2), np.float32)
  z[:, 1] = np.arange(6)
  _, m = vicreg_loss(z, z, eps=0.01)
  _, inv, var, _ = np_vicreg(z, z, 25, 25, 1, 1.0, 0.01)
  np.testing.assert_allclose(m["var"], var, rtol=1e-6)
  np.testing.assert_allclose(m["var"], 2 * (1.0 - 0.1) / 2, rtol=1e-6)
  assert float(inv) == 0.0 and float(m["inv"]) == 0.0


def test_vicreg_identical_views_have_zero_invariance():
  z1, _ = _pair(0, 10, 6)
  loss, m = vicreg_loss(z1, z1)
  assert float(m["inv"]) == 0.0
  np.testing.assert_allclose(loss, 25.0 * m["var"] + 1.0 * m["cov"],
                             rtol=1e-6)


def test_vicreg_batch_permutation_invariance():
  z1, z2 = _pair(1, 12, 5)
  perm = np.random.default_rng(2).permutation(12)
  a, _ = vicreg_loss(z1, z2)
  b, _ = vicreg_loss(z1[perm], z2[perm])
  np.testing.assert_allclose(a, b, rtol=1e-5)


def test_vicreg_covariance_divides_by_d_not_d_squared():
  # Two perfectly correlated unit-variance dims: C_01 = C_10 = 1 → cov = 2/d.
  x = np.array([-1.5, -0.5, 0.5, 1.5])
  x = x / np.sqrt((x ** 2).sum() / 3)  # unbiased variance 1
  z = np.stack([x, x, np.zeros(4)], 1).astype(np.float32)
  _, m = vicreg_loss(z, z)
  np.testing.assert_allclose(m["cov"], 2 * (2.0 / 3.0), rtol=1e-5)


def test_vicreg_gradients_finite_including_collapse():
  z1, z2 = _pair(3, 8, 4)
  collapsed = np.ones((8, 4), np.float32)
  for a, b in [(z1, z2), (collapsed, collapsed)]:
    g1, g2 = jax.grad(lambda x, y: vicreg_loss(x, y)[0], argnums=(0, 1))(a, b)
    assert np.all(np.isfinite(g1)) and np.all(np.isfinite(g2))
  # Collapse is penalised: the variance hinge pushes the rows apart.
  assert float(vicreg_loss(collapsed, collapsed)[1]["var"]) > 1.9


def test_vicreg_casts_low_precision_inputs():
  z1, z2 = _pair(4, 8, 4)
  loss, _ = vicreg_loss(jnp.asarray(z1, jnp.bfloat16),
                        jnp.asarray(z2, jnp.bfloat16))
  assert loss.dtype == jnp.float32


@pytest.mark.parametrize("fn", [vicreg_loss, barlow_twins_loss])
def test_bad_inputs_raise(fn):
  z = np.zeros((4, 3), np.float32)
  with pytest.raises(ValueError, match="same shape"):
    fn(z, np.zeros((4, 2), np.float32))
  with pytest.raises(ValueError, match=r"\[B, d\]"):
    fn(z[None], z[None])
  with pytest.raises(ValueError, match="at least 2"):
    fn(z[:1], z[:1])


# ------------------------------------------------------------ Barlow Twins


@pytest.mark.parametrize("b,d,lambd,scale",
                         [(4, 3, 5e-3, 1.0), (9, 6, 5e-3, 0.1),
                          (16, 8, 0.05, 1.0), (7, 11, 1.0, 2.0)])
def test_barlow_matches_numpy(b, d, lambd, scale):
  z1, z2 = _pair(b * 7 + d, b, d, std=1.7)
  fn = jax.jit(lambda x, y: barlow_twins_loss(x, y, lambd=lambd, scale=scale))
  loss, m = fn(z1, z2)
  ref, on, off = np_barlow(z1, z2, lambd, scale)
  np.testing.assert_allclose(loss, ref, rtol=2e-5, atol=1e-5)
  np.testing.assert_allclose(m["on_diag"], on, rtol=2e-5, atol=1e-5)
  np.testing.assert_allclose(m["off_diag"], off, rtol=2e-5, atol=1e-5)


def test_barlow_eps_is_a_keyword_and_matches_reference():
  z1, z2 = _pair(5, 6, 3, std=0.01)  # Var ~ 1e-4: eps = 1e-3 matters
  loss, _ = barlow_twins_loss(z1, z2, eps=1e-3)
  np.testing.assert_allclose(loss, np_barlow(z1, z2, 5e-3, 1.0, 1e-3)[0],
                             rtol=2e-5)
  assert abs(float(loss) - float(barlow_twins_loss(z1, z2)[0])) > 1e-2


def test_barlow_invariant_to_per_dimension_affine_maps():
  b, d = 16, 6
  z1, z2 = _pair(6, b, d)
  rng = np.random.default_rng(7)
  ref, _ = barlow_twins_loss(z1, z2)
  # Different positive scales and shifts per view: C is unchanged.
  a1, a2 = rng.uniform(0.5, 4.0, size=(2, d))
  c1, c2 = rng.normal(size=(2, d)) * 5
  out, _ = barlow_twins_loss(z1 * a1 + c1, z2 * a2 + c2)
  np.testing.assert_allclose(out, ref, rtol=1e-4)
  # A sign flip shared by both views only flips signs of off-diagonals.
  s = rng.choice([-1.0, 1.0], size=d) * rng.uniform(0.5, 2.0, size=d)
  out, _ = barlow_twins_loss(z1 * s, z2 * s)
  np.testing.assert_allclose(out, ref, rtol=1e-4)


def test_barlow_batch_permutation_invariance():
  z1, z2 = _pair(8, 12, 5)
  perm = np.random.default_rng(9).permutation(12)
  a, _ = barlow_twins_loss(z1, z2)
  b, _ = barlow_twins_loss(z1[perm], z2[perm])
  np.testing.assert_allclose(a, b, rtol=1e-5)


def test_barlow_whitened_identical_views_give_zero():
  b, d = 16, 6
  rng = np.random.default_rng(10)
  x = rng.normal(size=(b, d))
  x -= x.mean(0)
  q, _ = np.linalg.qr(x)  # orthonormal, zero-mean columns
  z = (q * np.sqrt(b)).astype(np.float32)  # biased variance 1, decorrelated
  loss, m = barlow_twins_loss(z, z, lambd=1.0)
  assert float(loss) < 1e-6
  np.testing.assert_allclose(m["corr_diag_mean"], 1.0, atol=1e-4)
  # Anti-aligned views: every C_ii = -1, so on_diag = 4·d.
  _, m = barlow_twins_loss(z, -z)
  np.testing.assert_allclose(m["on_diag"], 4.0 * d, rtol=1e-4)


def test_barlow_scale_is_linear():
  z1, z2 = _pair(11, 8, 4)
  a, _ = barlow_twins_loss(z1, z2)
  b, _ = barlow_twins_loss(z1, z2, scale=0.1)
  np.testing.assert_allclose(b, 0.1 * a, rtol=1e-6)


def test_barlow_gradients_finite_with_constant_dimension():
  z1, z2 = _pair(12, 8, 4)
  z1[:, 2] = 3.0  # zero variance in one dimension
  g1, g2 = jax.grad(lambda x, y: barlow_twins_loss(x, y)[0],
                    argnums=(0, 1))(z1, z2)
  assert np.all(np.isfinite(g1)) and np.all(np.isfinite(g2))
  assert np.abs(g2).sum() > 0
