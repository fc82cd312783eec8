"""Optimisers, learning-rate and EMA schedules.

Everything here works in *steps*. Durations given in epochs are converted
once, by `config_lib.run_shape`, so the trainer only ever sees steps.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from mdssl_jax.config_lib import LR_SCALINGS, OPTIMIZERS
from mdssl_jax.config_lib import WEIGHT_DECAY_SCHEDULES


def peak_learning_rate(optim_cfg: ml_collections.ConfigDict,
                       global_batch: int, multiplier: float = 1.0) -> float:
  """Scales the base LR by the global batch (in images, not views).

  linear: base × B / divisor (SimCLR/BYOL convention, divisor 256);
  sqrt: base × sqrt(B); none: base.
  """
  scaling = optim_cfg.lr_scaling
  base = optim_cfg.base_lr
  if scaling == "linear":
    lr = base * global_batch / optim_cfg.lr_batch_divisor
  elif scaling == "sqrt":
    lr = base * math.sqrt(global_batch)
  elif scaling == "none":
    lr = base
  else:
    raise ValueError(f"optim.lr_scaling={scaling!r}; use one of "
                     f"{LR_SCALINGS}.")
  return lr * multiplier


def warmup_cosine(peak: float, total_steps: int, warmup_steps: int,
                  end_factor: float = 0.0) -> optax.Schedule:
  """Linear warm-up from 0 to `peak`, then cosine decay to end_factor·peak."""
  end = peak * end_factor
  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = peak * step / max(warmup_steps, 1)
    frac = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    frac = jnp.clip(frac, 0.0, 1.0)
    cos = end + (peak - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
    return jnp.where(step < warmup_steps, warm, cos)
  return schedule


def weight_decay_schedule(optim_cfg: ml_collections.ConfigDict,
                          total_steps: int) -> optax.Schedule:
  """The weight-decay coefficient per step.

  constant: optim.weight_decay; cosine: from weight_decay at step 0 to
  weight_decay_end at total_steps, wd_t = end + (wd − end)·(1 + cos(π t/T))/2,
  no warm-up (DINO's `cosine_scheduler` for wd: 0.04 → 0.4).

  Args:
    optim_cfg: `config.optim` (weight_decay, weight_decay_schedule,
      weight_decay_end).
    total_steps: T.

  Returns:
    step -> float32 coefficient.
  """
  kind = optim_cfg.weight_decay_schedule
  start, end = optim_cfg.weight_decay, optim_cfg.weight_decay_end
  if kind == "constant":
    return lambda step: jnp.asarray(start, jnp.float32)
  if kind != "cosine":
    raise ValueError(f"optim.weight_decay_schedule={kind!r}; use one of "
                     f"{WEIGHT_DECAY_SCHEDULES}.")
  def schedule(step):
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(total_steps, 1),
                    0.0, 1.0)
    return end + (start - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
  return schedule


def _matrix_mask(params: Any) -> Any:
  """True for tensors that get weight decay / LARS adaptation.

  Those are the tensors with ndim > 1, except parameters named `frozen_*`
  (e.g. the ViT's frozen patch projection): the model stops their gradient,
  and without decay no optimiser moves them.
  """
  def decayed(path, p):
    name = getattr(path[-1], "key", str(path[-1])) if path else ""
    return p.ndim > 1 and not str(name).startswith("frozen_")
  return jax.tree_util.tree_map_with_path(decayed, params)


class _LarsState(NamedTuple):
  count: jax.Array


def scale_by_lars(lr_fn, *, weight_decay: float | optax.Schedule,
                  eta: float, clip_lr: bool,
                  eps: float = 1e-8) -> optax.GradientTransformation:
  """LARS's decay and trust ratio, before momentum and lr (METHODS.md §1.2).

  For each adapted tensor (excluded ones are handled by masking this
  transform), g ← (g + wd·w)·r with
    plain (`clip_lr=False`, You et al. 2017, BYOL, PyTorch SGD-based LARS):
      r = η‖w‖/‖g + wd·w‖;
    clipped (`clip_lr=True`, solo-learn):
      r = min(η‖w‖/(‖g‖ + wd‖w‖ + eps) / lr_t, 1);
  and r = 1 where ‖w‖ or the gradient norm is 0. Chain it before
  `optax.sgd(lr_fn, momentum)`, which keeps the reference order
  m ← μ·m + r·g′, w ← w − lr_t·m (not optax.lars's lr-before-momentum).

  Args:
    lr_fn: schedule step -> learning rate (used only when clipping).
    weight_decay: wd, or a schedule step -> wd.
    eta: trust coefficient η.
    clip_lr: solo-learn's clipped ratio instead of the plain one.
    eps: solo-learn's denominator epsilon (clipped ratio only).

  Returns:
    The optax transformation.
  """
  def init(params):
    del params
    return _LarsState(count=jnp.zeros((), jnp.int32))

  def update(updates, state, params):
    lr = jnp.maximum(lr_fn(state.count), 1e-12)
    wd = (weight_decay(state.count) if callable(weight_decay)
          else weight_decay)
    def scale(g, w):
      w_norm, g_norm = jnp.linalg.norm(w), jnp.linalg.norm(g)
      decayed = g + wd * w
      if clip_lr:
        ratio = eta * w_norm / (g_norm + wd * w_norm + eps)
        ratio = jnp.minimum(ratio / lr, 1.0)
      else:
        g_norm = jnp.linalg.norm(decayed)
        ratio = eta * w_norm / jnp.where(g_norm > 0, g_norm, 1.0)
      ratio = jnp.where((w_norm > 0) & (g_norm > 0), ratio, 1.0)
      return decayed * ratio
    return (jax.tree.map(scale, updates, params),
            _LarsState(count=state.count + 1))

  return optax.GradientTransformation(init, update)


def make_optimizer(
    optim_cfg: ml_collections.ConfigDict, *, total_steps: int,
    warmup_steps: int, global_batch: int, lr_multiplier: float = 1.0,
) -> tuple[optax.GradientTransformation, Callable[[Any], jax.Array]]:
  """Builds the optax optimiser and its learning-rate schedule.

  Biases and normalisation parameters (every tensor with ndim ≤ 1) and
  parameters named `frozen_*` get neither weight decay nor the LARS trust
  ratio (METHODS.md §1.2). The weight decay follows
  `weight_decay_schedule` for every optimiser; `grad_clip_norm` > 0 clips
  the global gradient norm before the optimiser (DINO: 3.0). LARS
  and SGD apply the learning rate after the momentum trace (m ← μ·m + u;
  w ← w − lr_t·m), as PyTorch's SGD and BYOL's LARS do.

  Args:
    optim_cfg: `config.optim` (name, base_lr, lr_scaling, weight_decay,
      momentum, trust_coefficient, clip_lr, nesterov, b1, b2, end_lr_factor,
      grad_clip_norm, weight_decay_schedule, weight_decay_end). Name
      "lars" is `scale_by_lars` then momentum SGD; `clip_lr=True` is
      solo-learn's variant (used with trust_coefficient 0.02 by seed 003's
      runs).
    total_steps: optimiser steps in the run.
    warmup_steps: linear warm-up steps.
    global_batch: images per step over all devices and processes.
    lr_multiplier: method-specific factor (e.g. MSBReg's × K views).

  Returns:
    (optax transformation, schedule step -> learning rate).
  """
  peak = peak_learning_rate(optim_cfg, global_batch, lr_multiplier)
  lr = warmup_cosine(peak, total_steps, warmup_steps, optim_cfg.end_lr_factor)
  name = optim_cfg.name
  # A constant stays a float: the optimiser state (and so checkpoints) of
  # constant-decay runs keeps its structure.
  wd = (optim_cfg.weight_decay
        if optim_cfg.weight_decay_schedule == "constant"
        else weight_decay_schedule(optim_cfg, total_steps))
  momentum = optim_cfg.momentum
  nesterov = optim_cfg.nesterov
  if name == "lars":
    scale = scale_by_lars(lr, weight_decay=wd, clip_lr=optim_cfg.clip_lr,
                          eta=optim_cfg.trust_coefficient)
    tx = optax.chain(
        optax.masked(scale, _matrix_mask),
        optax.sgd(lr, momentum=momentum or None, nesterov=nesterov))
  elif name == "sgd":
    tx = optax.chain(
        optax.add_decayed_weights(wd, mask=_matrix_mask),
        optax.sgd(lr, momentum=momentum or None, nesterov=nesterov))
  elif name == "adamw":
    tx = optax.adamw(lr, b1=optim_cfg.b1, b2=optim_cfg.b2, weight_decay=wd,
                     mask=_matrix_mask)
  else:
    raise ValueError(f"optim.name={name!r}; use one of {OPTIMIZERS}.")
  if optim_cfg.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(optim_cfg.grad_clip_norm), tx)
  return tx, lr


def ema_schedule(base: float, total_steps: int,
                 kind: str = "cosine") -> Callable[[Any], jax.Array]:
  """EMA momentum τ_k for target networks (METHODS.md §1.3).

  cosine: τ_k = 1 − (1 − base)·(cos(π k / K) + 1)/2, rising from base to 1
  (BYOL); constant: τ_k = base.
  """
  if not 0.0 <= base <= 1.0:
    raise ValueError(f"EMA base momentum must be in [0, 1], got {base}.")
  if kind == "constant":
    return lambda step: jnp.asarray(base, jnp.float32)
  if kind != "cosine":
    raise ValueError(f"ema schedule {kind!r}; use 'cosine' or 'constant'.")
  def schedule(step):
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(total_steps, 1),
                    0.0, 1.0)
    return 1.0 - (1.0 - base) * (jnp.cos(jnp.pi * frac) + 1.0) / 2.0
  return schedule
