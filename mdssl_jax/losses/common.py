"""Numerical helpers shared by the loss functions.

Every loss in :mod:`mdssl_jax.losses` computes in float32 and uses these
helpers for the two operations that are easy to get subtly wrong: ℓ2
normalisation with a finite gradient at zero, and a log-sum-exp over a mask
that may be empty for some rows (METHODS.md §1.5).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_NORM_EPS = 1e-12


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  """Returns x / sqrt(||x||² + 1e-12) along `axis`, computed in float32.

  Unlike ``x / jnp.linalg.norm(x)``, the gradient is finite at x = 0.

  Args:
    x: [..., d] array.
    axis: axis to normalise over.

  Returns:
    float32 array of the same shape as x with unit-norm slices.
  """
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=axis, keepdims=True) + _NORM_EPS)


def masked_logsumexp(
    logits: jax.Array, mask: jax.Array, axis: int = -1
) -> tuple[jax.Array, jax.Array]:
  """Numerically stable log Σ exp(logits) over the entries where mask is True.

  Rows whose mask is empty would give -inf and a NaN gradient; here they
  return 0 and are flagged in the second output so callers can drop them
  from averages ("double-where" trick, METHODS.md §1.5 item 3).

  Args:
    logits: [..., n] float array.
    mask: boolean array broadcastable to logits.
    axis: reduction axis.

  Returns:
    (lse, valid): lse has the reduced shape (0 where the mask is empty),
    valid is a boolean array of the same shape, True where any entry counted.
  """
  logits = logits.astype(jnp.float32)
  mask = jnp.broadcast_to(mask, logits.shape)
  valid = jnp.any(mask, axis=axis)
  # Empty rows reduce over a dummy all-True mask so that the discarded branch
  # stays finite and its (zeroed) gradient is not NaN.
  safe_mask = jnp.where(jnp.expand_dims(valid, axis), mask, True)
  safe = jnp.where(safe_mask, logits, 0.0)
  lse = jax.nn.logsumexp(safe, axis=axis, where=safe_mask)
  return jnp.where(valid, lse, 0.0), valid
