"""Collapse diagnostics for SSL embeddings (issue #4 item 4).

``collapse_monitor`` computes cheap, jit-able scalars from a batch of
projections; ``is_collapsed`` turns them into a host-side verdict:

* complete collapse (every image maps to one point) drives "z_std" to 0;
* dimensional collapse (embeddings on a low-dimensional subspace) leaves
  "z_std" alone but drives "effective_rank" towards the subspace dimension.

Synopsis::

  m = jax.jit(collapse_monitor)(z1, z2)     # log m["z_std_ratio"], ...
  if is_collapsed(jax.device_get(m)):
    logging.warning("representation collapsed")
"""

from __future__ import annotations

from collections.abc import Mapping
import math

import jax
import jax.numpy as jnp
import numpy as np

from mdssl_jax.losses.common import l2_normalize

_HIGHEST = jax.lax.Precision.HIGHEST


def _check_embeddings(z: jax.Array, z2: jax.Array | None) -> None:
  if z.ndim != 2:
    raise ValueError(
        f"collapse_monitor: z must be a [B, d] array, got shape {z.shape}; "
        "reshape multi-view batches to [V*B, d] or pass one view.")
  if z.shape[0] < 2:
    raise ValueError(
        "collapse_monitor: needs at least 2 rows to measure spread, got "
        f"B={z.shape[0]}.")
  if z2 is not None and z2.shape != z.shape:
    raise ValueError(
        f"collapse_monitor: z2 must have the shape of z {z.shape}, got "
        f"{z2.shape}; pass the other view of the same images, row-aligned.")


def effective_rank(x: jax.Array) -> jax.Array:
  """Effective rank exp(H(σ/‖σ‖₁)) of a matrix (Roy & Vetterli 2007).

  Args:
    x: [B, d] matrix (use it centred; ``collapse_monitor`` does).

  Returns:
    float32 scalar in [1, min(B, d)]; 1 for a zero matrix.
  """
  s = jnp.linalg.svd(x.astype(jnp.float32), compute_uv=False)
  p = s / jnp.maximum(jnp.sum(s), 1e-30)
  # 0·log 0 = 0; the inner where keeps log's argument positive.
  plogp = jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)
  return jnp.exp(-jnp.sum(plogp))


def collapse_monitor(z: jax.Array,
                     z2: jax.Array | None = None) -> dict[str, jax.Array]:
  """Collapse and quality diagnostics of a batch of embeddings.

  Everything is computed on n(z) = z / sqrt(‖z‖² + 1e-12) in float32 and
  under stop-gradient (diagnostics only). For B ≥ 2 rows and d dimensions:

  * "z_std": mean over dims of the (biased) per-dimension std of n(z) over
    the batch; → 0 under collapse, ≈ 1/sqrt(d) for isotropic embeddings.
  * "z_std_ratio": z_std·sqrt(d); ≈ 1 healthy, → 0 collapsed.
  * "effective_rank": ``effective_rank`` of the batch-centred n(z); ≈ 1 for
    a rank-1 embedding, close to min(B−1, d) for isotropic ones.
  * "uniformity": log mean_{i≠j} exp(−2‖n(z_i) − n(z_j)‖²) (Wang & Isola
    2020, t = 2); 0 at complete collapse, lower is more uniform.
  * "alignment" (only when z2 is given): mean_i ‖n(z_i) − n(z2_i)‖² (Wang
    & Isola, α = 2); 0 for identical views.

  Args:
    z: [B, d] projections (unnormalised).
    z2: optional [B, d] projections of a second view, row-aligned with z.

  Returns:
    dict of float32 scalars with the keys above.
  """
  _check_embeddings(z, z2)
  b, d = z.shape
  zn = l2_normalize(jax.lax.stop_gradient(z))
  z_std = jnp.mean(jnp.std(zn, axis=0))
  centred = zn - jnp.mean(zn, axis=0, keepdims=True)

  sq_norms = jnp.sum(zn * zn, axis=-1)
  gram = jnp.matmul(zn, zn.T, precision=_HIGHEST)
  sq_dist = jnp.maximum(sq_norms[:, None] + sq_norms[None, :] - 2.0 * gram,
                        0.0)
  off_diag = ~jnp.eye(b, dtype=bool)
  uniformity = (jax.nn.logsumexp(-2.0 * sq_dist, where=off_diag)
                - math.log(b * (b - 1)))

  metrics = {
      "z_std": z_std,
      "z_std_ratio": z_std * math.sqrt(d),
      "effective_rank": effective_rank(centred),
      "uniformity": uniformity,
  }
  if z2 is not None:
    z2n = l2_normalize(jax.lax.stop_gradient(z2))
    metrics["alignment"] = jnp.mean(jnp.sum(jnp.square(zn - z2n), axis=-1))
  return metrics


def is_collapsed(metrics: Mapping[str, object], *,
                 min_std_ratio: float = 0.1,
                 min_effective_rank: float = 2.0) -> bool:
  """Host-side verdict on ``collapse_monitor`` output.

  Collapsed when z_std_ratio < min_std_ratio (complete collapse) or
  effective_rank < min_effective_rank (dimensional collapse). Call it
  outside ``jit``: it converts the metrics to Python floats.

  Args:
    metrics: mapping with at least "z_std_ratio" and "effective_rank"
      (scalars, device or host arrays).
    min_std_ratio: threshold on z_std·sqrt(d).
    min_effective_rank: threshold on the effective rank.

  Returns:
    True if either diagnostic is below its threshold or not finite.
  """
  missing = [k for k in ("z_std_ratio", "effective_rank") if k not in metrics]
  if missing:
    raise ValueError(
        f"is_collapsed: metrics lack {missing}; pass the dict returned by "
        "collapse_monitor (or a superset of it).")
  std_ratio = float(np.asarray(metrics["z_std_ratio"]))
  rank = float(np.asarray(metrics["effective_rank"]))
  if not (math.isfinite(std_ratio) and math.isfinite(rank)):
    return True
  return std_ratio < min_std_ratio or rank < min_effective_rank
