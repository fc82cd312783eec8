"""Collapse monitor against a float64 NumPy reference and known regimes."""

import math

import jax
import numpy as np
import pytest

from mdssl_jax.losses.monitor import (collapse_monitor, effective_rank,
                                      is_collapsed)


def _n(x):
  x = np.asarray(x, np.float64)
  return x / np.sqrt((x * x).sum(-1, keepdims=True) + 1e-12)


def np_monitor(z, z2=None):
  """Loop-based reference from the brief's definitions."""
  zn = _n(z)
  b, d = zn.shape
  stds = []
  for j in range(d):
    m = zn[:, j].mean()
    stds.append(np.sqrt(((zn[:, j] - m) ** 2).mean()))
  z_std = float(np.mean(stds))
  s = np.linalg.svd(zn - zn.mean(0), compute_uv=False)
  p = s / s.sum()
  entropy = -sum(pk * math.log(pk) for pk in p if pk > 0)
  kernel = [math.exp(-2.0 * ((zn[i] - zn[j]) ** 2).sum())
            for i in range(b) for j in range(b) if i != j]
  out = {"z_std": z_std, "z_std_ratio": z_std * math.sqrt(d),
         "effective_rank": math.exp(entropy),
         "uniformity": math.log(np.mean(kernel))}
  if z2 is not None:
    z2n = _n(z2)
    out["alignment"] = np.mean([((zn[i] - z2n[i]) ** 2).sum()
                                for i in range(b)])
  return out


@pytest.mark.parametrize("b,d,with_z2", [(5, 3, True), (12, 8, False),
                                         (20, 6, True)])
def test_monitor_matches_numpy(b, d, with_z2):
  rng = np.random.default_rng(b + d)
  # Anisotropic, off-centre embeddings so every metric is non-trivial.
  z = (rng.normal(size=(b, d)) * rng.uniform(0.2, 2.0, size=d)
       + rng.normal(size=d)).astype(np.float32)
  z2 = (z + 0.3 * rng.normal(size=(b, d))).astype(np.float32)
  args = (z, z2) if with_z2 else (z,)
  out = jax.jit(collapse_monitor)(*args)
  ref = np_monitor(*args)
  assert set(out) == set(ref)
  for key, value in ref.items():
    np.testing.assert_allclose(out[key], value, rtol=1e-4, atol=1e-6,
                               err_msg=key)


def test_gaussian_embeddings_are_healthy():
  z = np.random.default_rng(0).normal(size=(256, 16)).astype(np.float32)
  m = collapse_monitor(z)
  np.testing.assert_allclose(m["z_std"], 1 / math.sqrt(16), rtol=0.1)
  np.testing.assert_allclose(m["z_std_ratio"], 1.0, atol=0.1)
  assert float(m["effective_rank"]) > 0.85 * 16
  assert float(m["uniformity"]) < -3.0  # well spread on S^15
  assert not is_collapsed(m)


def test_complete_collapse_is_detected():
  rng = np.random.default_rng(1)
  base = rng.normal(size=(1, 32))
  z = (base + 1e-4 * rng.normal(size=(128, 32))).astype(np.float32)
  m = collapse_monitor(z)
  assert float(m["z_std_ratio"]) < 0.01
  assert abs(float(m["uniformity"])) < 1e-3  # all points coincide
  assert is_collapsed(m)
  exact = np.tile(base, (16, 1)).astype(np.float32)  # σ all 0
  m = collapse_monitor(exact)
  assert all(np.isfinite(float(v)) for v in m.values())
  np.testing.assert_allclose(m["effective_rank"], 1.0, atol=1e-6)
  assert is_collapsed(m)


def test_dimensional_collapse_to_rank_one_is_detected():
  rng = np.random.default_rng(2)
  u = rng.normal(size=16)
  scale = rng.choice([-1.0, 1.0], size=128) * rng.uniform(0.5, 2, size=128)
  z = (np.outer(scale, u) + 1e-5 * rng.normal(size=(128, 16))).astype(
      np.float32)
  m = collapse_monitor(z)
  # Rows point along ±u: the spread survives but the rank does not.
  assert float(m["z_std_ratio"]) > 0.1
  np.testing.assert_allclose(m["effective_rank"], 1.0, atol=0.05)
  assert is_collapsed(m)
  assert not is_collapsed(m, min_effective_rank=0.5)


def test_effective_rank_of_known_spectra():
  eye = np.eye(5, dtype=np.float32)
  np.testing.assert_allclose(effective_rank(eye), 5.0, rtol=1e-5)
  two = np.diag([3.0, 1.0, 0.0]).astype(np.float32)
  p = np.array([0.75, 0.25])
  np.testing.assert_allclose(effective_rank(two),
                             math.exp(-(p * np.log(p)).sum()), rtol=1e-5)


def test_alignment():
  rng = np.random.default_rng(3)
  z = rng.normal(size=(10, 4)).astype(np.float32)
  m = collapse_monitor(z, 3.0 * z)  # same directions
  np.testing.assert_allclose(m["alignment"], 0.0, atol=1e-6)
  m = collapse_monitor(z, -z)  # antipodal: ‖a − (−a)‖² = 4
  np.testing.assert_allclose(m["alignment"], 4.0, rtol=1e-5)
  assert "alignment" not in collapse_monitor(z)


def test_no_gradient_flows_through_monitor():
  z = np.random.default_rng(4).normal(size=(6, 3)).astype(np.float32)
  g = jax.grad(lambda x: sum(collapse_monitor(x, x + 1.0).values()))(z)
  assert np.all(np.asarray(g) == 0.0)


def test_is_collapsed_checks_inputs_and_nan():
  assert is_collapsed({"z_std_ratio": float("nan"), "effective_rank": 5.0})
  assert not is_collapsed({"z_std_ratio": 0.5, "effective_rank": 3.0})
  assert is_collapsed({"z_std_ratio": 0.5, "effective_rank": 3.0},
                      min_std_ratio=0.6)
  with pytest.raises(ValueError, match="effective_rank"):
    is_collapsed({"z_std_ratio": 1.0})


def test_monitor_bad_inputs_raise():
  z = np.zeros((4, 3), np.float32)
  with pytest.raises(ValueError, match=r"\[B, d\]"):
    collapse_monitor(z[None])
  with pytest.raises(ValueError, match="at least 2"):
    collapse_monitor(z[:1])
  with pytest.raises(ValueError, match="shape of z"):
    collapse_monitor(z, z[:, :2])
