"""Optimiser construction, LR/EMA schedules and LARS exclusions."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mdssl_jax import config_lib
from mdssl_jax import optim


def optim_cfg(**kw):
  """The schema's `config.optim` (LARS, base lr 0.3) with wd 1e-2 and `kw`."""
  cfg = config_lib.get_default_config().optim
  cfg.update({"weight_decay": 1e-2, "warmup_steps": 10,
              "warmup_epochs": -1.0, **kw})
  return cfg


def test_peak_lr_scaling():
  assert optim.peak_learning_rate(optim_cfg(), 512) == pytest.approx(0.6)
  assert optim.peak_learning_rate(optim_cfg(lr_scaling="sqrt", base_lr=0.075),
                                  4096) == pytest.approx(4.8)
  assert optim.peak_learning_rate(optim_cfg(lr_scaling="none", base_lr=4.0),
                                  4096, multiplier=2) == pytest.approx(8.0)
  with pytest.raises(ValueError, match="lr_scaling"):
    optim.peak_learning_rate(optim_cfg(lr_scaling="log"), 256)


def test_warmup_cosine_values():
  f = optim.warmup_cosine(1.0, total_steps=110, warmup_steps=10,
                          end_factor=0.1)
  np.testing.assert_allclose([f(0), f(5), f(10), f(60), f(110)],
                             [0.0, 0.5, 1.0, 0.55, 0.1], atol=1e-6)


def test_run_shape_epochs_and_steps():
  c = config_lib.get_default_config()
  c.data.per_domain_batch = 10  # 3 domains: 30 images per step.
  c.total_steps, c.total_epochs = -1, 2.5
  c.optim.warmup_steps, c.optim.warmup_epochs = -1, 0.5
  shape = config_lib.run_shape(c, num_train_examples=1200)
  assert (shape.global_batch, shape.steps_per_epoch) == (30, 40.0)
  assert (shape.total_steps, shape.warmup_steps) == (100, 20)
  c.total_steps = 30
  c.optim.warmup_steps = 3
  shape = config_lib.run_shape(c, num_train_examples=1200)
  assert (shape.total_steps, shape.warmup_steps) == (30, 3)


def test_ema_schedule_cosine_and_constant():
  f = optim.ema_schedule(0.99, total_steps=100)
  np.testing.assert_allclose([f(0), f(50), f(100)], [0.99, 0.995, 1.0],
                             atol=1e-7)
  assert float(optim.ema_schedule(0.9, 100, "constant")(40)) == pytest.approx(
      0.9)
  with pytest.raises(ValueError):
    optim.ema_schedule(1.5, 10)


def _np_lars_step(w, g, m, lr, wd, eta, mu, adapt):
  """One METHODS.md §1.2 step in float64: lr applied after the momentum."""
  if adapt:
    g = g + wd * w  # 1. g' = g + wd·w.
    wn, gn = np.linalg.norm(w), np.linalg.norm(g)
    g = (eta * wn / gn if wn > 0 and gn > 0 else 1.0) * g  # 2. r·g'.
  m = mu * m + g  # 3. m <- mu·m + r·g'.
  return w - lr * m, m  # 4. w <- w - lr_t·m.


def _lars_params(rng):
  """Adapted leaves (conv, dense, an all-zero matrix: r = 1) and excluded
  ones (BN scale/offset, a dense bias)."""
  params = {"conv": {"kernel": rng.normal(size=(3, 3, 2, 4))},
            "dense": {"kernel": rng.normal(size=(6, 5)) * 0.1,
                      "bias": rng.normal(size=5)},
            "zero": {"kernel": np.zeros((3, 2))},
            "bn": {"scale": rng.normal(size=4), "bias": rng.normal(size=4)}}
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)


def _run(tx, params, grads):
  """Applies `tx` to a gradient sequence: (final params, every update)."""
  state, steps = tx.init(params), []
  for g in grads:
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
    steps.append(updates)
  return params, steps


def test_lars_matches_reference_order_over_warmup():
  # 10-step linear warm-up then cosine: plain LARS (clip_lr=False) must take
  # the §1.2 steps, lr applied after the momentum trace; biases and norm
  # parameters get plain momentum SGD without decay or trust ratio.
  rng = np.random.default_rng(0)
  params = _lars_params(rng)
  steps, wd, eta = 14, 1e-2, 1e-3
  grads = [jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape),
                                              jnp.float32), params)
           for _ in range(steps)]
  cfg = optim_cfg(base_lr=2.0, weight_decay=wd, trust_coefficient=eta)
  tx, lr_fn = optim.make_optimizer(cfg, total_steps=100, warmup_steps=10,
                                   global_batch=256)
  got, got_steps = _run(tx, params, grads)
  ref_w = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  ref_m = jax.tree.map(np.zeros_like, ref_w)
  paths = [(a, b) for a in ref_w for b in ref_w[a]]
  for step, g in enumerate(grads):
    lr = float(lr_fn(step))
    for a, b in paths:
      w = ref_w[a][b]
      ref_w[a][b], ref_m[a][b] = _np_lars_step(
          w, np.asarray(g[a][b], np.float64), ref_m[a][b], lr, wd, eta, 0.9,
          adapt=w.ndim > 1)
      # Each step's update -lr_t·m to ~1e-6 of its size (float32 vs 64).
      want = ref_w[a][b] - w
      np.testing.assert_allclose(got_steps[step][a][b], want, rtol=0,
                                 atol=1e-6 * np.abs(want).max() + 1e-12,
                                 err_msg=f"step {step} {a}/{b}")
  assert float(lr_fn(0)) == 0.0 and float(lr_fn(10)) == pytest.approx(2.0)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6),
               got, ref_w)
  # optax.lars (lr before the momentum) takes different steps under warm-up.
  mask = optim._matrix_mask  # pylint: disable=protected-access
  old, _ = _run(optax.lars(lr_fn, weight_decay=wd, weight_decay_mask=mask,
                           trust_coefficient=eta, trust_ratio_mask=mask,
                           momentum=0.9), params, grads)
  moved = ref_w["dense"]["kernel"] - np.asarray(params["dense"]["kernel"])
  old_moved = np.asarray(old["dense"]["kernel"] - params["dense"]["kernel"])
  assert np.abs(old_moved - moved).max() > 0.05 * np.abs(moved).max()


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_other_optimizers_skip_decay_on_vectors(name):
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones((2,))}
  tx, _ = optim.make_optimizer(optim_cfg(name=name, weight_decay=0.5),
                               total_steps=10, warmup_steps=0,
                               global_batch=256)
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  assert float(jnp.abs(updates["b"]).max()) == 0.0  # No decay on biases.
  assert float(jnp.abs(updates["w"]).max()) > 0.0


def test_unknown_optimizer():
  with pytest.raises(ValueError, match="optim.name"):
    optim.make_optimizer(optim_cfg(name="adam"), total_steps=10,
                         warmup_steps=0, global_batch=256)


def test_solo_learn_clipped_lars_matches_reference():
  rng = np.random.default_rng(1)
  params = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=3), jnp.float32)}
  cfg = optim_cfg(clip_lr=True, trust_coefficient=0.02, weight_decay=1e-4,
                  base_lr=0.4)
  tx, lr_fn = optim.make_optimizer(cfg, total_steps=50, warmup_steps=5,
                                   global_batch=256)
  state = tx.init(params)
  ref = jax.tree.map(np.asarray, params)
  mom = jax.tree.map(np.zeros_like, ref)
  for step in range(4):
    grads = {k: jnp.asarray(rng.normal(size=v.shape) * 10 ** step,
                            jnp.float32) for k, v in params.items()}
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    lr = float(lr_fn(step))
    for k in ref:
      g = np.asarray(grads[k], np.float64)
      w = ref[k]
      if k == "w":  # Matrices: decay + clipped trust ratio.
        wn, gn = np.linalg.norm(w), np.linalg.norm(g)
        r = 0.02 * wn / (gn + 1e-4 * wn + 1e-8)
        g = (g + 1e-4 * w) * min(r / max(lr, 1e-12), 1.0)
      mom[k] = 0.9 * mom[k] + g
      ref[k] = w - lr * mom[k]
  for k in ref:
    np.testing.assert_allclose(params[k], ref[k], rtol=1e-4, atol=1e-6)
