"""RELICv2 losses: sub-sampled contrast plus the KL invariance term.

Implements METHODS.md §3.2–3.4 (RELICv2, seed 004, eq. 1–3 and Listing 1):

  C_i      = {i} ∪ N_i,   N_i = n_e indices from {0..B-1}∖{i}
  logit_ij = cos(a_i, b_j) / τ                       j ∈ C_i
  P_i      = softmax_{j∈C_i} logit_ij
  KL_i     = sg(Σ_j P_i(j) log P_i(j)) − Σ_j P_i(j) log Q_i(j)
  ℓ(u→l)   = mean_i [ c·(−logit_ii + LSE_{j∈C_i} logit_ij) + β·KL_i ]

with a = online outputs of view u, b = stop-gradient target outputs of view
l, c the "contrast scale" and β the invariance scale. Q_i ("reverse"
distribution over the same C_i) has two readings, selected by `kl_mode`
(METHODS.md §3.3 and §7.5):

  "reverse"   (Reading A): Q_i(j) = softmax_{j∈C_i} cos(a'_i, b'_j)/τ, where
              a' = online output of view l and b' = target output of view u.
  "transpose" (Reading B): Q_i(j) = softmax_{j∈C_i} cos(a_j, b_i)/τ, the
              column-wise softmax of the same logit matrix.

Synopsis:

  neg = sample_negatives(key, batch_size=B, num_negatives=10)
  loss, metrics = relic_loss(online, target, neg, temperature=0.2, beta=1.0)

  loss, metrics = relic_multiview_loss(
      online_large, online_small, target_large, key,
      temperature=0.2, beta=1.0, num_negatives=10)
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp

from mdssl_jax.losses.common import l2_normalize

_KL_MODES = ("reverse", "transpose")
_HIGHEST = jax.lax.Precision.HIGHEST


def _check_num_negatives(batch_size: int, num_negatives: int) -> None:
  if batch_size < 2:
    raise ValueError(
        f"RELIC needs at least 2 images per batch to draw negatives, got "
        f"batch size {batch_size}.")
  if not 1 <= num_negatives <= batch_size - 1:
    raise ValueError(
        f"num_negatives must be in [1, B-1] = [1, {batch_size - 1}] (the "
        f"negatives of row i are other images of the batch), got "
        f"{num_negatives}. Lower num_negatives or raise the batch size.")


def sample_negatives(
    key: jax.Array, batch_size: int, num_negatives: int
) -> jax.Array:
  """Draws n_e distinct negatives per anchor, uniformly without replacement.

  Row i gets a uniformly random n_e-subset of {0..B-1}∖{i} (METHODS.md §3.2):
  iid uniforms U[B, B] with +inf on the diagonal, then the n_e smallest per
  row via `top_k(-U)`.

  Args:
    key: PRNG key.
    batch_size: B (static).
    num_negatives: n_e (static), 1 <= n_e <= B-1.

  Returns:
    [B, n_e] int32 array of batch indices; row i never contains i and holds
    no repeats.

  Raises:
    ValueError: if B < 2 or n_e is outside [1, B-1].
  """
  batch_size, num_negatives = int(batch_size), int(num_negatives)
  _check_num_negatives(batch_size, num_negatives)
  u = jax.random.uniform(key, (batch_size, batch_size))
  u = jnp.where(jnp.eye(batch_size, dtype=bool), jnp.inf, u)
  _, idx = jax.lax.top_k(-u, num_negatives)
  return idx.astype(jnp.int32)


def _check_hparams(temperature, kl_mode: str, mode_name: str) -> None:
  if kl_mode not in _KL_MODES:
    raise ValueError(
        f"{mode_name} must be one of {_KL_MODES}, got {kl_mode!r}.")
  if isinstance(temperature, numbers.Real) and not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature}.")


def _check_neg_idx(neg_idx: jax.Array, batch_size: int, where: str) -> None:
  if neg_idx.ndim != 2 or neg_idx.shape[0] != batch_size:
    raise ValueError(
        f"{where} must have shape [B, n_e] = [{batch_size}, n_e], got "
        f"{neg_idx.shape}. Build it with sample_negatives(key, B, n_e).")
  if not jnp.issubdtype(neg_idx.dtype, jnp.integer):
    raise ValueError(
        f"{where} must hold integer batch indices, got dtype "
        f"{neg_idx.dtype}.")
  _check_num_negatives(batch_size, neg_idx.shape[1])


def _pair_loss(
    a: jax.Array,
    b: jax.Array,
    neg_idx: jax.Array,
    *,
    temperature: float,
    beta: float,
    kl_mode: str,
    contrast_scale: float,
    a_rev: jax.Array | None,
    b_rev: jax.Array | None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """ℓ(u→l) on normalised float32 embeddings (targets already stopped).

  Args:
    a: [B, d] unit-norm online outputs of view u.
    b: [B, d] unit-norm, stop-gradient target outputs of view l.
    neg_idx: [B, n_e] int negatives.
    temperature: τ.
    beta: β.
    kl_mode: "reverse" or "transpose".
    contrast_scale: c.
    a_rev: [B, d] unit-norm online outputs of view l ("reverse" only).
    b_rev: [B, d] unit-norm, stopped target outputs of view u ("reverse").

  Returns:
    (scalar loss, metrics).
  """
  batch_size = a.shape[0]
  neg_idx = jnp.asarray(neg_idx, jnp.int32)
  # Column 0 of every candidate row is the positive i.
  cand = jnp.concatenate(
      [jnp.arange(batch_size, dtype=jnp.int32)[:, None], neg_idx], axis=1)
  logits = jnp.einsum(
      "bd,bkd->bk", a, b[cand], precision=_HIGHEST) / temperature
  if kl_mode == "transpose":
    q_logits = jnp.einsum(
        "bkd,bd->bk", a[cand], b, precision=_HIGHEST) / temperature
  else:
    q_logits = jnp.einsum(
        "bd,bkd->bk", a_rev, b_rev[cand], precision=_HIGHEST) / temperature

  log_p = jax.nn.log_softmax(logits, axis=-1)
  log_q = jax.nn.log_softmax(q_logits, axis=-1)
  p = jnp.exp(log_p)
  nll = -log_p[:, 0]  # = −logit_ii + LSE_{j∈C_i} logit_ij.
  # Eq. 2 stops the gradient through P's (negative) entropy only; the
  # cross-entropy part still moves both P and Q.
  neg_entropy = jax.lax.stop_gradient(jnp.sum(p * log_p, axis=-1))
  kl = neg_entropy - jnp.sum(p * log_q, axis=-1)
  loss = jnp.mean(contrast_scale * nll + beta * kl)

  metrics = {
      "nll": jnp.mean(nll),
      "kl": jnp.mean(kl),
      "acc": jnp.mean(
          (logits[:, 0] >= jnp.max(logits, axis=-1)).astype(jnp.float32)),
      "pos_logit": jnp.mean(logits[:, 0]),
  }
  return loss, jax.lax.stop_gradient(metrics)


def relic_loss(
    online: jax.Array,
    target: jax.Array,
    neg_idx: jax.Array,
    *,
    temperature: float,
    beta: float,
    kl_mode: str = "transpose",
    contrast_scale: float = 1.0,
    reverse_online: jax.Array | None = None,
    reverse_target: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """RELICv2 loss ℓ(u→l) for one (online view u, target view l) pair.

  ℓ = mean_i [ c·(−logit_ii + LSE_{j∈C_i} logit_ij) + β·KL_i ] with
  C_i = {i} ∪ neg_idx[i], logit_ij = cos(a_i, b_j)/τ and
  KL_i = sg(Σ_j P_i(j) log P_i(j)) − Σ_j P_i(j) log Q_i(j) over the same C_i
  (METHODS.md §3.2–3.3). Q is chosen by `kl_mode`; see the module docstring.

  Both inputs are ℓ2-normalised here in float32; the target side (and
  `reverse_target`) is wrapped in stop_gradient, so no gradient reaches it.
  Row values of `neg_idx` are not checked (impossible under jit): they must
  lie in [0, B), avoid i and be distinct, as `sample_negatives` guarantees.

  Args:
    online: [B, d] online outputs of view u (after the predictor), raw.
    target: [B, d] target projections of view l, raw.
    neg_idx: [B, n_e] integer negatives, 1 <= n_e <= B-1.
    temperature: τ > 0.
    beta: invariance (KL) weight β.
    kl_mode: "transpose" (Reading B, Q from the same logit matrix) or
      "reverse" (Reading A, Q from the reverse pair; needs the two
      `reverse_*` arrays).
    contrast_scale: multiplier c on the −log p term.
    reverse_online: [B, d] online outputs of view l ("reverse" only).
    reverse_target: [B, d] target projections of view u ("reverse" only).

  Returns:
    (loss, metrics): scalar float32 loss; metrics holds scalar "nll"
    (mean −log p), "kl" (mean KL_i), "acc" (fraction of rows whose positive
    has the highest logit among its candidates) and "pos_logit" (mean
    logit_ii = cos/τ).

  Raises:
    ValueError: on bad shapes, dtype, kl_mode, temperature or n_e.
  """
  _check_hparams(temperature, kl_mode, "kl_mode")
  if online.ndim != 2:
    raise ValueError(f"online must be [B, d], got shape {online.shape}.")
  if target.shape != online.shape:
    raise ValueError(
        f"target must have the online shape {online.shape}, got "
        f"{target.shape}.")
  _check_neg_idx(neg_idx, online.shape[0], "neg_idx")
  reverse = (reverse_online, reverse_target)
  if kl_mode == "reverse":
    if any(x is None for x in reverse):
      raise ValueError(
          "kl_mode='reverse' needs reverse_online (online output of the "
          "target view) and reverse_target (target output of the online "
          "view); pass both or use kl_mode='transpose'.")
    for name, x in zip(("reverse_online", "reverse_target"), reverse):
      if x.shape != online.shape:
        raise ValueError(
            f"{name} must have the online shape {online.shape}, got "
            f"{x.shape}.")
  elif any(x is not None for x in reverse):
    raise ValueError(
        "reverse_online/reverse_target are only used with "
        "kl_mode='reverse'; drop them or set kl_mode='reverse'.")

  def stopped(x):
    return None if x is None else l2_normalize(jax.lax.stop_gradient(x))

  return _pair_loss(
      l2_normalize(online), stopped(target), neg_idx,
      temperature=temperature, beta=beta, kl_mode=kl_mode,
      contrast_scale=contrast_scale,
      a_rev=None if reverse_online is None else l2_normalize(reverse_online),
      b_rev=stopped(reverse_target))


def _view_pairs(num_large: int, num_small: int) -> list[tuple[bool, int, int]]:
  """(is_small, online view, target large view) in the documented order."""
  pairs = [(False, u, l) for u in range(num_large) for l in range(num_large)]
  pairs += [(True, s, l) for s in range(num_small) for l in range(num_large)]
  return pairs


def relic_multiview_loss(
    online_large: jax.Array,
    online_small: jax.Array | None,
    target_large: jax.Array,
    key: jax.Array | None,
    *,
    temperature: float,
    beta: float,
    num_negatives: int = 10,
    kl_mode_large: str = "reverse",
    kl_mode_small: str = "transpose",
    contrast_scale: float = 1.0,
    neg_idx: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Full RELICv2 objective over L large and S small views (eq. 3).

  L = 1/(L·(L+S)) · [ Σ_{u,l} ℓ(large u → large l) + Σ_{s,l} ℓ(small s →
  large l) ] (METHODS.md §3.4, Listing 1). The large–large double sum
  includes u == l (the same augmented view through the online and the target
  network). Pairs are taken in this order, which also indexes `neg_idx`:

    p = u·L + l           online large u, target large l   (0 <= p < L²)
    p = L² + s·L + l      online small s, target large l

  Negatives are drawn freshly per pair as
  `sample_negatives(jax.random.fold_in(key, p), B, num_negatives)` unless
  `neg_idx` is given.

  KL defaults (METHODS.md §3.3, §7.5): large–large pairs use Reading A
  ("reverse", RELIC v1 semantics: Q comes from the reverse pair online l /
  target u, and every embedding it needs already exists). Small views are
  never targets, so a small–large pair has no target embedding of the small
  view and Reading A is not computable; those pairs use Reading B
  ("transpose"), which needs only the one online/target pair.

  Args:
    online_large: [L, B, d] online outputs (after the predictor), raw.
    online_small: [S, B, d] online outputs of the small views, or None.
    target_large: [L, B, d] target projections of the large views, raw.
    key: PRNG key for the negatives; may be None when `neg_idx` is given.
    temperature: τ > 0.
    beta: invariance (KL) weight β.
    num_negatives: n_e, 1 <= n_e <= B-1; ignored when `neg_idx` is given
      (its last axis sets n_e).
    kl_mode_large: "reverse" or "transpose" for large–large pairs.
    kl_mode_small: must be "transpose" (see above).
    contrast_scale: multiplier c on the −log p term.
    neg_idx: optional [P, B, n_e] integer negatives, P = L·(L+S), in the
      pair order above.

  Returns:
    (loss, metrics): scalar float32 loss; metrics "nll", "kl", "acc",
    "pos_logit" are means over the P pairs (see `relic_loss`).

  Raises:
    ValueError: on bad shapes, modes, temperature, n_e or a missing key.
  """
  _check_hparams(temperature, kl_mode_large, "kl_mode_large")
  _check_hparams(temperature, kl_mode_small, "kl_mode_small")
  if kl_mode_small != "transpose":
    raise ValueError(
        "kl_mode_small must be 'transpose': small views have no target "
        "embedding, so the reverse pair of a small–large pair does not exist.")
  if online_large.ndim != 3 or online_large.shape[0] < 1:
    raise ValueError(
        f"online_large must be [L, B, d] with L >= 1, got "
        f"{online_large.shape}.")
  if target_large.shape != online_large.shape:
    raise ValueError(
        f"target_large must have the online_large shape "
        f"{online_large.shape}, got {target_large.shape}.")
  num_large, batch_size, _ = online_large.shape
  if online_small is None:
    num_small = 0
  elif online_small.ndim != 3 or online_small.shape[1:] != (
      online_large.shape[1:]):
    raise ValueError(
        f"online_small must be [S, B, d] = [S, {batch_size}, "
        f"{online_large.shape[2]}], got {online_small.shape}.")
  else:
    num_small = online_small.shape[0]
  pairs = _view_pairs(num_large, num_small)
  if neg_idx is None:
    if key is None:
      raise ValueError("Pass a PRNG key or explicit neg_idx [P, B, n_e].")
    negs = [sample_negatives(jax.random.fold_in(key, p), batch_size,
                             num_negatives) for p in range(len(pairs))]
  else:
    if neg_idx.ndim != 3 or neg_idx.shape[0] != len(pairs):
      raise ValueError(
          f"neg_idx must be [P, B, n_e] with P = L·(L+S) = {len(pairs)} "
          f"pairs, got {neg_idx.shape}.")
    _check_neg_idx(neg_idx[0], batch_size, "neg_idx[p]")
    negs = list(neg_idx)

  # Normalise each view once; targets carry no gradient (EMA branch).
  a_large = l2_normalize(online_large)
  b_large = l2_normalize(jax.lax.stop_gradient(target_large))
  a_small = None if num_small == 0 else l2_normalize(online_small)

  total = jnp.zeros((), jnp.float32)
  metric_sums: dict[str, jax.Array] = {}
  for p, (is_small, u, l) in enumerate(pairs):
    mode = kl_mode_small if is_small else kl_mode_large
    reverse = mode == "reverse"
    loss, metrics = _pair_loss(
        a_small[u] if is_small else a_large[u], b_large[l], negs[p],
        temperature=temperature, beta=beta, kl_mode=mode,
        contrast_scale=contrast_scale,
        a_rev=a_large[l] if reverse else None,
        b_rev=b_large[u] if reverse else None)
    total = total + loss
    for name, value in metrics.items():
      metric_sums[name] = metric_sums.get(name, 0.0) + value
  num_pairs = len(pairs)  # = L·(L+S), the Listing 1 scale.
  return total / num_pairs, {k: v / num_pairs for k, v in metric_sums.items()}
