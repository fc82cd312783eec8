"""Tests for mdssl_jax.losses.distillation (BYOL, MoCo v3, DINO).

Each loss is compared with an independent float64 NumPy reference written
with explicit loops over views, pairs and images.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdssl_jax.losses.distillation import (
    byol_loss,
    dino_center_update,
    dino_loss,
    mocov3_loss,
    teacher_temperature,
)

RTOL = 2e-5
ATOL = 2e-5

# Jitted once per shape: far cheaper than op-by-op dispatch on a busy CPU, and
# it checks that the losses trace. Bad-input tests call the raw functions.
_byol = jax.jit(byol_loss)
_mocov3 = jax.jit(mocov3_loss, static_argnames="temperature")
_dino = jax.jit(dino_loss, static_argnames=("student_temp", "teacher_temp"))


def jgrad(f, argnums=0):
  return jax.jit(jax.grad(f, argnums=argnums))


# ---------------------------------------------------------------------------
# Independent NumPy references (float64, loops).


def np_normalize(x):
  return x / np.sqrt(np.sum(x * x) + 1e-12)


def np_lse(x):
  m = np.max(x)
  return m + np.log(np.sum(np.exp(x - m)))


def np_log_softmax(x):
  return x - np_lse(x)


def ref_byol(preds, targets):
  v_count, b, _ = preds.shape
  total = 0.0
  for v in range(v_count):
    for w in range(v_count):
      if v == w:
        continue
      for i in range(b):
        diff = np_normalize(preds[v, i]) - np_normalize(targets[w, i])
        total += np.sum(diff * diff)
  return 2.0 * total / (v_count * (v_count - 1) * b)


def ref_ctr(q, k, tau):
  b = q.shape[0]
  total = 0.0
  for i in range(b):
    qi = np_normalize(q[i])
    logits = np.array([qi @ np_normalize(k[j]) / tau for j in range(b)])
    total += -logits[i] + np_lse(logits)
  return total / b


def ref_mocov3(queries, keys, tau):
  return 2 * tau * (ref_ctr(queries[0], keys[1], tau)
                    + ref_ctr(queries[1], keys[0], tau))


def ref_dino(student, teacher, center, tau_s, tau_t):
  vs, b, _ = student.shape
  vg = teacher.shape[0]
  total, count = 0.0, 0
  for g in range(vg):
    for v in range(vs):
      if v == g:
        continue
      for i in range(b):
        pt = np.exp(np_log_softmax((teacher[g, i] - center) / tau_t))
        log_ps = np_log_softmax(student[v, i] / tau_s)
        total += -np.sum(pt * log_ps)
        count += 1
  return total / count


def rand(rng, *shape, scale=1.0):
  """float32-representable float64 array (both sides see the same values)."""
  x = rng.normal(size=shape) * scale
  return x.astype(np.float32).astype(np.float64)


# ---------------------------------------------------------------------------
# BYOL.


@pytest.mark.parametrize("v,b,d,seed", [(2, 4, 8, 0), (2, 7, 3, 1),
                                        (3, 5, 6, 2), (4, 3, 16, 3)])
def test_byol_matches_reference(v, b, d, seed):
  rng = np.random.default_rng(seed)
  p, t = rand(rng, v, b, d), rand(rng, v, b, d, scale=3.0)
  loss, metrics = _byol(jnp.asarray(p, jnp.float32),
                            jnp.asarray(t, jnp.float32))
  assert loss.dtype == jnp.float32 and loss.shape == ()
  np.testing.assert_allclose(loss, ref_byol(p, t), rtol=RTOL, atol=ATOL)
  # For normalised vectors ‖p − t‖² = 2 − 2 cos: loss = 2·(2 − 2·align).
  np.testing.assert_allclose(loss, 4.0 - 4.0 * metrics["align"], atol=1e-5)


def test_byol_two_view_equals_cosine_form():
  rng = np.random.default_rng(10)
  p, t = rand(rng, 2, 6, 5), rand(rng, 2, 6, 5)
  cos = lambda x, y: np_normalize(x) @ np_normalize(y)
  expected = np.mean([4 - 2 * cos(p[0, i], t[1, i]) - 2 * cos(p[1, i], t[0, i])
                      for i in range(6)])
  loss, _ = _byol(jnp.asarray(p, jnp.float32), jnp.asarray(t, jnp.float32))
  np.testing.assert_allclose(loss, expected, rtol=RTOL, atol=ATOL)


def test_byol_invariances():
  rng = np.random.default_rng(11)
  p, t = rand(rng, 3, 5, 4), rand(rng, 3, 5, 4)
  base, _ = _byol(jnp.asarray(p), jnp.asarray(t))
  # Positive per-row rescaling does not change normalised vectors.
  scale = rng.uniform(0.1, 10.0, size=(3, 5, 1))
  scaled, _ = _byol(jnp.asarray(p * scale), jnp.asarray(t / scale))
  np.testing.assert_allclose(scaled, base, rtol=1e-5)
  # Permuting the batch consistently in both inputs.
  perm = rng.permutation(5)
  permuted, _ = _byol(jnp.asarray(p[:, perm]), jnp.asarray(t[:, perm]))
  np.testing.assert_allclose(permuted, base, rtol=1e-5)
  # Identical views everywhere: perfect prediction, zero loss.
  same = np.broadcast_to(p[:1], p.shape)
  zero, metrics = _byol(jnp.asarray(same), jnp.asarray(same * 2.0))
  np.testing.assert_allclose(zero, 0.0, atol=1e-5)
  np.testing.assert_allclose(metrics["align"], 1.0, atol=1e-6)


def test_byol_gradients():
  rng = np.random.default_rng(12)
  p = jnp.asarray(rand(rng, 2, 4, 6), jnp.float32)
  t = jnp.asarray(rand(rng, 2, 4, 6), jnp.float32)
  g_p, g_t = jgrad(lambda a, b: _byol(a, b)[0], argnums=(0, 1))(p, t)
  np.testing.assert_array_equal(g_t, 0.0)
  assert np.all(np.isfinite(g_p)) and np.abs(g_p).max() > 1e-3
  # A zero prediction (dead unit) still has a finite gradient.
  g_zero = jgrad(lambda a: _byol(a, t)[0])(p.at[0, 0].set(0.0))
  assert np.all(np.isfinite(g_zero))


def test_byol_bf16_inputs_compute_in_fp32():
  rng = np.random.default_rng(13)
  p = jnp.asarray(rand(rng, 2, 4, 8), jnp.bfloat16)
  t = jnp.asarray(rand(rng, 2, 4, 8), jnp.bfloat16)
  loss, _ = _byol(p, t)
  assert loss.dtype == jnp.float32
  expected = ref_byol(np.asarray(p, np.float64), np.asarray(t, np.float64))
  np.testing.assert_allclose(loss, expected, rtol=RTOL, atol=ATOL)
  g = jgrad(lambda a: _byol(a, t)[0])(p)
  assert g.dtype == jnp.bfloat16 and np.all(np.isfinite(np.float32(g)))


def test_byol_rejects_bad_shapes():
  with pytest.raises(ValueError, match="same"):
    byol_loss(jnp.zeros((2, 4, 8)), jnp.zeros((2, 4, 7)))
  with pytest.raises(ValueError, match=r"\[V, B, d\]"):
    byol_loss(jnp.zeros((4, 8)), jnp.zeros((4, 8)))
  with pytest.raises(ValueError, match="V ≥ 2"):
    byol_loss(jnp.zeros((1, 4, 8)), jnp.zeros((1, 4, 8)))


# ---------------------------------------------------------------------------
# MoCo v3.


@pytest.mark.parametrize("b,d,tau,seed", [(4, 8, 1.0, 0), (6, 3, 0.2, 1),
                                          (3, 16, 0.1, 2), (1, 4, 0.5, 3)])
def test_mocov3_matches_reference(b, d, tau, seed):
  rng = np.random.default_rng(seed)
  q, k = rand(rng, 2, b, d), rand(rng, 2, b, d, scale=2.0)
  loss, metrics = _mocov3(jnp.asarray(q, jnp.float32),
                              jnp.asarray(k, jnp.float32), temperature=tau)
  assert loss.shape == () and loss.dtype == jnp.float32
  np.testing.assert_allclose(loss, ref_mocov3(q, k, tau), rtol=RTOL,
                             atol=ATOL)
  expected_align = np.mean(
      [np_normalize(q[v, i]) @ np_normalize(k[1 - v, i])
       for v in range(2) for i in range(b)])
  np.testing.assert_allclose(metrics["align"], expected_align, atol=1e-6)


@pytest.mark.parametrize("tau", [1.0, 0.2])
def test_mocov3_closed_form_with_2tau_factor(tau):
  # Orthonormal queries equal to their keys: every ctr term is
  # −1/τ + log(e^{1/τ} + B − 1), and the total carries the 2τ factor.
  b = 5
  eye = np.eye(8)[:b]
  x = jnp.asarray(np.stack([eye, eye]), jnp.float32)
  loss, metrics = _mocov3(x, x, temperature=tau)
  ctr = -1.0 / tau + np.log(np.exp(1.0 / tau) + b - 1)
  np.testing.assert_allclose(loss, 2 * tau * 2 * ctr, rtol=1e-5)
  np.testing.assert_allclose(metrics["acc"], 1.0)


def test_mocov3_batch_permutation_invariance():
  rng = np.random.default_rng(5)
  q, k = rand(rng, 2, 7, 5), rand(rng, 2, 7, 5)
  perm = rng.permutation(7)
  base, _ = _mocov3(jnp.asarray(q), jnp.asarray(k), temperature=0.2)
  permuted, _ = _mocov3(jnp.asarray(q[:, perm]), jnp.asarray(k[:, perm]),
                            temperature=0.2)
  np.testing.assert_allclose(permuted, base, rtol=1e-5)
  # Swapping the two views is also a symmetry of the symmetrised loss.
  swapped, _ = _mocov3(jnp.asarray(q[::-1]), jnp.asarray(k[::-1]),
                           temperature=0.2)
  np.testing.assert_allclose(swapped, base, rtol=1e-5)


def test_mocov3_gradients_and_extreme_temperature():
  rng = np.random.default_rng(6)
  q = jnp.asarray(rand(rng, 2, 6, 4), jnp.float32)
  k = jnp.asarray(rand(rng, 2, 6, 4), jnp.float32)
  f = lambda a, b: _mocov3(a, b, temperature=0.01)[0]
  loss = f(q, k)
  g_q, g_k = jgrad(f, argnums=(0, 1))(q, k)
  np.testing.assert_array_equal(g_k, 0.0)
  assert np.isfinite(loss) and np.all(np.isfinite(g_q))
  assert np.abs(g_q).max() > 1e-3


def test_mocov3_bf16_and_jit():
  rng = np.random.default_rng(7)
  q = jnp.asarray(rand(rng, 2, 4, 8), jnp.bfloat16)
  k = jnp.asarray(rand(rng, 2, 4, 8), jnp.bfloat16)
  loss, _ = jax.jit(lambda a, b: mocov3_loss(a, b, temperature=0.2))(q, k)
  assert loss.dtype == jnp.float32
  expected = ref_mocov3(np.asarray(q, np.float64), np.asarray(k, np.float64),
                        0.2)
  np.testing.assert_allclose(loss, expected, rtol=RTOL, atol=ATOL)


def test_mocov3_rejects_bad_input():
  with pytest.raises(ValueError, match=r"\[2, B, d\]"):
    mocov3_loss(jnp.zeros((3, 4, 8)), jnp.zeros((3, 4, 8)))
  with pytest.raises(ValueError, match=r"\[2, B, d\]"):
    mocov3_loss(jnp.zeros((2, 4, 8)), jnp.zeros((2, 5, 8)))
  with pytest.raises(ValueError, match="temperature"):
    mocov3_loss(jnp.zeros((2, 4, 8)), jnp.zeros((2, 4, 8)), temperature=0.0)


# ---------------------------------------------------------------------------
# DINO.


@pytest.mark.parametrize("vs,vg,b,k,tau_s,tau_t,seed", [
    (2, 2, 3, 5, 0.1, 0.04, 0),
    (4, 2, 3, 6, 0.1, 0.07, 1),
    (3, 1, 2, 4, 0.2, 0.05, 2),
    (6, 2, 4, 16, 0.1, 0.04, 3),
])
def test_dino_matches_reference(vs, vg, b, k, tau_s, tau_t, seed):
  rng = np.random.default_rng(seed)
  s, t = rand(rng, vs, b, k), rand(rng, vg, b, k)
  c = rand(rng, k, scale=0.5)
  loss, metrics = _dino(
      jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32),
      jnp.asarray(c, jnp.float32), student_temp=tau_s, teacher_temp=tau_t)
  assert loss.shape == () and loss.dtype == jnp.float32
  np.testing.assert_allclose(loss, ref_dino(s, t, c, tau_s, tau_t), rtol=RTOL,
                             atol=ATOL)
  h_t = np.mean([-np.sum(np.exp(np_log_softmax((t[g, i] - c) / tau_t))
                         * np_log_softmax((t[g, i] - c) / tau_t))
                 for g in range(vg) for i in range(b)])
  np.testing.assert_allclose(metrics["teacher_entropy"], h_t, rtol=1e-4,
                             atol=1e-5)
  np.testing.assert_allclose(metrics["kl"], loss - h_t, atol=1e-4)
  assert float(metrics["kl"]) >= -1e-5  # Cross-entropy ≥ entropy.


def test_dino_skips_same_view_pairs():
  # With Vs = Vg = 2 the only pairs are (teacher 0, student 1) and
  # (teacher 1, student 0): teacher view 0 must not affect student view 0.
  rng = np.random.default_rng(20)
  s = jnp.asarray(rand(rng, 2, 3, 5), jnp.float32)
  t = jnp.asarray(rand(rng, 2, 3, 5), jnp.float32)
  c = jnp.zeros((5,))
  grad_s = lambda tt: jgrad(
      lambda x: _dino(x, tt, c, teacher_temp=0.05)[0])(s)
  t_other = t.at[0].set(jnp.asarray(rand(rng, 3, 5), jnp.float32))
  g1, g2 = grad_s(t), grad_s(t_other)
  np.testing.assert_allclose(g1[0], g2[0], atol=1e-7)
  assert np.abs(np.asarray(g1[1] - g2[1])).max() > 1e-3


def test_dino_centering_and_shift_invariance():
  rng = np.random.default_rng(21)
  s, t = rand(rng, 4, 3, 6), rand(rng, 2, 3, 6)
  c = rand(rng, 6)
  f = lambda s_, t_, c_: _dino(jnp.asarray(s_), jnp.asarray(t_),
                                   jnp.asarray(c_), teacher_temp=0.04)[0]
  base = f(s, t, c)
  np.testing.assert_allclose(f(s, t - c, np.zeros(6)), base, rtol=1e-5)
  # Softmax ignores constants added per row, on either side.
  shift_t = rng.normal(size=(2, 3, 1))
  shift_s = rng.normal(size=(4, 3, 1))
  np.testing.assert_allclose(f(s + shift_s, t + shift_t, c), base, rtol=1e-5)


def test_dino_gradients_stop_at_teacher_and_match_analytic():
  rng = np.random.default_rng(22)
  vs, vg, b, k, tau_s, tau_t = 3, 2, 4, 5, 0.1, 0.04
  s, t, c = rand(rng, vs, b, k), rand(rng, vg, b, k), rand(rng, k)
  args = [jnp.asarray(x, jnp.float32) for x in (s, t, c)]
  grads = jgrad(
      lambda s_, t_, c_: _dino(s_, t_, c_, student_temp=tau_s,
                                   teacher_temp=tau_t)[0],
      argnums=(0, 1, 2))(*args)
  np.testing.assert_array_equal(grads[1], 0.0)
  np.testing.assert_array_equal(grads[2], 0.0)
  # dL/ds[v, i] = Σ_{g≠v} (softmax(s[v, i]/τ_s) − P_t[g, i]) / (τ_s · N).
  n_terms = (vg * vs - vg) * b
  expected = np.zeros_like(s)
  for v in range(vs):
    for i in range(b):
      ps = np.exp(np_log_softmax(s[v, i] / tau_s))
      for g in range(vg):
        if g != v:
          pt = np.exp(np_log_softmax((t[g, i] - c) / tau_t))
          expected[v, i] += (ps - pt) / (tau_s * n_terms)
  np.testing.assert_allclose(grads[0], expected, rtol=1e-4, atol=1e-5)


def test_dino_extreme_logits_and_bf16():
  rng = np.random.default_rng(23)
  s = jnp.asarray(rand(rng, 4, 3, 8, scale=200.0), jnp.float32)
  t = jnp.asarray(rand(rng, 2, 3, 8, scale=200.0), jnp.float32)
  c = jnp.zeros((8,))
  f = lambda x: _dino(x, t, c, student_temp=0.1, teacher_temp=0.04)
  (loss, metrics), g = jax.jit(jax.value_and_grad(f, has_aux=True))(s)
  assert np.isfinite(loss) and np.all(np.isfinite(g))
  assert all(np.isfinite(m) for m in metrics.values())
  # bf16 inputs: identical to the fp32 computation on the rounded values.
  s16, t16 = s.astype(jnp.bfloat16) / 100, t.astype(jnp.bfloat16) / 100
  loss16, _ = _dino(s16, t16, c.astype(jnp.bfloat16), teacher_temp=0.04)
  assert loss16.dtype == jnp.float32
  expected = ref_dino(np.asarray(s16, np.float64), np.asarray(t16, np.float64),
                      np.zeros(8), 0.1, 0.04)
  np.testing.assert_allclose(loss16, expected, rtol=RTOL, atol=ATOL)
  g16 = jgrad(lambda x: _dino(x, t16, c, teacher_temp=0.04)[0])(s16)
  assert np.all(np.isfinite(np.float32(g16)))


def test_dino_jit_with_scheduled_teacher_temp():
  rng = np.random.default_rng(24)
  s, t = rand(rng, 2, 3, 4), rand(rng, 2, 3, 4)

  @jax.jit
  def f(step, s_, t_):
    tau_t = teacher_temperature(step, warmup_steps=10)
    return dino_loss(s_, t_, jnp.zeros(4), teacher_temp=tau_t)[0]

  for step, tau_t in [(0, 0.04), (5, 0.055), (30, 0.07)]:
    np.testing.assert_allclose(
        f(jnp.asarray(step), jnp.asarray(s, jnp.float32),
          jnp.asarray(t, jnp.float32)),
        ref_dino(s, t, np.zeros(4), 0.1, tau_t), rtol=RTOL, atol=ATOL)


def test_dino_rejects_bad_input():
  s, t, c = jnp.zeros((4, 3, 6)), jnp.zeros((2, 3, 6)), jnp.zeros((6,))
  with pytest.raises(ValueError, match="Vg"):
    dino_loss(s[:1], t, c, teacher_temp=0.04)
  with pytest.raises(ValueError, match="Vs=1"):
    dino_loss(s[:1], t[:1], c, teacher_temp=0.04)
  with pytest.raises(ValueError, match="center"):
    dino_loss(s, t, jnp.zeros((5,)), teacher_temp=0.04)
  with pytest.raises(ValueError, match="teacher_temp"):
    dino_loss(s, t, c, teacher_temp=0.0)
  with pytest.raises(ValueError, match="teacher_logits"):
    dino_loss(s, jnp.zeros((2, 4, 6)), c, teacher_temp=0.04)


def test_dino_center_update():
  rng = np.random.default_rng(25)
  t, c = rand(rng, 2, 5, 7), rand(rng, 7)
  for m in (0.9, 0.0, 1.0):
    new = dino_center_update(jnp.asarray(c, jnp.float32),
                             jnp.asarray(t, jnp.bfloat16).astype(jnp.float32),
                             momentum=m)
    t_bf = np.asarray(jnp.asarray(t, jnp.bfloat16), np.float64)
    batch_mean = np.zeros(7)
    for g in range(2):
      for i in range(5):
        batch_mean += t_bf[g, i] / 10
    assert new.shape == (7,) and new.dtype == jnp.float32
    np.testing.assert_allclose(new, m * c + (1 - m) * batch_mean, rtol=1e-5,
                               atol=1e-6)
  with pytest.raises(ValueError, match="momentum"):
    dino_center_update(jnp.asarray(c), jnp.asarray(t), momentum=1.5)
  with pytest.raises(ValueError, match="center"):
    dino_center_update(jnp.zeros((3,)), jnp.asarray(t))


def test_teacher_temperature_schedule():
  sched = lambda s: float(teacher_temperature(s, warmup_steps=30))
  np.testing.assert_allclose(
      [sched(s) for s in (-3, 0, 15, 30, 1000)],
      [0.04, 0.04, 0.055, 0.07, 0.07], rtol=1e-6)
  np.testing.assert_allclose(
      teacher_temperature(7, warmup_start=0.02, final=0.06, warmup_steps=8),
      0.02 + 0.04 * 7 / 8, rtol=1e-6)
  assert float(teacher_temperature(0, warmup_steps=0)) == pytest.approx(0.07)
  traced = jax.jit(lambda s: teacher_temperature(s, warmup_steps=10))
  np.testing.assert_allclose(traced(jnp.arange(12)),
                             np.minimum(0.04 + 0.003 * np.arange(12), 0.07),
                             rtol=1e-6)
  with pytest.raises(ValueError, match="warmup_steps"):
    teacher_temperature(0, warmup_steps=-1)
