"""MDSSL without domain labels: config, loss, table, pipeline, whole run."""

import json
import os

import jax
import numpy as np
import pytest

from mdssl_jax import checkpoint as ckpt_lib
from mdssl_jax import config_lib
from mdssl_jax import presets
from mdssl_jax import progress
from mdssl_jax import pseudo_domains
from mdssl_jax import train
from mdssl_jax.data import pipeline
from mdssl_jax.data import sources
from mdssl_jax.data.pipeline import pseudo as pseudo_lib
from mdssl_jax.losses import mdssl_loss


def pseudo_config(labels="robust_kmeans", steps=12):
  c = config_lib.get_default_config("mdssl")
  presets.tiny_test_config(c, steps=steps,
                           domains=("digits", "photos", "textures"))
  c.data.domain_labels = labels
  c.pseudo_domains.update(warmup_steps=4, every_steps=4, restarts=2)
  c.monitors.online_knn.bank_size = 64
  c.method_args.update(lambda1=0.9, lambda2=0.1)
  return c


@pytest.fixture(scope="module")
def domains():
  return sources.load_domains(pseudo_config().data)


# ---- Config ------------------------------------------------------------------


@pytest.mark.parametrize("edit, match", [
    (dict(domain_labels="clusters"), "data.domain_labels='clusters'"),
    (dict(method="simclr"), "method='simclr' has no domain terms"),
    (dict(num_domains=1), "M ≥ 2"),
    (dict(eps0=0.5, eps_final=0.9), "eps_final ≤ eps0"),
    (dict(outlier_rule="literal"), "outlier_rule='literal'"),
    (dict(ignored="skip"), "ignored='skip'"),
    (dict(every_steps=0), "every_steps must be ≥ 1"),
])
def test_bad_pseudo_domain_config_is_named(edit, match):
  c = pseudo_config()
  if "domain_labels" in edit:
    c.data.domain_labels = edit.pop("domain_labels")
  if "method" in edit:
    c.method = edit.pop("method")
    c.method_args = config_lib.method_args("simclr")
  c.pseudo_domains.update(edit)
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(c)


def test_batch_layout_follows_num_pseudo_domains():
  c = pseudo_config()
  assert config_lib.global_batch(c) == 3 * 8  # M = -1: the 3 domains.
  c.pseudo_domains.num_domains = 2
  assert config_lib.batch_domains(c) == 2
  assert config_lib.global_batch(c) == 16
  config_lib.validate(c)


def test_schedule_segments_and_rounds():
  c = pseudo_config()
  steps = pseudo_domains.schedule(c, 12)
  assert steps == [4, 8]
  assert [pseudo_domains.round_at(steps, s) for s in (0, 3, 4, 7, 8, 11)] \
      == [-1, -1, 0, 0, 1, 1]
  assert pseudo_domains.segments(steps, 0, 12) == [(0, 4), (4, 8), (8, 12)]
  assert pseudo_domains.segments(steps, 6, 9) == [(6, 8), (8, 9)]
  c.pseudo_domains.warmup_steps = 12
  with pytest.raises(config_lib.ConfigError, match="no clustering ever"):
    pseudo_domains.schedule(c, 12)


# ---- Loss --------------------------------------------------------------------


def _loss_inputs(seed=0, b=12, d=8):
  rng = np.random.default_rng(seed)
  z1 = rng.normal(size=(b, d)).astype(np.float32)
  z2 = rng.normal(size=(b, d)).astype(np.float32)
  dom = rng.integers(0, 3, size=b).astype(np.int32)
  return z1, z2, dom


def test_loss_invariant_to_permuted_pseudo_labels():
  z1, z2, dom = _loss_inputs()
  kw = dict(temperature=0.2, lambda1=0.9, lambda2=0.1)
  base, m0 = mdssl_loss(z1, z2, dom, **kw)
  for perm in ([1, 2, 0], [2, 0, 1], [0, 2, 1]):
    loss, m = mdssl_loss(z1, z2, np.asarray(perm, np.int32)[dom], **kw)
    np.testing.assert_allclose(loss, base, rtol=1e-6)
    for key in ("within", "cross", "acc"):
      np.testing.assert_allclose(m[key], m0[key], rtol=1e-6)


def test_masked_rows_equal_dropping_them():
  """valid=0 rows leave every term: the loss is the sub-batch's."""
  z1, z2, dom = _loss_inputs(seed=1)
  valid = np.ones(len(dom), bool)
  valid[[1, 4, 5, 9]] = False
  kw = dict(temperature=0.2, lambda1=0.8, lambda2=0.15)
  masked, mm = mdssl_loss(z1, z2, dom, valid=valid, **kw)
  sub, ms = mdssl_loss(z1[valid], z2[valid], dom[valid], **kw)
  np.testing.assert_allclose(masked, sub, rtol=1e-5)
  for key in ("align", "within", "cross", "cross_valid", "acc"):
    np.testing.assert_allclose(mm[key], ms[key], rtol=1e-5, atol=1e-6)
  full, _ = mdssl_loss(z1, z2, dom, valid=np.ones_like(valid), **kw)
  np.testing.assert_allclose(full, mdssl_loss(z1, z2, dom, **kw)[0],
                             rtol=1e-6)
  none, _ = mdssl_loss(z1, z2, dom, valid=np.zeros_like(valid), **kw)
  assert float(none) == 0.0


def test_warmup_is_simclr_then_configured_lambdas():
  from mdssl_jax import methods  # pylint: disable=g-import-not-at-top
  c = pseudo_config()
  method = methods.get_method("mdssl")(c, total_steps=12)
  lam = [tuple(map(float, method.lambdas(np.int32(s)))) for s in (0, 3, 4)]
  np.testing.assert_allclose(lam, [(1, 0), (1, 0), (0.9, 0.1)], rtol=1e-6)


# ---- Table -------------------------------------------------------------------


def test_canonical_labels_ignore_kmeans_label_order():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, size=50)
  canon = pseudo_domains.canonical_labels(labels, 4)
  assert canon[0] == 0 and set(canon) == set(range(4))
  # Ids appear in order of their first row.
  firsts = [np.flatnonzero(canon == j)[0] for j in range(4)]
  assert firsts == sorted(firsts)
  for perm in ([3, 2, 1, 0], [1, 0, 3, 2]):
    np.testing.assert_array_equal(
        pseudo_domains.canonical_labels(np.asarray(perm)[labels], 4), canon)


def test_members_drop_ignored_and_fall_back():
  labels = np.array([0, 1, 0, 1, 2, 0], np.int32)
  keep = np.array([1, 0, 1, 0, 1, 0], bool)
  t = pseudo_lib.Table(labels, keep, round=0, start_step=4)
  drop = pseudo_lib.members(t, 3, "drop")
  # Cluster 1 lost every row: it draws from all of its rows instead.
  assert [m.tolist() for m in drop] == [[0, 2], [1, 3], [4]]
  mask = pseudo_lib.members(t, 3, "mask")
  assert [m.tolist() for m in mask] == [[0, 2, 5], [1, 3], [4]]
  empty = pseudo_lib.members(t, 4, "drop")[3]
  assert empty.tolist() == [0, 2, 4]  # An empty cluster: the kept pool.


# ---- Pipeline ----------------------------------------------------------------


def _table(domains, ignored_every=0, start_step=4, num=3, seed=0):
  """A round-0 table: random labels, with a tiny cluster 2 (5 rows)."""
  n = sum(d.num_train for d in domains)
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, size=n).astype(np.int32)
  labels[rng.choice(n, 5, replace=False)] = num - 1
  keep = np.ones(n, bool)
  if ignored_every:
    keep[::ignored_every] = False
  return pseudo_lib.Table(labels, keep, round=0, start_step=start_step)


def _batches(config, domains, table, start, count, **kw):
  it = pipeline.make_train_iterator(config, domains, start_step=start,
                                    pseudo_table=table, **kw)
  return [next(it) for _ in range(count)]


def test_pipeline_draws_n_rows_per_pseudo_domain(domains):
  c = pseudo_config()
  table = _table(domains, ignored_every=3)
  truth = np.repeat(np.arange(3), [d.num_train for d in domains])
  pooled_labels = np.concatenate([d.train_labels for d in domains])
  for b in _batches(c, domains, table, 4, 3):
    assert b["large"].shape[0] == 24
    np.testing.assert_array_equal(b["domain"], np.repeat(np.arange(3), 8))
    # Every row is a kept member of its pseudo-domain ("drop").
    np.testing.assert_array_equal(table.labels[b["index"]], b["domain"])
    assert table.keep[b["index"]].all()
    np.testing.assert_array_equal(b["source_domain"], truth[b["index"]])
    np.testing.assert_array_equal(b["label"], pooled_labels[b["index"]])
    np.testing.assert_array_equal(b["valid"], 1.0)
    # Cluster 2 has 5 rows (fewer kept) < N = 8: it cycles, with repeats.
    kept_small = set(np.flatnonzero((table.labels == 2) & table.keep))
    assert set(b["index"][16:]) <= kept_small


def test_pipeline_is_a_function_of_seed_step_and_table(domains):
  c = pseudo_config()
  table = _table(domains)
  full = _batches(c, domains, table, 4, 4)
  resumed = _batches(c, domains, table, 6, 2)
  for a, b in zip(full[2:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  # Another table (or round) draws other rows.
  other = _batches(c, domains, _table(domains, seed=1), 6, 1)[0]
  assert not np.array_equal(other["index"], full[2]["index"])
  # Two processes get the two halves of the same global batch.
  halves = [_batches(c, domains, table, 6, 1, process_index=p,
                     process_count=2)[0] for p in (0, 1)]
  for key in ("index", "domain", "large"):
    np.testing.assert_array_equal(
        np.concatenate([h[key] for h in halves]), full[2][key])


def test_pipeline_warmup_and_masked_ignored_rows(domains):
  c = pseudo_config()
  n = sum(d.num_train for d in domains)
  warm = _batches(c, domains, pseudo_lib.Table.warmup(n), 0, 2)
  for b in warm:
    np.testing.assert_array_equal(b["domain"], 0)
    # Mixed batches: rows of several configured domains.
    assert len(set(b["source_domain"].tolist())) > 1
  c.pseudo_domains.ignored = "mask"
  table = _table(domains, ignored_every=2)
  b = _batches(c, domains, table, 5, 1)[0]
  np.testing.assert_array_equal(table.labels[b["index"]], b["domain"])
  np.testing.assert_array_equal(b["valid"], table.keep[b["index"]])
  assert 0 < b["valid"].mean() < 1


def test_pipeline_rejects_missing_or_wrong_table(domains):
  c = pseudo_config()
  with pytest.raises(ValueError, match="need the run's table"):
    pipeline.make_train_dataset(c, domains, start_step=0)
  bad = pseudo_lib.Table.warmup(10)
  with pytest.raises(ValueError, match="covers 10 examples"):
    pipeline.make_train_dataset(c, domains, start_step=0, pseudo_table=bad)


# ---- The whole run -----------------------------------------------------------


def _read(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def _strip(records):
  return [{k: v for k, v in r.items() if not k.startswith("seconds")}
          for r in records]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """robust_kmeans, 12 steps, rounds at 4 and 8: straight and resumed at
  step 6, in the middle of round 0's segment."""
  config = pseudo_config()
  straight = str(tmp_path_factory.mktemp("straight"))
  resumed = str(tmp_path_factory.mktemp("resumed"))
  state = train.train_and_evaluate(config, straight)
  train.train_and_evaluate(config, resumed, max_steps_this_run=6)
  with ckpt_lib.Checkpointer(resumed, async_save=False) as ckpt:
    assert ckpt.latest_step() == 6
  first_log = _read(os.path.join(resumed, pseudo_domains.LOG_NAME))
  state2 = train.train_and_evaluate(config, resumed)
  return config, straight, resumed, state, state2, first_log


def test_run_resumes_exactly_mid_round(runs):
  _, straight, resumed, state, state2, first_log = runs
  assert [r["round"] for r in first_log] == [0]
  for a, b in zip(jax.tree.leaves(state.params),
                  jax.tree.leaves(state2.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for key in ("labels", "keep", "round"):
    np.testing.assert_array_equal(
        np.asarray(state.buffers["pseudo_domains"][key]),
        np.asarray(state2.buffers["pseudo_domains"][key]))
  logs = [_strip(_read(os.path.join(w, pseudo_domains.LOG_NAME)))
          for w in (straight, resumed)]
  assert logs[0] == logs[1]
  losses = [[r["loss"] for r in _read(os.path.join(w, "metrics.jsonl"))
             if "loss" in r] for w in (straight, resumed)]
  assert losses[0] == losses[1] and len(losses[0]) == 12


def test_each_round_is_logged_and_scored(runs):
  _, straight, _, state, _, _ = runs
  log = _read(os.path.join(straight, pseudo_domains.LOG_NAME))
  assert [(r["step"], r["round"]) for r in log] == [(4, 0), (8, 1)]
  # ε: 1 at the first round, 1e-3 at the last (R = 1).
  np.testing.assert_allclose([r["epsilon"] for r in log], [1.0, 1e-3])
  n = len(state.buffers["pseudo_domains"]["labels"])
  for r in log:
    assert sum(r["cluster_sizes"]) == n and len(r["cluster_sizes"]) == 3
    kept = sum(r["kept_sizes"])
    np.testing.assert_allclose(r["ignored_fraction"], 1 - kept / n)
    assert 0 <= r["ari"] <= 1 and 1 / 3 <= r["purity"] <= 1
  table = state.buffers["pseudo_domains"]
  assert int(table["round"]) == 1
  np.testing.assert_array_equal(np.bincount(np.asarray(table["labels"]),
                                            minlength=3),
                                log[-1]["cluster_sizes"])
  metrics = _read(os.path.join(straight, "metrics.jsonl"))
  rounds = [r for r in metrics if "clustering/round" in r]
  assert [r["step"] for r in rounds] == [4, 8]
  assert os.path.getsize(os.path.join(straight,
                                      pseudo_domains.CONFUSION_NAME)) > 0
  # The loss plot skips the clustering rows of metrics.jsonl.
  plot = os.path.join(straight, "loss_check.png")
  progress.save_loss_plot(metrics, plot)
  assert os.path.getsize(plot) > 0
