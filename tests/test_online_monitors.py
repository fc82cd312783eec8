"""Online monitors: probe, kNN bank, RankMe; wiring through the train step."""

import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdssl_jax import config_lib
from mdssl_jax import online_monitors
from mdssl_jax import presets
from mdssl_jax import sharding as sharding_lib
from mdssl_jax import train
from mdssl_jax import workdir as workdir_lib
from mdssl_jax.data import pipeline, sources
from mdssl_jax.methods import base

KEY = online_monitors.MONITOR_KEY
STEPS = 4


def tiny_config(monitors_on: bool, method: str = "simclr"):
  c = presets.tiny_test_config(config_lib.get_default_config(method),
                               steps=STEPS)
  for name in c.monitors:
    c.monitors[name].enabled = monitors_on
  c.monitors.online_knn.bank_size = 40  # 2.5 batches: the FIFO wraps.
  c.monitors.rankme.every_steps = 2
  c.mesh_shape = 1
  return c


def make_monitors(num_classes=(3, 4), probe_lr=1e-3, **knn):
  c = tiny_config(True)
  c.monitors.online_knn.update(knn)
  c.monitors.online_probe.lr = probe_lr
  return online_monitors.Monitors.create(c, num_classes, feature_dim=6)


# ---- RankMe ------------------------------------------------------------------


def test_rankme_of_rank_k_and_collapsed_matrices():
  fn = jax.jit(online_monitors.rankme)
  rng = np.random.default_rng(0)
  # Rank 5 with equal singular values: p_k = 1/5 + ε -> exp(H) = 5.
  q, _ = np.linalg.qr(rng.standard_normal((64, 5)))
  v, _ = np.linalg.qr(rng.standard_normal((32, 5)))
  assert float(fn(jnp.asarray(q @ v.T * 3.0))) == pytest.approx(5.0, 1e-3)
  # Wide (fewer rows than dimensions) and square matrices alike.
  assert float(fn(jnp.asarray(v @ q.T))) == pytest.approx(5.0, 1e-3)
  assert float(fn(jnp.eye(7))) == pytest.approx(7.0, 1e-3)
  # A random rank-3 matrix: between 1 and 3, near 3.
  low = rng.standard_normal((64, 3)) @ rng.standard_normal((3, 32))
  assert 2.5 < float(fn(jnp.asarray(low))) <= 3.0 + 1e-3
  collapsed = np.tile(rng.standard_normal((1, 32)), (64, 1))
  assert float(fn(jnp.asarray(collapsed))) == pytest.approx(1.0, 1e-3)
  # Zero rows (empty bank slots) change nothing.
  padded = np.concatenate([low, np.zeros((40, 32))])
  assert float(fn(jnp.asarray(padded))) == pytest.approx(
      float(fn(jnp.asarray(low))), 1e-5)


# ---- kNN bank ----------------------------------------------------------------


def knn_reference(query, qdom, bank, blab, bdom, k, temperature):
  """METHODS §6.2 vote with a class-score vector, same domain, valid slots."""
  preds, found = [], []
  for u, d in zip(query, qdom):
    ok = np.flatnonzero((blab >= 0) & (bdom == d))
    if not len(ok):
      preds.append(-1)
      found.append(False)
      continue
    sims = bank[ok] @ u
    top = np.argsort(-sims, kind="stable")[:k]
    scores = np.zeros(blab.max() + 1)
    np.add.at(scores, blab[ok][top], np.exp(sims[top] / temperature))
    preds.append(int(np.argmax(scores)))
    found.append(True)
  return np.array(preds), np.array(found)


def unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_knn_vote_matches_numpy_reference():
  rng = np.random.default_rng(1)
  bank = unit(rng.standard_normal((30, 6))).astype(np.float32)
  blab = rng.integers(0, 4, 30).astype(np.int32)
  blab[[3, 7, 20]] = -1  # Empty / unlabelled slots.
  bdom = rng.integers(0, 2, 30).astype(np.int32)
  query = unit(rng.standard_normal((12, 6))).astype(np.float32)
  qdom = np.array([0, 1] * 5 + [2, 2], np.int32)  # Domain 2: no neighbours.
  for k in (1, 5, 20):
    pred, found = jax.jit(
        online_monitors.knn_vote, static_argnames=("k", "temperature"))(
            query, qdom, bank, blab, bdom, k=k, temperature=0.07)
    want, want_found = knn_reference(query, qdom, bank, blab, bdom, k, 0.07)
    np.testing.assert_array_equal(np.asarray(found), want_found)
    np.testing.assert_array_equal(np.asarray(pred)[want_found],
                                  want[want_found])


def test_knn_bank_is_fifo_and_classifies_before_inserting():
  mon = make_monitors(bank_size=12, k=3, temperature=0.1)
  state = mon.init()
  assert set(state) == {"probe", "knn", "rankme"}
  update = jax.jit(mon.update)
  rng = np.random.default_rng(2)
  batches = []
  for _ in range(3):
    feats = rng.standard_normal((8, 6)).astype(np.float32)
    batch = {"label": rng.integers(0, 3, 8).astype(np.int32),
             "domain": np.repeat(np.arange(2, dtype=np.int32), 4)}
    batch["label"][0] = -1  # An unlabelled row: stored, never voted for.
    bank = jax.device_get(state["knn"])
    state, metrics = update(state, feats, batch, jnp.int32(len(batches)))
    pred, found = knn_reference(unit(feats), batch["domain"],
                                bank["features"], bank["labels"],
                                bank["domains"], 3, 0.1)
    counted = found & (batch["label"] >= 0)
    want = (100.0 * np.sum((pred == batch["label"]) & counted)
            / max(counted.sum(), 1))
    assert float(metrics["online/knn_top1"]) == pytest.approx(want, 1e-5)
    batches.append((unit(feats), batch))
  # 8 + 8 + 8 rows into 12 slots: batch 3 in slots 4..11, batch 2's last
  # four rows in 0..3; the next write starts at slot 0.
  bank = jax.device_get(state["knn"])
  (_, _), (f2, b2), (f3, b3) = batches
  np.testing.assert_allclose(bank["features"][4:], f3, atol=1e-6)
  np.testing.assert_allclose(bank["features"][:4], f2[4:], atol=1e-6)
  np.testing.assert_array_equal(bank["labels"][4:], b3["label"])
  np.testing.assert_array_equal(bank["domains"][:4], b2["domain"][4:])
  assert int(bank["next"]) == 0
  # The first step saw an empty bank.
  assert float(jax.jit(mon.update)(mon.init(), f3, b3, 0)[1][
      "online/knn_top1"]) == 0.0


# ---- Online probe ------------------------------------------------------------


def test_probe_learns_separable_features_within_its_domain():
  mon = make_monitors(probe_lr=0.1)
  rng = np.random.default_rng(3)
  means = rng.standard_normal((2, 4, 6)) * 3
  update = jax.jit(mon.update)
  state, accs = mon.init(), []
  for step in range(30):
    domains = np.repeat(np.arange(2, dtype=np.int32), 16)
    labels = np.concatenate([rng.integers(0, 3, 16), rng.integers(0, 4, 16)])
    feats = means[domains, labels] + 0.3 * rng.standard_normal((32, 6))
    state, m = update(state, feats.astype(np.float32),
                      {"label": labels.astype(np.int32), "domain": domains},
                      jnp.int32(step))
    accs.append(float(m["online/probe_top1"]))
  assert set(m) >= {"online/probe_loss", "online/probe_top1/digits",
                    "online/probe_top1/textures"}
  # Zero init: the first batch is scored before any update (1/C per row).
  assert accs[0] < 50 and np.mean(accs[-5:]) > 95, accs
  # Masking: a domain-1 row never predicts a domain-0 class.
  logits = mon._probe_logits(state["probe"]["params"],
                             jnp.asarray(feats, jnp.float32),
                             jnp.asarray(domains))
  assert int(jnp.min(jnp.argmax(logits[16:], -1))) >= 3
  assert int(jnp.max(jnp.argmax(logits[:16], -1))) < 3


# ---- Through the train step --------------------------------------------------


def _setup(config, domains):
  return train.build_setup(config, train.run_shape(config, domains),
                           train.class_counts(domains))


@pytest.fixture(scope="module")
def stepped():
  """STEPS steps of the same seed and batches, monitors off and on."""
  jax.config.update("jax_threefry_partitionable", True)  # As in training.
  out = {}
  for on in (False, True):
    config = tiny_config(on)
    domains = sources.load_domains(config.data)
    setup = _setup(config, domains)
    mesh = sharding_lib.make_mesh(1)
    state = train.create_state(setup, config, sharding_lib.replicated(mesh))
    init = jax.device_get(state)
    step_fn = train.make_train_step(setup, mesh)
    batches = train.global_batches(
        pipeline.make_train_iterator(config, domains, start_step=0), mesh)
    metrics = []
    for _ in range(STEPS):
      state, m = step_fn(state, next(batches))
      metrics.append(jax.device_get(m))
    out[on] = types.SimpleNamespace(init=init, state=jax.device_get(state),
                                    metrics=metrics, setup=setup)
  return out


def test_ssl_training_is_bit_identical_with_monitors_on(stepped):
  off, on = stepped[False], stepped[True]
  for field in ("params", "batch_stats", "opt_state", "step", "rng"):
    jax.tree.map(np.testing.assert_array_equal, getattr(off.state, field),
                 getattr(on.state, field))
  assert set(off.state.buffers) == set() and set(on.state.buffers) == {KEY}
  for m_off, m_on in zip(off.metrics, on.metrics):
    for k in m_off:
      np.testing.assert_array_equal(m_off[k], m_on[k])
  # The probe trained; nothing of it is in the SSL optimiser state.
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                       on.init.buffers[KEY]["probe"]["params"],
                       on.state.buffers[KEY]["probe"]["params"])
  assert min(jax.tree.leaves(moved)) > 0
  assert (jax.tree.structure(off.state.opt_state)
          == jax.tree.structure(on.state.opt_state))
  last = on.metrics[-1]
  for k in ("online/probe_loss", "online/probe_top1", "online/knn_top1",
            "online/rankme", "online/probe_top1/digits"):
    assert np.isfinite(last[k]), k
  assert 1.0 < last["online/rankme"] < 40
  bank = on.state.buffers[KEY]["knn"]
  assert int(np.sum(bank["labels"] >= 0)) == 40  # 4 × 16 rows > 40 slots.


def test_features_are_view_one_online_backbone_features():
  config = tiny_config(True, "mdssl")
  config.method_args.bn_groups = "per_domain"
  domains = sources.load_domains(config.data)
  batch = next(pipeline.make_train_iterator(config, domains, start_step=0))
  batch = {k: batch[k] for k in ("large", "domain", "label")}
  feats = {}
  for separate in (False, True):
    config.method_args.encode_domains_separately = separate
    setup = _setup(config, domains)
    state = train.create_state(setup, config)

    def features(params, batch_stats, batch, method=setup.method):
      inputs = base.StepInputs(params, batch_stats, {}, {}, {}, batch,
                               jax.random.PRNGKey(0), jnp.int32(0))
      return method.loss_with_features(inputs)[1][1]

    feats[separate] = jax.jit(features)(state.params, state.batch_stats,
                                        batch)
  # Domain d's view 1 alone through the network (per-domain statistics).
  n = config.data.per_domain_batch
  out, _ = setup.method.forward(
      state.params, state.batch_stats,
      setup.method.stack_views(batch["large"][n:]))
  np.testing.assert_allclose(feats[True][n:], out["features"][:n], atol=1e-5)
  np.testing.assert_allclose(feats[False], feats[True], atol=1e-5)


def test_a_loss_that_offers_no_features_is_refused():
  class Bare(base.Method):
    name = "bare"

    def loss(self, inputs):
      out, bs = self.forward(inputs.params, inputs.batch_stats,
                             inputs.batch["large"][:, 0])
      return jnp.mean(out["proj"]), base.StepAux({}, bs, {}, {})

  method = Bare(tiny_config(True), total_steps=1)
  images = jnp.zeros((2, 16, 16, 3))

  def run(images):  # Traced only (eval_shape): the check is at trace time.
    params, bs = method.init(jax.random.PRNGKey(0), images)
    return method.loss_with_features(base.StepInputs(
        params, bs, {}, {}, {}, {"large": images[:, None]},
        jax.random.PRNGKey(0), jnp.int32(0)))

  with pytest.raises(ValueError, match="offer_features"):
    jax.eval_shape(run, images)
  # The capture is closed again: a later plain loss offers into nothing.
  assert method._offered is None


# ---- Whole runs: metrics.jsonl and resume ------------------------------------


def read_log(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_resume_of_a_monitor_free_checkpoint(stepped, tmp_path):
  workdir = str(tmp_path / "run")
  off = tiny_config(False)
  train.train_and_evaluate(off, workdir, max_steps_this_run=2)
  # Turning monitors on is a change of what is trained: refused by default.
  with pytest.raises(workdir_lib.WorkdirError, match="monitors"):
    train.train_and_evaluate(tiny_config(True), workdir)
  on = tiny_config(True)
  on.checkpoint.allow_changes = ("monitors",)
  state = train.train_and_evaluate(on, workdir)
  log = read_log(workdir)
  assert [r["step"] for r in log] == [1, 2, 3, 4]
  assert not any(k.startswith("online/") for k in log[1])
  for k in ("online/probe_top1", "online/knn_top1", "online/rankme"):
    assert np.isfinite(log[-1][k])
  # The SSL run equals the uninterrupted monitor-free one.
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params),
               stepped[False].state.params)
  # The monitors started afresh at step 2: the bank holds 2 batches.
  bank = jax.device_get(state.buffers[KEY]["knn"])
  assert int(np.sum(bank["labels"] >= 0)) == 32
  setup, restored, _ = train.load_for_eval(on, workdir)
  jax.tree.map(np.testing.assert_array_equal, restored.buffers[KEY],
               jax.device_get(state.buffers[KEY]))
  # Evaluating the monitor-free checkpoint of step 2 with monitors on.
  _, old, _ = train.load_for_eval(on, workdir, step=2)
  assert int(old.step) == 2
  assert int(np.sum(np.asarray(old.buffers[KEY]["knn"]["labels"]) >= 0)) == 0
  # And the other way: monitor state the config does not use is left out.
  _, plain, _ = train.load_for_eval(off, workdir)
  assert KEY not in plain.buffers and int(plain.step) == 4
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(plain.params),
               jax.device_get(state.params))
