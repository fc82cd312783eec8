"""Redundancy-reduction losses: VICReg and Barlow Twins (METHODS.md §5.4-5.5).

Both losses take the two views' projector outputs as [B, d] arrays, with no
ℓ2 normalisation and no stop-gradient (both branches share weights), and
return ``(loss, metrics)``. Statistics are taken over the batch axis, so
under ``jit`` over a globally sharded batch they are global statistics, as
in the papers.

Synopsis::

  loss, metrics = vicreg_loss(z1, z2)               # λ = μ = 25, ν = 1
  loss, metrics = barlow_twins_loss(z1, z2, scale=0.1)  # solo-learn scale
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Full-fp32 matmuls: TPU/GPU defaults (bf16 passes, TF32) visibly bias the
# d×d statistics, and these products are cheap next to the network.
_HIGHEST = jax.lax.Precision.HIGHEST


def _check_pair(name: str, z1: jax.Array, z2: jax.Array, min_batch: int):
  if z1.ndim != 2 or z2.ndim != 2:
    raise ValueError(
        f"{name}: z1 and z2 must be [B, d] arrays, got shapes {z1.shape} and "
        f"{z2.shape}; flatten any view axis into separate calls.")
  if z1.shape != z2.shape:
    raise ValueError(
        f"{name}: z1 and z2 must have the same shape, got {z1.shape} and "
        f"{z2.shape}; pass the two views of the same images.")
  if z1.shape[0] < min_batch:
    raise ValueError(
        f"{name}: needs a batch of at least {min_batch} rows to estimate "
        f"per-dimension statistics, got B={z1.shape[0]}.")


def _off_diagonal_sq_sum(c: jax.Array) -> jax.Array:
  """Σ_{i≠j} c_ij² for a square [d, d] matrix."""
  return jnp.sum(c * c) - jnp.sum(jnp.diagonal(c) ** 2)


def _vicreg_variance(z: jax.Array, gamma: float, eps: float) -> jax.Array:
  """(1/d) Σ_j max(0, γ − sqrt(Var_b(z_:,j) + ε)), unbiased variance."""
  std = jnp.sqrt(jnp.var(z, axis=0, ddof=1) + eps)
  return jnp.mean(jax.nn.relu(gamma - std))


def _vicreg_covariance(z: jax.Array) -> jax.Array:
  """(1/d) Σ_{i≠j} C_ij² with C the unbiased [d, d] covariance of z."""
  b, d = z.shape
  zc = z - jnp.mean(z, axis=0, keepdims=True)
  cov = jnp.matmul(zc.T, zc, precision=_HIGHEST) / (b - 1)
  return _off_diagonal_sq_sum(cov) / d


def vicreg_loss(
    z1: jax.Array,
    z2: jax.Array,
    *,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """VICReg loss (Bardes et al. 2022), exactly as METHODS.md §5.5.

  L = λ·inv + μ·[var(Z) + var(Z′)] + ν·[cov(Z) + cov(Z′)] with

  * inv = (1/(B·d)) Σ_b ‖z_b − z′_b‖² (a mean over B·d entries),
  * var(Z) = (1/d) Σ_j max(0, γ − sqrt(Var_b(z_:,j) + ε)), unbiased variance,
    ε inside the square root,
  * cov(Z) = (1/d) Σ_{i≠j} C_ij², C = (Z − Z̄)ᵀ(Z − Z̄)/(B − 1).

  The variance terms of the two views are summed, as in METHODS.md and
  solo-learn; the original facebookresearch code averages them (a factor ½ on
  μ).

  Args:
    z1: [B, d] expander outputs of view 1 (B ≥ 2).
    z2: [B, d] expander outputs of view 2.
    sim_coeff: λ, weight of the invariance term.
    std_coeff: μ, weight of the variance terms.
    cov_coeff: ν, weight of the covariance terms.
    gamma: γ, target standard deviation per dimension.
    eps: ε added to the variance inside the square root.

  Returns:
    (loss, metrics): scalar float32 loss; metrics holds the unweighted
    scalars "inv", "var" (var(Z) + var(Z′)) and "cov" (cov(Z) + cov(Z′)).
  """
  _check_pair("vicreg_loss", z1, z2, min_batch=2)
  z1 = z1.astype(jnp.float32)
  z2 = z2.astype(jnp.float32)
  inv = jnp.mean(jnp.square(z1 - z2))
  var = _vicreg_variance(z1, gamma, eps) + _vicreg_variance(z2, gamma, eps)
  cov = _vicreg_covariance(z1) + _vicreg_covariance(z2)
  loss = sim_coeff * inv + std_coeff * var + cov_coeff * cov
  return loss, {"inv": inv, "var": var, "cov": cov}


def _standardize(z: jax.Array, eps: float) -> jax.Array:
  """Per-dimension (z − mean_b) / sqrt(biased Var_b + eps)."""
  mean = jnp.mean(z, axis=0, keepdims=True)
  var = jnp.var(z, axis=0, keepdims=True)
  return (z - mean) * jax.lax.rsqrt(var + eps)


def barlow_twins_loss(
    z1: jax.Array,
    z2: jax.Array,
    *,
    lambd: float = 5e-3,
    scale: float = 1.0,
    eps: float = 1e-5,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Barlow Twins loss (Zbontar et al. 2021), METHODS.md §5.4.

  Each view is standardised per dimension over the batch,
  ẑ = (z − mean_b) / sqrt(Var_b + eps) with the *biased* variance and eps
  inside the square root, i.e. exactly the non-affine
  ``torch.nn.BatchNorm1d(affine=False)`` (eps = 1e-5) of the reference code.
  The eps keeps constant (collapsed) dimensions finite; it makes the loss
  invariant to per-dimension affine rescaling z ↦ a·z + b only while
  a²·Var ≫ eps. Then C = ẑ1ᵀ ẑ2 / B (d×d) and

  L = scale · [Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²].

  Args:
    z1: [B, d] projector outputs of view 1 (B ≥ 2).
    z2: [B, d] projector outputs of view 2.
    lambd: λ, off-diagonal weight (paper 5e-3; rescale it if d changes).
    scale: overall factor (solo-learn uses 0.1).
    eps: added to the biased variance inside the square root.

  Returns:
    (loss, metrics): scalar float32 loss; metrics holds the unweighted
    "on_diag" = Σ_i (1 − C_ii)², "off_diag" = Σ_{i≠j} C_ij² and
    "corr_diag_mean" = mean_i C_ii (→ 1 as the views align).
  """
  _check_pair("barlow_twins_loss", z1, z2, min_batch=2)
  b = z1.shape[0]
  h1 = _standardize(z1.astype(jnp.float32), eps)
  h2 = _standardize(z2.astype(jnp.float32), eps)
  c = jnp.matmul(h1.T, h2, precision=_HIGHEST) / b
  diag = jnp.diagonal(c)
  on_diag = jnp.sum(jnp.square(1.0 - diag))
  off_diag = _off_diagonal_sq_sum(c)
  loss = scale * (on_diag + lambd * off_diag)
  return loss, {"on_diag": on_diag, "off_diag": off_diag,
                "corr_diag_mean": jnp.mean(diag)}
