"""RELICv2 losses against an independent float64 NumPy reference."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdssl_jax.losses.relic import relic_loss
from mdssl_jax.losses.relic import relic_multiview_loss
from mdssl_jax.losses.relic import sample_negatives


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
  """Tiny arrays: XLA optimisation time dominates, so skip it (restored)."""
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


# One jitted entry point per function: far fewer compiles than op-by-op
# eager dispatch, which dominates the runtime of tiny-array tests.
_relic = jax.jit(relic_loss, static_argnames=(
    "temperature", "beta", "kl_mode", "contrast_scale"))
_multiview = jax.jit(relic_multiview_loss, static_argnames=(
    "temperature", "beta", "num_negatives", "kl_mode_large", "kl_mode_small",
    "contrast_scale"))
_sample = jax.jit(sample_negatives, static_argnums=(1, 2))


# ---------------------------------------------------------------- reference


def _np_normalize(x):
  x = np.asarray(x, np.float64)
  return x / np.sqrt((x * x).sum(-1, keepdims=True) + 1e-12)


def _np_log_softmax(values):
  values = np.asarray(values, np.float64)
  m = values.max()
  return values - (m + np.log(np.exp(values - m).sum()))


def np_relic_terms(online, target, neg, tau, mode, rev_online=None,
                   rev_target=None):
  """Per-row (nll, neg_entropy, cross_entropy, acc, pos_logit), by loops.

  Written straight from METHODS.md §3.2–3.3 with explicit candidate sets.
  """
  a, b = _np_normalize(online), _np_normalize(target)
  if mode == "reverse":
    ar, br = _np_normalize(rev_online), _np_normalize(rev_target)
  rows = []
  for i in range(a.shape[0]):
    cands = [i] + [int(j) for j in neg[i]]
    logits = np.array([a[i] @ b[j] / tau for j in cands])
    if mode == "transpose":
      q_logits = [a[j] @ b[i] / tau for j in cands]
    else:
      q_logits = [ar[i] @ br[j] / tau for j in cands]
    log_p, log_q = _np_log_softmax(logits), _np_log_softmax(q_logits)
    p = np.exp(log_p)
    rows.append((-log_p[0], np.sum(p * log_p), -np.sum(p * log_q),
                 float(logits[0] >= logits.max()), logits[0]))
  return np.array(rows)


def np_relic(online, target, neg, tau, beta, c, mode, rev_online=None,
             rev_target=None):
  """(loss, metrics) of one pair in float64."""
  t = np_relic_terms(online, target, neg, tau, mode, rev_online, rev_target)
  kl = t[:, 1] + t[:, 2]
  loss = np.mean(c * t[:, 0] + beta * kl)
  return loss, {"nll": t[:, 0].mean(), "kl": kl.mean(), "acc": t[:, 3].mean(),
                "pos_logit": t[:, 4].mean()}


def np_multiview(ol, os_, tl, neg, tau, beta, c, mode_large):
  """Listing 1: all L×L large pairs, then S×L small pairs, / (L(L+S))."""
  num_large = ol.shape[0]
  num_small = 0 if os_ is None else os_.shape[0]
  total, metrics, p = 0.0, [], 0
  for u in range(num_large):
    for l in range(num_large):
      rev = (ol[l], tl[u]) if mode_large == "reverse" else (None, None)
      loss, m = np_relic(ol[u], tl[l], neg[p], tau, beta, c, mode_large, *rev)
      total += loss
      metrics.append(m)
      p += 1
  for s in range(num_small):
    for l in range(num_large):
      loss, m = np_relic(os_[s], tl[l], neg[p], tau, beta, c, "transpose")
      total += loss
      metrics.append(m)
      p += 1
  scale = num_large * (num_large + num_small)
  assert p == scale
  return total / scale, {k: np.mean([m[k] for m in metrics])
                         for k in metrics[0]}


def _np_negatives(rng, batch, n_e):
  """Independent sampler for the tests: explicit random subsets."""
  return np.stack([
      rng.choice([j for j in range(batch) if j != i], n_e, replace=False)
      for i in range(batch)]).astype(np.int32)


def _inputs(seed, batch, dim, n_views=4):
  rng = np.random.default_rng(seed)
  return rng, rng.normal(size=(n_views, batch, dim)).astype(np.float32)


def _call(mode, x, neg, **kw):
  rev = {}
  if mode == "reverse":
    rev = dict(reverse_online=x[2], reverse_target=x[3])
  return _relic(x[0], x[1], neg, kl_mode=mode, **rev, **kw)


def _np_call(mode, x, neg, tau, beta, c):
  rev = (x[2], x[3]) if mode == "reverse" else (None, None)
  return np_relic(x[0], x[1], neg, tau, beta, c, mode, *rev)


# --------------------------------------------------------- sample_negatives


@pytest.mark.parametrize("batch,n_e", [(2, 1), (5, 2), (8, 7), (33, 10)])
def test_sample_negatives_valid(batch, n_e):
  for seed in range(3):
    neg = np.asarray(_sample(jax.random.key(seed), batch, n_e))
    assert neg.shape == (batch, n_e) and neg.dtype == np.int32
    assert neg.min() >= 0 and neg.max() < batch
    for i, row in enumerate(neg):
      assert i not in row
      assert len(set(row.tolist())) == n_e


def test_sample_negatives_uniform():
  batch, n_e, draws = 6, 2, 3000
  keys = jax.random.split(jax.random.key(0), draws)
  draw = jax.jit(jax.vmap(lambda k: sample_negatives(k, batch, n_e)))
  neg = np.asarray(draw(keys))
  counts = np.zeros((batch, batch))
  for i in range(batch):
    np.add.at(counts[i], neg[:, i].ravel(), 1)
  assert np.all(np.diag(counts) == 0)
  off = counts[~np.eye(batch, dtype=bool)]
  expected = draws * n_e / (batch - 1)  # 1200, std ≈ 27.
  np.testing.assert_allclose(off, expected, rtol=0.1)
  # All C(5, 2) = 10 subsets of row 0 are equally likely (≈300 each).
  subsets = {}
  for row in neg[:, 0]:
    key = tuple(sorted(row.tolist()))
    subsets[key] = subsets.get(key, 0) + 1
  assert len(subsets) == 10
  np.testing.assert_allclose(list(subsets.values()), draws / 10, rtol=0.25)


@pytest.mark.parametrize("batch,n_e", [(5, 5), (5, 0), (1, 1), (4, 9)])
def test_sample_negatives_rejects_bad_sizes(batch, n_e):
  with pytest.raises(ValueError, match="num_negatives|batch"):
    sample_negatives(jax.random.key(0), batch, n_e)


# -------------------------------------------------------------- relic_loss


@pytest.mark.parametrize("mode", ["transpose", "reverse"])
@pytest.mark.parametrize(
    "batch,dim,n_e,tau,beta,c",
    [(4, 3, 1, 0.1, 1.0, 1.0), (7, 16, 3, 0.2, 2.0, 0.3),
     (12, 8, 11, 1.0, 0.5, 1.0), (16, 5, 10, 0.5, 0.0, 2.0)])
def test_relic_loss_matches_numpy(mode, batch, dim, n_e, tau, beta, c):
  rng, x = _inputs(batch * 31 + dim, batch, dim)
  neg = _np_negatives(rng, batch, n_e)
  fn = jax.jit(lambda x, neg: _call(mode, x, neg, temperature=tau, beta=beta,
                                    contrast_scale=c))
  loss, metrics = fn(x, neg)
  ref_loss, ref_metrics = _np_call(mode, x, neg, tau, beta, c)
  assert loss.dtype == jnp.float32 and loss.shape == ()
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-5)
  assert set(metrics) == set(ref_metrics)
  for name, value in ref_metrics.items():
    np.testing.assert_allclose(metrics[name], value, rtol=1e-5, atol=1e-5,
                               err_msg=name)


def test_modes_differ_and_kl_nonnegative():
  rng, x = _inputs(3, 10, 6)
  neg = _np_negatives(rng, 10, 4)
  kw = dict(temperature=0.3, beta=1.0)
  _, mt = _call("transpose", x, neg, **kw)
  _, mr = _call("reverse", x, neg, **kw)
  assert abs(float(mt["kl"]) - float(mr["kl"])) > 1e-3
  assert float(mt["kl"]) >= 0.0 and float(mr["kl"]) >= 0.0
  # With the reverse pair equal to the forward pair, Q = P and KL = 0.
  _, m = _relic(x[0], x[1], neg, kl_mode="reverse", reverse_online=x[0],
                    reverse_target=x[1], **kw)
  np.testing.assert_allclose(m["kl"], 0.0, atol=1e-6)


@pytest.mark.parametrize("batch,tau,beta", [(5, 0.2, 1.0), (9, 0.7, 2.0)])
def test_full_batch_negatives_give_infonce(batch, tau, beta):
  rng, x = _inputs(batch, batch, 7)
  # Randomly ordered full negative sets from the library sampler.
  neg = _sample(jax.random.key(batch), batch, batch - 1)
  # Vectorised full-matrix form (differs from the loop reference).
  a, b = _np_normalize(x[0]), _np_normalize(x[1])
  s = a @ b.T / tau
  log_p = s - np.log(np.exp(s).sum(1, keepdims=True))
  log_q = (s - np.log(np.exp(s).sum(0, keepdims=True))).T  # Column softmax.
  infonce = -np.mean(np.diag(log_p))
  kl = np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=1))
  loss, m = _relic(x[0], x[1], neg, temperature=tau, beta=beta)
  np.testing.assert_allclose(m["nll"], infonce, rtol=1e-5)
  np.testing.assert_allclose(m["kl"], kl, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(loss, infonce + beta * kl, rtol=1e-5)


@pytest.mark.parametrize("mode", ["transpose", "reverse"])
def test_invariant_to_batch_permutation_and_row_scale(mode):
  batch = 8
  rng, x = _inputs(11, batch, 5)
  neg = _np_negatives(rng, batch, 3)
  kw = dict(temperature=0.25, beta=1.5, contrast_scale=0.7)
  base, _ = _call(mode, x, neg, **kw)
  perm = rng.permutation(batch)
  inv = np.argsort(perm)
  # New row k is old row perm[k]; its negatives re-indexed into new rows.
  neg_perm = inv[neg[perm]].astype(np.int32)
  permuted, _ = _call(mode, x[:, perm], neg_perm, **kw)
  np.testing.assert_allclose(permuted, base, rtol=1e-5)
  scale = rng.uniform(0.1, 10.0, size=(4, batch, 1)).astype(np.float32)
  scaled, _ = _call(mode, x * scale, neg, **kw)
  np.testing.assert_allclose(scaled, base, rtol=1e-5)


def test_bf16_inputs_accumulate_in_fp32():
  rng, x = _inputs(5, 6, 4)
  neg = _np_negatives(rng, 6, 2)
  xb = jnp.asarray(x, jnp.bfloat16)
  loss, _ = relic_loss(xb[0], xb[1], neg, temperature=0.2, beta=1.0)
  assert loss.dtype == jnp.float32
  ref, _ = np_relic(np.asarray(xb[0], np.float32),
                    np.asarray(xb[1], np.float32), neg, 0.2, 1.0, 1.0,
                    "transpose")
  np.testing.assert_allclose(loss, ref, rtol=1e-5)


# --------------------------------------------------------------- gradients


@pytest.mark.parametrize("mode", ["transpose", "reverse"])
def test_no_gradient_reaches_targets_and_grads_finite(mode):
  rng, x = _inputs(21, 6, 4)
  x[0, 2] = 0.0  # A zero online row: n(x) must keep the gradient finite.
  x[2, 1] = 0.0
  neg = _np_negatives(rng, 6, 3)
  fn = lambda x: _call(mode, x, neg, temperature=0.2, beta=1.0)[0]
  g = np.asarray(jax.grad(fn)(jnp.asarray(x)))
  assert np.all(np.isfinite(g))
  assert np.all(g[1] == 0.0) and np.all(g[3] == 0.0)  # Targets: exactly 0.
  assert np.abs(g[0]).max() > 1e-3
  if mode == "reverse":  # Q moves the online output of the target view.
    assert np.abs(g[2]).max() > 1e-3
  else:
    assert np.all(g[2] == 0.0)


def _fd_grad(f, x, h=1e-6):
  g = np.zeros_like(x)
  for idx in np.ndindex(*x.shape):
    xp, xm = x.copy(), x.copy()
    xp[idx] += h
    xm[idx] -= h
    g[idx] = (f(xp) - f(xm)) / (2 * h)
  return g


@pytest.mark.parametrize("mode", ["transpose", "reverse"])
def test_entropy_term_is_stop_gradient(mode):
  tau, beta, c = 0.5, 1.5, 0.8
  rng, x = _inputs(17, 5, 3)
  x64 = x.astype(np.float64)
  neg = _np_negatives(rng, 5, 3)
  # The online arrays: view 0, and view 2 (reverse_online) in "reverse".
  views = [0, 2] if mode == "reverse" else [0]

  def np_loss(xs, frozen):
    y = x64.copy()
    y[views] = xs
    t = np_relic_terms(y[0], y[1], neg, tau, mode, y[2], y[3])
    # Frozen: the neg-entropy part carries no gradient (a constant).
    neg_ent = 0.0 if frozen else t[:, 1]
    return np.mean(c * t[:, 0] + beta * (neg_ent + t[:, 2]))

  fd_frozen = _fd_grad(lambda xs: np_loss(xs, True), x64[views])
  fd_full = _fd_grad(lambda xs: np_loss(xs, False), x64[views])
  g = jax.grad(lambda x: _call(mode, x, neg, temperature=tau, beta=beta,
                               contrast_scale=c)[0])(jnp.asarray(x))
  g = np.asarray(g)[views]
  np.testing.assert_allclose(g, fd_frozen, rtol=1e-3, atol=2e-5)
  # The check can fail: differentiating through the entropy changes grads.
  assert np.abs(fd_full - fd_frozen).max() > 1e-2


# ------------------------------------------------------------- validation


def test_relic_loss_rejects_bad_input():
  rng, x = _inputs(0, 6, 4)
  neg = _np_negatives(rng, 6, 2)
  kw = dict(temperature=0.2, beta=1.0)
  cases = [
      (lambda: relic_loss(x[0], x[1][:, :3], neg, **kw), "target"),
      (lambda: relic_loss(x[0][None], x[1][None], neg, **kw), r"\[B, d\]"),
      (lambda: relic_loss(x[0], x[1], neg[:4], **kw), "neg_idx"),
      (lambda: relic_loss(x[0], x[1], neg.astype(np.float32), **kw),
       "integer"),
      (lambda: relic_loss(x[0], x[1], np.zeros((6, 6), np.int32), **kw),
       "num_negatives"),
      (lambda: relic_loss(x[0], x[1], neg, kl_mode="sym", **kw), "kl_mode"),
      (lambda: relic_loss(x[0], x[1], neg, kl_mode="reverse", **kw),
       "reverse_online"),
      (lambda: relic_loss(x[0], x[1], neg, kl_mode="reverse",
                          reverse_online=x[2], reverse_target=x[3][:4], **kw),
       "reverse_target"),
      (lambda: relic_loss(x[0], x[1], neg, reverse_online=x[2], **kw),
       "only used"),
      (lambda: relic_loss(x[0], x[1], neg, temperature=0.0, beta=1.0),
       "temperature"),
  ]
  for fn, match in cases:
    with pytest.raises(ValueError, match=match):
      fn()


def test_multiview_rejects_bad_input():
  _, x = _inputs(0, 6, 4, n_views=6)
  ol, os_, tl = x[:2], x[2:3], x[3:5]
  kw = dict(temperature=0.2, beta=1.0, num_negatives=2)
  key = jax.random.key(0)
  cases = [
      (lambda: relic_multiview_loss(ol, os_, tl, key, kl_mode_small="reverse",
                                    **kw), "kl_mode_small"),
      (lambda: relic_multiview_loss(ol, os_, tl[:1], key, **kw),
       "target_large"),
      (lambda: relic_multiview_loss(ol, os_[:, :4], tl, key, **kw),
       "online_small"),
      (lambda: relic_multiview_loss(ol[0], None, tl[0], key, **kw),
       "online_large"),
      (lambda: relic_multiview_loss(ol, os_, tl, None, **kw), "key"),
      (lambda: relic_multiview_loss(
          ol, os_, tl, None, neg_idx=np.zeros((4, 6, 2), np.int32), **kw),
       "P = "),
      (lambda: relic_multiview_loss(ol, os_, tl, key, temperature=0.2,
                                    beta=1.0, num_negatives=6), "num_neg"),
  ]
  for fn, match in cases:
    with pytest.raises(ValueError, match=match):
      fn()


# ------------------------------------------------------------- multi-view


@pytest.mark.parametrize("num_large,num_small,mode_large",
                         [(2, 1, "reverse"), (2, 1, "transpose"),
                          (3, 0, "reverse")])
def test_multiview_matches_numpy(num_large, num_small, mode_large):
  batch, dim, n_e, tau, beta, c = 6, 5, 3, 0.3, 1.5, 0.6
  rng, x = _inputs(num_large * 10 + num_small, batch, dim,
                   n_views=2 * num_large + num_small)
  ol, tl = x[:num_large], x[num_large:2 * num_large]
  os_ = x[2 * num_large:] if num_small else None
  n_pairs = num_large * (num_large + num_small)
  neg = np.stack([_np_negatives(rng, batch, n_e) for _ in range(n_pairs)])
  fn = jax.jit(lambda ol, os_, tl, neg: relic_multiview_loss(
      ol, os_, tl, None, temperature=tau, beta=beta, neg_idx=neg,
      kl_mode_large=mode_large, contrast_scale=c))
  loss, metrics = fn(ol, os_, tl, neg)
  ref_loss, ref_metrics = np_multiview(ol, os_, tl, neg, tau, beta, c,
                                       mode_large)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
  for name, value in ref_metrics.items():
    np.testing.assert_allclose(metrics[name], value, rtol=1e-5, atol=1e-6,
                               err_msg=name)
  # Discriminative: the same sum without the u == l pairs differs.
  diag = sum(np_relic(ol[v], tl[v], neg[v * num_large + v], tau, beta, c,
                      mode_large, ol[v], tl[v])[0] for v in range(num_large))
  no_diag = (ref_loss * n_pairs - diag) / (n_pairs - num_large)
  assert abs(float(loss) - no_diag) > 1e-4


def test_multiview_fresh_negatives_per_pair_from_key():
  batch, n_e = 7, 2
  _, x = _inputs(4, batch, 6, n_views=3)
  ol, os_, tl = x[:1], x[1:2], x[2:3]
  key = jax.random.key(42)
  kw = dict(temperature=0.2, beta=1.0)
  fn = jax.jit(lambda ol, os_, tl, key: relic_multiview_loss(
      ol, os_, tl, key, num_negatives=n_e, **kw))
  loss, metrics = fn(ol, os_, tl, key)
  neg = np.stack([np.asarray(_sample(jax.random.fold_in(key, p), batch, n_e))
                  for p in range(2)])
  assert not np.array_equal(neg[0], neg[1])  # Fresh per pair.
  ref_loss, _ = np_multiview(ol, os_, tl, neg, 0.2, 1.0, 1.0, "reverse")
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  other, _ = fn(ol, os_, tl, jax.random.key(43))
  assert abs(float(other) - float(loss)) > 1e-5


def test_multiview_gradients():
  _, x = _inputs(8, 6, 4, n_views=4)
  key = jax.random.key(1)

  def fn(ol, os_, tl):
    return _multiview(ol, os_, tl, key, temperature=0.2, beta=1.0,
                      num_negatives=3)[0]

  # L = 2, S = 1 would compile 6 pairs; L = 1, S = 2 covers both pair kinds.
  g_ol, g_os, g_tl = jax.grad(fn, argnums=(0, 1, 2))(x[:1], x[1:3], x[3:4])
  assert np.all(np.asarray(g_tl) == 0.0)
  for g in (g_ol, g_os):
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 1e-4


def test_single_large_view_is_the_diagonal_pair():
  rng, x = _inputs(2, 5, 4)
  neg = _np_negatives(rng, 5, 2)
  kw = dict(temperature=0.4, beta=1.0)
  multi, _ = _multiview(x[:1], None, x[1:2], None,
                                  neg_idx=neg[None], **kw)
  single, _ = _relic(x[0], x[1], neg, kl_mode="reverse",
                         reverse_online=x[0], reverse_target=x[1], **kw)
  np.testing.assert_allclose(multi, single, rtol=1e-6)


def test_pair_order_matches_docstring():
  # neg_idx[p] for p = u·L + l must belong to pair (online u, target l):
  # swapping the neg sets of pairs (0,1) and (1,0) must change the loss.
  rng, x = _inputs(6, 6, 4)
  neg = np.stack([_np_negatives(rng, 6, 2) for _ in range(4)])
  kw = dict(temperature=0.2, beta=1.0, kl_mode_large="transpose")
  base, _ = _multiview(x[:2], None, x[2:4], None, neg_idx=neg, **kw)
  ref = 0.0
  for p, (u, l) in enumerate(itertools.product(range(2), range(2))):
    ref += np_relic(x[u], x[2 + l], neg[p], 0.2, 1.0, 1.0, "transpose")[0]
  np.testing.assert_allclose(base, ref / 4, rtol=1e-5)
  swapped, _ = _multiview(x[:2], None, x[2:4], None,
                                    neg_idx=neg[[0, 2, 1, 3]], **kw)
  assert abs(float(swapped) - float(base)) > 1e-5
