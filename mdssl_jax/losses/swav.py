"""SwAV swapped prediction with log-domain Sinkhorn-Knopp (METHODS.md §5.7).

The caller owns the prototype matrix C [d, K]. Each step it re-normalises the
columns with :func:`normalize_prototypes` *before* computing the scores
S_v = n(z_v) C, and passes the stacked scores of all V views (global crops
first) to :func:`swav_loss`. Codes come from the global views only, carry no
gradient, and are computed in float32 in the log domain, because exp(S/ε)
with ε = 0.05 reaches e^20 and overflows half precision.

Synopsis::

  protos = normalize_prototypes(params["prototypes"])       # [d, K]
  scores = jnp.einsum("vbd,dk->vbk", l2_normalize(z), protos)
  loss, metrics = swav_loss(scores, num_global=2)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mdssl_jax.losses.common import l2_normalize


def _check_positive(name: str, value) -> None:
  """Raises ValueError if a concrete hyperparameter is not > 0."""
  if isinstance(value, (int, float)) and not value > 0:
    raise ValueError(f"{name} must be > 0, got {value}.")


def normalize_prototypes(kernel: jax.Array) -> jax.Array:
  """ℓ2-normalises each prototype (column) of a [d, K] kernel.

  Args:
    kernel: [d, K] prototype matrix, one prototype per column (the layout of
      a Flax ``nn.Dense(K)`` kernel).

  Returns:
    [d, K] float32 matrix with unit-norm columns.
  """
  if kernel.ndim != 2:
    raise ValueError(
        f"kernel must be a [d, K] prototype matrix, got shape {kernel.shape}.")
  return l2_normalize(kernel, axis=0)


def sinkhorn(
    scores: jax.Array, *, epsilon: float = 0.05, num_iters: int = 3
) -> jax.Array:
  """Equipartitioned soft codes by log-domain Sinkhorn-Knopp (METHODS.md §5.7).

  Follows the SwAV recipe with P = exp(Sᵀ/ε) / Σ exp(Sᵀ/ε) of shape [K, B]:
  each iteration rescales every prototype's row of P to sum 1/K, then every
  sample's column to sum 1/B; the result is Q = B·Pᵀ. Here P is kept
  transposed ([B, K]) and in log space, which is the same computation without
  overflow for any ε.

  Args:
    scores: [B, K] prototype scores of one view (treated as constant: no
      gradient flows through the codes).
    epsilon: ε > 0, entropic regularisation (smaller is sharper).
    num_iters: number of row-then-column normalisation rounds, ≥ 1.

  Returns:
    [B, K] float32 codes Q whose rows sum to 1; columns sum to B/K once the
    iterations have converged.
  """
  if scores.ndim != 2:
    raise ValueError(
        f"scores must be [B, K] for one view, got shape {scores.shape}.")
  if not isinstance(num_iters, int) or num_iters < 1:
    raise ValueError(f"num_iters must be an int ≥ 1, got {num_iters!r}.")
  _check_positive("epsilon", epsilon)
  b, k = scores.shape
  log_p = jax.lax.stop_gradient(scores).astype(jnp.float32) / epsilon
  log_p = log_p - jax.nn.logsumexp(log_p)
  log_b, log_k = math.log(b), math.log(k)

  def body(_, log_p):
    # Per prototype (axis 0 here) to mass 1/K, then per sample to mass 1/B.
    log_p = log_p - jax.nn.logsumexp(log_p, axis=0, keepdims=True) - log_k
    return log_p - jax.nn.logsumexp(log_p, axis=1, keepdims=True) - log_b

  log_p = jax.lax.fori_loop(0, num_iters, body, log_p)
  return jnp.exp(log_p + log_b)


def swav_loss(
    scores: jax.Array,
    *,
    num_global: int = 2,
    temperature: float = 0.1,
    epsilon: float = 0.05,
    num_iters: int = 3,
    queue_scores: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """SwAV swapped-prediction loss (METHODS.md §5.7).

  Codes q_v = sinkhorn(sg(scores[v])) for the global views v < Vg; then

    loss = mean over pairs (v < Vg, w < V, w ≠ v) of
           mean_i H(q_v,i, softmax(scores[w, i] / τ)).

  With a queue, Sinkhorn for view v runs on concat(queue_scores[v],
  scores[v]) ([Q + B, K]) and only the last B rows (the current batch) are
  kept: queue rows only enlarge the equipartition problem.

  Args:
    scores: [V, B, K] scores n(z_v)·C with column-normalised prototypes C
      (see :func:`normalize_prototypes`), global views first.
    num_global: Vg, number of leading views that produce codes, 1 ≤ Vg ≤ V.
    temperature: τ > 0 of the prediction softmax.
    epsilon: ε > 0 of Sinkhorn.
    num_iters: Sinkhorn iterations, ≥ 1.
    queue_scores: optional [Vg, Q, K] scores of queued features of the global
      views under the current prototypes. No gradient flows into them.

  Returns:
    (scalar loss, metrics) with "codes_entropy" (mean entropy of the code
    rows, nats) and "prototype_usage" (fraction of prototypes that are the
    arg-max code of at least one image in some global view).
  """
  if scores.ndim != 3:
    raise ValueError(
        f"scores must be [V, B, K] (views stacked on axis 0), got shape"
        f" {scores.shape}.")
  v, b, k = scores.shape
  if not isinstance(num_global, int) or not 1 <= num_global <= v:
    raise ValueError(
        f"num_global must be an int in [1, V={v}], got {num_global!r}.")
  if v < 2:
    raise ValueError(
        f"swav_loss needs at least 2 views to swap predictions, got V={v}.")
  if queue_scores is not None and (
      queue_scores.ndim != 3 or queue_scores.shape[0] != num_global
      or queue_scores.shape[2] != k):
    raise ValueError(
        f"queue_scores must be [Vg={num_global}, Q, K={k}], got shape"
        f" {queue_scores.shape}.")
  _check_positive("temperature", temperature)

  codes = []
  for g in range(num_global):
    s = scores[g].astype(jnp.float32)
    if queue_scores is not None:
      s = jnp.concatenate(
          [queue_scores[g].astype(jnp.float32), s], axis=0)
    codes.append(
        sinkhorn(s, epsilon=epsilon, num_iters=num_iters)[-b:])
  q = jnp.stack(codes)  # [Vg, B, K], no gradient (sinkhorn stops it).
  log_pred = jax.nn.log_softmax(
      scores.astype(jnp.float32) / temperature, axis=-1)
  # ce[g, w, i] = H(q[g, i], softmax(scores[w, i] / τ)).
  ce = -jnp.einsum("gik,wik->gwi", q, log_pred,
                   precision=jax.lax.Precision.HIGHEST)
  pairs = jnp.arange(num_global)[:, None] != jnp.arange(v)[None, :]
  loss = jnp.sum(jnp.where(pairs[:, :, None], ce, 0.0)) / (
      num_global * (v - 1) * b)
  # xlogy gives 0·log 0 = 0 for codes that underflow to exactly 0.
  codes_entropy = jnp.mean(-jnp.sum(jax.scipy.special.xlogy(q, q), axis=-1))
  used = jnp.any(jax.nn.one_hot(jnp.argmax(q, axis=-1), k, dtype=bool),
                 axis=(0, 1))
  metrics = {
      "codes_entropy": codes_entropy,
      "prototype_usage": jnp.mean(used.astype(jnp.float32)),
  }
  return loss, metrics
