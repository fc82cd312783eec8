"""Teacher-student losses: BYOL, MoCo v3 and DINO (METHODS.md §5.2, §5.3, §5.6).

Every function here takes the *target* side (EMA projections, momentum keys,
teacher logits) as an ordinary array and wraps it in ``stop_gradient``, so
``jax.grad`` with respect to it is exactly zero even when the caller computes
online and target outputs from the same parameters. All arithmetic runs in
float32 whatever the input dtype (METHODS.md §1.5 item 1).

Multi-view inputs are stacked view-major: ``x[v, i]`` is view ``v`` of image
``i``.

Synopsis::

  loss, metrics = byol_loss(preds, jax.lax.stop_gradient(target_projs))
  loss, metrics = mocov3_loss(queries, keys, temperature=1.0)

  tau_t = teacher_temperature(step, warmup_steps=30 * steps_per_epoch)
  loss, metrics = dino_loss(student, teacher, center, teacher_temp=tau_t)
  center = dino_center_update(center, teacher)  # After the loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mdssl_jax.losses.common import l2_normalize

_HIGHEST = jax.lax.Precision.HIGHEST


def _check_positive(name: str, value) -> None:
  """Raises ValueError if a concrete hyperparameter is not > 0."""
  # Traced values (e.g. a scheduled temperature under jit) cannot be checked.
  if isinstance(value, (int, float)) and not value > 0:
    raise ValueError(f"{name} must be > 0, got {value}.")


def _check_views(name: str, x: jax.Array) -> None:
  if x.ndim != 3:
    raise ValueError(
        f"{name} must be [V, B, d] (views stacked on axis 0), got shape"
        f" {x.shape}; stack per-view arrays with jnp.stack(views).")


def _pair_mask(rows: int, cols: int) -> jax.Array:
  """[rows, cols] boolean mask, False where row index == column index."""
  return jnp.arange(rows)[:, None] != jnp.arange(cols)[None, :]


def byol_loss(
    online_preds: jax.Array, target_projs: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Symmetrised BYOL normalised regression loss (METHODS.md §5.3).

  With p_v = n(online_preds[v]) and t_w = n(sg(target_projs[w])):

    loss = 2 / (V (V − 1)) · Σ_{v ≠ w} mean_i ‖p_v,i − t_w,i‖².

  For V = 2 this is exactly BYOL's mean_i [‖p_1 − t_2‖² + ‖p_2 − t_1‖²]
  = mean_i [4 − 2⟨p_1, t_2⟩ − 2⟨p_2, t_1⟩]. For V > 2 it averages the
  V (V − 1) ordered pairs and multiplies by 2, so the scale (0 to 8) stays
  that of the two-view loss.

  Args:
    online_preds: [V, B, d] online predictor outputs, V ≥ 2.
    target_projs: [V, B, d] target (EMA) projector outputs of the same views.
      No gradient flows into them.

  Returns:
    (scalar loss, metrics) with "align" (mean cosine over the cross-view
    pairs) and "target_std" (per-dimension batch std of n(t), averaged over
    dimensions and views: about 1/sqrt(d) when spread, 0 when collapsed).
  """
  _check_views("online_preds", online_preds)
  if online_preds.shape != target_projs.shape:
    raise ValueError(
        f"online_preds {online_preds.shape} and target_projs"
        f" {target_projs.shape} must have the same [V, B, d] shape.")
  v = online_preds.shape[0]
  if v < 2:
    raise ValueError(f"byol_loss needs V ≥ 2 views, got V={v}.")
  p = l2_normalize(online_preds)
  t = l2_normalize(jax.lax.stop_gradient(target_projs))
  # ‖p − t‖² = ‖p‖² + ‖t‖² − 2⟨p, t⟩, kept exact for near-zero vectors whose
  # normalised norm is below 1.
  dots = jnp.einsum("vbd,wbd->vwb", p, t, precision=_HIGHEST)
  p_sq = jnp.sum(p * p, axis=-1)
  t_sq = jnp.sum(t * t, axis=-1)
  sq_dist = p_sq[:, None, :] + t_sq[None, :, :] - 2.0 * dots  # [V, V, B]
  cross = _pair_mask(v, v)[:, :, None]
  num_pairs = v * (v - 1)
  loss = 2.0 * jnp.sum(jnp.where(cross, sq_dist, 0.0)) / (
      num_pairs * p.shape[1])
  metrics = {
      "align": jnp.sum(jnp.where(cross, dots, 0.0)) / (
          num_pairs * p.shape[1]),
      "target_std": jnp.mean(jnp.std(t, axis=1)),
  }
  return loss, metrics


def _ctr(q: jax.Array, k: jax.Array, temperature) -> tuple[jax.Array, ...]:
  """MoCo v3 InfoNCE of [B, d] queries against [B, d] keys (positive i = i)."""
  logits = jnp.einsum("id,jd->ij", q, k, precision=_HIGHEST) / temperature
  pos = jnp.diagonal(logits)
  loss = jnp.mean(jax.nn.logsumexp(logits, axis=-1) - pos)
  acc = jnp.mean(jnp.argmax(logits, axis=-1) == jnp.arange(q.shape[0]))
  return loss, jnp.mean(pos) * temperature, acc


def mocov3_loss(
    queries: jax.Array, keys: jax.Array, *, temperature: float = 1.0
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MoCo v3 symmetric contrastive loss with in-batch keys (METHODS.md §5.2).

  With q_v = n(queries[v]) and k_v = n(sg(keys[v])):

    ctr(q, k) = mean_i [−q_i·k_i/τ + log Σ_j exp(q_i·k_j/τ)],
    loss = 2τ · [ctr(q_1, k_2) + ctr(q_2, k_1)].

  The 2τ factor is the reference code's. Keys come from the whole (global)
  batch, the positive is on the diagonal and there is no queue and no
  self-mask (queries and keys are different sets).

  Args:
    queries: [2, B, d] online predictor outputs of the two views.
    keys: [2, B, d] momentum-encoder projector outputs of the same views. No
      gradient flows into them.
    temperature: τ > 0; 1.0 for ResNet (code default), 0.2 for ViT and
      solo-learn.

  Returns:
    (scalar loss, metrics) with "align" (mean positive cosine) and "acc"
    (fraction of queries whose positive key scores highest).
  """
  _check_views("queries", queries)
  if queries.shape != keys.shape or queries.shape[0] != 2:
    raise ValueError(
        f"queries {queries.shape} and keys {keys.shape} must both be"
        " [2, B, d] (two views, same shape).")
  _check_positive("temperature", temperature)
  q = l2_normalize(queries)
  k = l2_normalize(jax.lax.stop_gradient(keys))
  loss12, align12, acc12 = _ctr(q[0], k[1], temperature)
  loss21, align21, acc21 = _ctr(q[1], k[0], temperature)
  loss = 2.0 * temperature * (loss12 + loss21)
  metrics = {
      "align": 0.5 * (align12 + align21),
      "acc": 0.5 * (acc12 + acc21),
  }
  return loss, metrics


def _entropy(log_p: jax.Array) -> jax.Array:
  """Mean entropy of the distributions exp(log_p) along the last axis."""
  return jnp.mean(-jnp.sum(jnp.exp(log_p) * log_p, axis=-1))


def dino_loss(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    center: jax.Array,
    *,
    student_temp: float = 0.1,
    teacher_temp: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """DINO self-distillation cross-entropy (METHODS.md §5.6).

  P_t[g] = softmax((sg(teacher_logits[g]) − c) / τ_t) for the Vg global
  views and log P_s[v] = log_softmax(student_logits[v] / τ_s) for all Vs
  views. Then

    loss = mean over pairs (g < Vg, v < Vs, v ≠ g) of
           mean_i H(P_t[g, i], P_s[v, i]),

  i.e. the teacher's view g never supervises the student's view of the same
  crop. Student views must list the global crops first, in the teacher's
  order, so that student view g is teacher view g.

  Update the centre afterwards with :func:`dino_center_update` on the same,
  un-centred teacher logits.

  Args:
    student_logits: [Vs, B, K] student head outputs, globals first.
    teacher_logits: [Vg, B, K] teacher head outputs for the global views,
      1 ≤ Vg ≤ Vs. No gradient flows into them.
    center: [K] running teacher centre. No gradient flows into it.
    student_temp: τ_s > 0.
    teacher_temp: τ_t > 0 (may be a traced scalar, see
      :func:`teacher_temperature`).

  Returns:
    (scalar loss, metrics) with "teacher_entropy" and "student_entropy" (mean
    entropies of P_t and P_s, in nats; 0 is one-hot collapse, log K uniform
    collapse) and "kl" (loss minus the mean teacher entropy over the pairs).
  """
  _check_views("student_logits", student_logits)
  _check_views("teacher_logits", teacher_logits)
  vs, b, k = student_logits.shape
  vg = teacher_logits.shape[0]
  if teacher_logits.shape[1:] != (b, k) or not 1 <= vg <= vs:
    raise ValueError(
        f"teacher_logits must be [Vg, B, K] with B, K as in student_logits"
        f" {student_logits.shape} and 1 ≤ Vg ≤ Vs; got {teacher_logits.shape}."
        " Pass only the global views to the teacher.")
  if vs < 2:
    raise ValueError(
        "dino_loss needs at least 2 student views (every pair with v == g is"
        f" skipped), got Vs={vs}.")
  if center.shape != (k,):
    raise ValueError(f"center must be [K]=({k},), got {center.shape}.")
  _check_positive("student_temp", student_temp)
  _check_positive("teacher_temp", teacher_temp)

  teacher = jax.lax.stop_gradient(teacher_logits).astype(jnp.float32)
  centred = teacher - jax.lax.stop_gradient(center).astype(jnp.float32)
  log_pt = jax.nn.log_softmax(centred / teacher_temp, axis=-1)
  pt = jnp.exp(log_pt)
  log_ps = jax.nn.log_softmax(
      student_logits.astype(jnp.float32) / student_temp, axis=-1)
  # ce[g, v, i] = H(P_t[g, i], P_s[v, i]).
  ce = -jnp.einsum("gik,vik->gvi", pt, log_ps, precision=_HIGHEST)
  pairs = _pair_mask(vg, vs)[:, :, None]
  num_terms = (vg * vs - vg) * b
  loss = jnp.sum(jnp.where(pairs, ce, 0.0)) / num_terms
  # Each teacher view g enters (Vs − 1) pairs, so the pair-averaged teacher
  # entropy equals the plain mean over views and images.
  teacher_entropy = _entropy(log_pt)
  metrics = {
      "teacher_entropy": teacher_entropy,
      "student_entropy": _entropy(log_ps),
      "kl": loss - teacher_entropy,
  }
  return loss, metrics


def dino_center_update(
    center: jax.Array, teacher_logits: jax.Array, *, momentum: float = 0.9
) -> jax.Array:
  """EMA update of the DINO teacher centre (METHODS.md §5.6).

  c ← m·c + (1 − m)·mean over views and images of the *un-centred* teacher
  logits. Call it after :func:`dino_loss` with the same teacher logits.

  Args:
    center: [K] current centre.
    teacher_logits: [Vg, B, K] teacher outputs of the global views.
    momentum: m in [0, 1].

  Returns:
    [K] float32 new centre (carries no gradient).
  """
  _check_views("teacher_logits", teacher_logits)
  k = teacher_logits.shape[-1]
  if center.shape != (k,):
    raise ValueError(f"center must be [K]=({k},), got {center.shape}.")
  if isinstance(momentum, (int, float)) and not 0.0 <= momentum <= 1.0:
    raise ValueError(f"momentum must be in [0, 1], got {momentum}.")
  batch_mean = jnp.mean(
      jax.lax.stop_gradient(teacher_logits).astype(jnp.float32), axis=(0, 1))
  center = jax.lax.stop_gradient(center).astype(jnp.float32)
  return momentum * center + (1.0 - momentum) * batch_mean


def teacher_temperature(
    step: jax.Array | int,
    *,
    warmup_start: float = 0.04,
    final: float = 0.07,
    warmup_steps: int,
) -> jax.Array:
  """DINO teacher temperature: linear warm-up, then constant (METHODS.md §5.6).

  τ_t(step) = warmup_start + (final − warmup_start) · min(step / W, 1), so it
  equals warmup_start at step 0 and final from step W on. W = 0 gives the
  constant `final` (solo-learn's CIFAR setting).

  Args:
    step: scalar int step (Python int or traced array). Negative steps give
      warmup_start.
    warmup_start: τ_t at step 0.
    final: τ_t after the warm-up.
    warmup_steps: W ≥ 0, length of the warm-up in steps.

  Returns:
    float32 scalar τ_t.
  """
  if warmup_steps < 0:
    raise ValueError(f"warmup_steps must be ≥ 0, got {warmup_steps}.")
  _check_positive("warmup_start", warmup_start)
  _check_positive("final", final)
  if warmup_steps == 0:
    return jnp.asarray(final, jnp.float32)
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / warmup_steps, 0.0, 1.0)
  return jnp.asarray(warmup_start + (final - warmup_start) * frac, jnp.float32)
