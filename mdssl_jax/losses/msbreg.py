"""MSBReg loss: multiview centroid + singular value + Brownian terms.

METHODS.md §4. L = L_mc + λ_s·L_s + λ_b·L_b for K ≥ 2 views per image, with
online predictions p_ik = n(online prediction of view k of image i) and
targets t_ik = n(sg(target projection)).

The main paper's equations could not be retrieved, so every formula here is
a *reading* (METHODS.md §4.2-4.4, §7 item 8). Each documented reading is
selectable by a flag; the defaults are the most defensible readings:

* ``centroid_mode="leave_one_out"``: ‖p_ik − mean_{j≠k} t_ij‖², which for
  K = 2 is half the symmetrised BYOL loss ("K = 2 is the BYOL setting").
* ``singular_mode="nuclear"``: L_s = −mean_k ‖P_k‖_*, no batch centring.
* ``brownian_per="image"``: one random unit direction per image, shared by
  its K views, drawn from ``noise_key`` (pass a fresh key every step).

Synopsis::

  key = jax.random.fold_in(rng, step)
  loss, m = msbreg_loss(preds, projs, key)   # preds, projs: [K, B, d]
  # m["mc"], m["sv"], m["nuclear_norm"] are useful to log; m["brownian"] is
  # pure noise by construction.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mdssl_jax.losses.common import l2_normalize

CENTROID_MODES = ("leave_one_out", "centroid_to_centroid", "full_centroid")
SINGULAR_MODES = ("nuclear", "log", "spread")
BROWNIAN_PER = ("image", "view")


def _check_views(fn: str, arg: str, x: jax.Array) -> None:
  if x.ndim != 3:
    raise ValueError(
        f"{fn}: {arg} must be a [K, B, d] array (views, images, features), "
        f"got shape {x.shape}; stack the views on a leading axis, e.g. "
        "jnp.stack([p1, p2]).")


def _check_choice(fn: str, arg: str, value: str,
                  choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ValueError(
        f"{fn}: {arg}={value!r} is not one of {choices}.")


def _check_centroid_args(fn: str, online_preds: jax.Array,
                         target_projs: jax.Array, centroid_mode: str) -> None:
  _check_views(fn, "online_preds", online_preds)
  _check_views(fn, "target_projs", target_projs)
  if online_preds.shape != target_projs.shape:
    raise ValueError(
        f"{fn}: online_preds and target_projs must have the same [K, B, d] "
        f"shape, got {online_preds.shape} and {target_projs.shape}; the "
        "predictor output width must equal the projector output width.")
  _check_choice(fn, "centroid_mode", centroid_mode, CENTROID_MODES)
  if centroid_mode == "leave_one_out" and online_preds.shape[0] < 2:
    raise ValueError(
        f"{fn}: centroid_mode='leave_one_out' needs K >= 2 views, got "
        f"K={online_preds.shape[0]}.")


# The private terms take already-normalised float32 [K, B, d] arrays.


def _centroid_term(p: jax.Array, t: jax.Array, mode: str,
                   renormalize: bool) -> jax.Array:
  """L_mc on normalised p (online) and t (target, no gradient)."""
  k = p.shape[0]
  t_sum = jnp.sum(t, axis=0, keepdims=True)  # [1, B, d]
  if mode == "centroid_to_centroid":
    p_bar = jnp.mean(p, axis=0)
    t_bar = t_sum[0] / k
    if renormalize:
      p_bar, t_bar = l2_normalize(p_bar), l2_normalize(t_bar)
    return jnp.mean(jnp.sum(jnp.square(p_bar - t_bar), axis=-1))
  if mode == "leave_one_out":
    centroid = (t_sum - t) / (k - 1)  # [K, B, d]: c̄_{i,−k}
  else:  # full_centroid
    centroid = t_sum / k
  if renormalize:
    centroid = l2_normalize(centroid)
  return jnp.mean(jnp.sum(jnp.square(p - centroid), axis=-1))


def _singular_term(p: jax.Array, mode: str, center: bool,
                   eps: float) -> tuple[jax.Array, jax.Array]:
  """Returns (L_s, mean_k ‖P_k‖_*) for normalised p of shape [K, B, d]."""
  if center:
    p = p - jnp.mean(p, axis=1, keepdims=True)
  # compute_uv=False: its JVP is diag(Uᵀ dP V), finite even for repeated
  # singular values, unlike the full-SVD rule with 1/(σ_i² − σ_j²) terms.
  s = jnp.linalg.svd(p.astype(jnp.float32), compute_uv=False)  # [K, r]
  nuclear = jnp.mean(jnp.sum(s, axis=-1))
  if mode == "nuclear":
    loss = -nuclear
  elif mode == "log":
    loss = -jnp.mean(jnp.sum(jnp.log(s + eps), axis=-1))
  else:  # spread
    dev = s - jnp.mean(s, axis=-1, keepdims=True)
    loss = jnp.mean(jnp.sum(jnp.square(dev), axis=-1))
  return loss, nuclear


def _brownian_directions(noise_key: jax.Array, shape: tuple[int, int, int],
                         per: str) -> jax.Array:
  """Unit random directions r̂ broadcastable to [K, B, d]."""
  k, b, d = shape
  draw_shape = (b, d) if per == "image" else (k, b, d)
  r = jax.random.normal(noise_key, draw_shape, dtype=jnp.float32)
  return l2_normalize(r)


def _brownian_term(p: jax.Array, noise_key: jax.Array, per: str) -> jax.Array:
  r_hat = jax.lax.stop_gradient(_brownian_directions(noise_key, p.shape, per))
  return -jnp.mean(jnp.sum(p * r_hat, axis=-1))


def msbreg_centroid_loss(
    online_preds: jax.Array,
    target_projs: jax.Array,
    *,
    centroid_mode: str = "leave_one_out",
    renormalize_centroid: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Multiview centroid loss L_mc (METHODS.md §4.2; a reading, see module).

  With p_ik = n(online_preds[k, i]) and t_ik = n(sg(target_projs[k, i])):

  * "leave_one_out" (default): (1/(B·K)) Σ_i Σ_k ‖p_ik − c̄_{i,−k}‖² with
    c̄_{i,−k} = (1/(K−1)) Σ_{j≠k} t_ij. For K = 2 this equals
    ½·mean_i[‖p_i1 − t_i2‖² + ‖p_i2 − t_i1‖²], half the symmetrised BYOL
    loss.
  * "centroid_to_centroid" (the literal figure caption):
    (1/B) Σ_i ‖(1/K) Σ_k p_ik − (1/K) Σ_k t_ik‖².
  * "full_centroid": (1/(B·K)) Σ_i Σ_k ‖p_ik − (1/K) Σ_j t_ij‖², which
    includes each view's own target.

  Whether the paper re-normalises centroids is unknown; by default they are
  the plain geometric means. ``renormalize_centroid=True`` applies n(·) to
  every centroid the mode builds (for "centroid_to_centroid" both the online
  and the target centroid).

  Args:
    online_preds: [K, B, d] online predictor outputs (unnormalised).
    target_projs: [K, B, d] target projector outputs; receive no gradient.
    centroid_mode: one of CENTROID_MODES.
    renormalize_centroid: project centroids back onto the unit sphere.

  Returns:
    (loss, {"mc": loss}), float32 scalars.
  """
  fn = "msbreg_centroid_loss"
  _check_centroid_args(fn, online_preds, target_projs, centroid_mode)
  p = l2_normalize(online_preds)
  # Targets come from the EMA network; sg documents intent and keeps the
  # function safe when both branches share parameters.
  t = l2_normalize(jax.lax.stop_gradient(target_projs))
  loss = _centroid_term(p, t, centroid_mode, renormalize_centroid)
  return loss, {"mc": loss}


def singular_value_loss(
    online_preds: jax.Array,
    *,
    singular_mode: str = "nuclear",
    center_singular: bool = False,
    eps: float = 1e-4,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Singular value loss L_s (METHODS.md §4.3; the form is uncertain).

  P_k = [n(online_preds[k, 1]); …; n(online_preds[k, B])] ∈ R^{B×d}, batch-
  centred first when ``center_singular`` (default off, as centring is not
  known). With σ_k the min(B, d) singular values of P_k (fp32
  ``jnp.linalg.svd(..., compute_uv=False)``), averaged over the K views:

  * "nuclear" (default): −‖P_k‖_* = −Σ σ_ki, maximal for isotropic,
    decorrelated embeddings; ‖P_k‖_* ≤ sqrt(min(B, d)·B).
  * "log": −Σ_i log(σ_ki + eps). eps keeps rank-deficient P_k (e.g. centred
    with B ≤ d) finite and bounds the gradient by 1/eps; it sits well above
    the float32 SVD noise floor (~1e-7·σ_max, σ_max ≤ sqrt(B)), below which
    log σ of a zero singular value is just rounding noise.
  * "spread": Σ_i (σ_ki − mean_i σ_ki)², a penalty on unequal spectra.

  Args:
    online_preds: [K, B, d] online predictor outputs (unnormalised).
    singular_mode: one of SINGULAR_MODES.
    center_singular: subtract the batch mean of each P_k before the SVD.
    eps: added to σ inside the log of the "log" mode.

  Returns:
    (loss, {"sv": loss, "nuclear_norm": mean_k ‖P_k‖_*}), float32 scalars;
    the nuclear norm is that of the (centred, if requested) P_k.
  """
  fn = "singular_value_loss"
  _check_views(fn, "online_preds", online_preds)
  _check_choice(fn, "singular_mode", singular_mode, SINGULAR_MODES)
  p = l2_normalize(online_preds)
  loss, nuclear = _singular_term(p, singular_mode, center_singular, eps)
  return loss, {"sv": loss, "nuclear_norm": nuclear}


def brownian_loss(
    online_preds: jax.Array,
    noise_key: jax.Array,
    *,
    brownian_per: str = "image",
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Brownian diffusive loss L_b (METHODS.md §4.4; a reading).

  L_b = −(1/(B·K)) Σ_i Σ_k ⟨p_ik, sg(r̂)⟩ with r̂ = n(r), r ~ N(0, I_d):

  * "image" (default, [assumed]): r = ``jax.random.normal(noise_key, (B, d))``
    row i, shared by the K views of image i;
  * "view": r = ``jax.random.normal(noise_key, (K, B, d))``, one per view.

  The gradient on each embedding is a zero-mean random kick; the value is
  pure noise and must not be used for monitoring. Pass a fresh key per step
  (e.g. ``jax.random.fold_in(rng, step)``).

  Args:
    online_preds: [K, B, d] online predictor outputs (unnormalised).
    noise_key: a JAX PRNG key (typed or raw uint32).
    brownian_per: "image" or "view".

  Returns:
    (loss, {"brownian": loss}), float32 scalars.
  """
  fn = "brownian_loss"
  _check_views(fn, "online_preds", online_preds)
  _check_choice(fn, "brownian_per", brownian_per, BROWNIAN_PER)
  p = l2_normalize(online_preds)
  loss = _brownian_term(p, noise_key, brownian_per)
  return loss, {"brownian": loss}


def msbreg_loss(
    online_preds: jax.Array,
    target_projs: jax.Array,
    noise_key: jax.Array,
    *,
    lambda_s: float = 0.004,
    lambda_b: float = 0.5,
    centroid_mode: str = "leave_one_out",
    renormalize_centroid: bool = False,
    singular_mode: str = "nuclear",
    center_singular: bool = False,
    brownian_per: str = "image",
    sv_eps: float = 1e-4,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Full MSBReg objective L = L_mc + λ_s·L_s + λ_b·L_b (METHODS.md §4).

  All three terms act on the same normalised online predictions (METHODS.md
  §4.4 [assumed]); see ``msbreg_centroid_loss``, ``singular_value_loss`` and
  ``brownian_loss`` for each term and the readings its flag selects. The
  defaults (K = 4 views upstream, λ_s = 0.004, λ_b = 0.5) are the best
  ImageNet-100 cell of the supplement's Table 5; λ_b is tied to the mean
  normalisation of L_b used here.

  Args:
    online_preds: [K, B, d] online predictor outputs, view-major.
    target_projs: [K, B, d] target (EMA) projector outputs; no gradient.
    noise_key: PRNG key for the Brownian directions; fresh every step.
    lambda_s: weight λ_s of the singular value loss.
    lambda_b: weight λ_b of the Brownian loss.
    centroid_mode: "leave_one_out" | "centroid_to_centroid" |
      "full_centroid".
    renormalize_centroid: project centroids onto the unit sphere.
    singular_mode: "nuclear" | "log" | "spread".
    center_singular: batch-centre P_k before the SVD.
    brownian_per: "image" (shared over the K views) | "view".
    sv_eps: eps inside the log of singular_mode="log".

  Returns:
    (loss, metrics): float32 scalar loss; metrics "mc", "sv", "brownian"
    (unweighted terms) and "nuclear_norm" (mean_k ‖P_k‖_*).
  """
  fn = "msbreg_loss"
  _check_centroid_args(fn, online_preds, target_projs, centroid_mode)
  _check_choice(fn, "singular_mode", singular_mode, SINGULAR_MODES)
  _check_choice(fn, "brownian_per", brownian_per, BROWNIAN_PER)
  p = l2_normalize(online_preds)
  t = l2_normalize(jax.lax.stop_gradient(target_projs))
  mc = _centroid_term(p, t, centroid_mode, renormalize_centroid)
  sv, nuclear = _singular_term(p, singular_mode, center_singular, sv_eps)
  brown = _brownian_term(p, noise_key, brownian_per)
  loss = mc + lambda_s * sv + lambda_b * brown
  return loss, {"mc": mc, "sv": sv, "brownian": brown,
                "nuclear_norm": nuclear}
