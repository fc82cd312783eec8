"""Contrastive losses: SimCLR NT-Xent and the MDSSL hierarchical loss.

Both compute one cosine-similarity matrix over the 2B rows
``Z = concat(z1, z2)`` (row a < B is view 1 of image a, row B + a is view 2)
and reduce it with masks; nothing loops over domains in Python.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mdssl_jax.losses.common import l2_normalize, masked_logsumexp


def _similarities(z1: jax.Array, z2: jax.Array, temperature: float):
  """Returns (s [2B, 2B] = cos/τ, positive index [2B]) for the stacked views."""
  if z1.ndim != 2 or z1.shape != z2.shape:
    raise ValueError(
        f"z1 and z2 must both be [B, d] with the same shape, got {z1.shape}"
        f" and {z2.shape}.")
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}.")
  b = z1.shape[0]
  z = l2_normalize(jnp.concatenate([z1, z2], axis=0))
  s = jnp.einsum("ad,bd->ab", z, z,
                 precision=jax.lax.Precision.HIGHEST) / temperature
  pos = jnp.concatenate([jnp.arange(b) + b, jnp.arange(b)])
  return s, pos


def _positive_accuracy(s: jax.Array, pos: jax.Array, mask: jax.Array):
  """Fraction of anchors whose positive has the largest logit within mask."""
  masked = jnp.where(mask, s, -jnp.inf)
  return jnp.mean(jnp.argmax(masked, axis=-1) == pos)


def nt_xent(
    z1: jax.Array, z2: jax.Array, *, temperature: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """SimCLR NT-Xent over the whole (union) batch.

  loss = mean over the 2B anchors a of  −s(a, pos(a)) + log Σ_{b≠a} exp s(a, b)
  with s = cosine similarity / τ. The positive stays in the denominator; only
  the anchor itself is masked. Used on a multi-domain batch this is the
  "multi-domain SimCLR" baseline of MDSSL (METHODS.md §2.5, §5.1).

  Args:
    z1: [B, d] projections of view 1.
    z2: [B, d] projections of view 2 (row i is the same image as z1[i]).
    temperature: τ > 0.

  Returns:
    (scalar loss, metrics) with metrics "align" (mean positive cosine),
    "lse" (mean denominator term) and "acc" (positive ranked first).
  """
  s, pos = _similarities(z1, z2, temperature)
  n = s.shape[0]
  not_self = ~jnp.eye(n, dtype=bool)
  s_pos = jnp.take_along_axis(s, pos[:, None], axis=1)[:, 0]
  lse, _ = masked_logsumexp(s, not_self)
  loss = jnp.mean(lse - s_pos)
  metrics = {
      "align": jnp.mean(s_pos) * temperature,
      "lse": jnp.mean(lse),
      "acc": _positive_accuracy(s, pos, not_self),
  }
  return loss, metrics


def mdssl_loss(
    z1: jax.Array,
    z2: jax.Array,
    domains: jax.Array,
    *,
    temperature: float,
    lambda1: float | jax.Array,
    lambda2: float | jax.Array,
    valid: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MDSSL three-level hierarchical contrastive loss (seed 000, METHODS.md §2).

  With s(a, b) the cosine similarity of the 2B rows of concat(z1, z2) over τ:

    loss = − mean_i s(z1_i, z2_i)
           + λ1 · mean_a log Σ_{b≠a, dom(b)=dom(a)} exp s(a, b)
           + λ2 · mean_a log Σ_{b: dom(b)≠dom(a)}   exp s(a, b)

  Means run over the B pairs (first term) and the 2B anchors (others). The
  positive stays inside the within-domain sum. An anchor with no row of
  another domain in the batch contributes 0 to the cross term.

  Sign convention: this is the equation form, in which λ1 ≥ 0 weighs
  within-domain *repulsion* and SimCLR per domain is λ1 = 1, λ2 = 0. The
  paper's figures write λ1 with the opposite sign (their −0.9 is 0.9 here).
  With one domain, λ1 = 1 and λ2 = 0 this equals :func:`nt_xent`.

  Only equality of domain ids matters, so relabelling the domains (e.g.
  k-means pseudo-domains between rounds) leaves the loss unchanged.

  Args:
    z1: [B, d] projections of view 1.
    z2: [B, d] projections of view 2 of the same B images.
    domains: [B] int domain id of each image.
    temperature: τ > 0.
    lambda1: weight of the within-domain term (may be traced).
    lambda2: weight of the cross-domain term (may be traced).
    valid: optional [B] mask (bool or 0/1): images with 0 are left out of
      every term, as anchors and as rows of any sum (pseudo-domain rows
      the robust filter ignored, METHODS §2.8 item 5); the means then run
      over the valid pairs and anchors (0 when there are none).

  Returns:
    (scalar loss, metrics) with the three terms "align", "within", "cross"
    (unweighted, as they enter the loss), "cross_valid" (fraction of anchors
    with a cross-domain row) and "acc" (positive ranked first in its domain).
  """
  s, pos = _similarities(z1, z2, temperature)
  if domains.shape != z1.shape[:1]:
    raise ValueError(
        f"domains must be [B]={z1.shape[:1]}, got {domains.shape}.")
  if valid is not None and valid.shape != z1.shape[:1]:
    raise ValueError(f"valid must be [B]={z1.shape[:1]}, got {valid.shape}.")
  dom = jnp.concatenate([domains, domains])
  n = s.shape[0]
  same = dom[:, None] == dom[None, :]
  within_mask = same & ~jnp.eye(n, dtype=bool)
  cross_mask = ~same
  if valid is None:
    mean = jnp.mean
  else:
    keep = jnp.concatenate([valid, valid]).astype(bool)
    within_mask &= keep[None, :]
    cross_mask &= keep[None, :]
    weight = keep.astype(jnp.float32)
    count = jnp.maximum(jnp.sum(weight), 1.0)
    mean = lambda x: jnp.sum(jnp.where(keep, x, 0.0)) / count
  s_pos = jnp.take_along_axis(s, pos[:, None], axis=1)[:, 0]
  align = mean(s_pos)  # Equals the mean over the B pairs: s is symmetric.
  lse_in, _ = masked_logsumexp(s, within_mask)
  lse_cross, has_cross = masked_logsumexp(s, cross_mask)
  within = mean(lse_in)
  cross = mean(lse_cross)  # Rows without a cross set contribute 0.
  loss = -align + lambda1 * within + lambda2 * cross
  metrics = {
      "align": align,
      "within": within,
      "cross": cross,
      "cross_valid": mean(has_cross.astype(jnp.float32)),
      "acc": mean(jnp.argmax(jnp.where(within_mask, s, -jnp.inf), axis=-1)
                  == pos),
  }
  return loss, metrics
