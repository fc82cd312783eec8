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


def _matrix_mask(params: Any) -> Any:
  """True for tensors that get weight decay / LARS adaptation (ndim > 1)."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


class _SoloLarsState(NamedTuple):
  count: jax.Array


def scale_by_clipped_lars(lr_fn, *, weight_decay: float, eta: float,
                          eps: float = 1e-8) -> optax.GradientTransformation:
  """solo-learn's LARS scaling (`clip_lr=True`, METHODS.md §1.2).

  For each adapted tensor: g ← (g + wd·w) · min(η‖w‖/(‖g‖ + wd‖w‖ + eps)
  / lr_t, 1). Excluded tensors are handled by masking this transform.
  """
  def init(params):
    del params
    return _SoloLarsState(count=jnp.zeros((), jnp.int32))

  def update(updates, state, params):
    lr = jnp.maximum(lr_fn(state.count), 1e-12)
    def scale(g, w):
      w_norm, g_norm = jnp.linalg.norm(w), jnp.linalg.norm(g)
      ratio = eta * w_norm / (g_norm + weight_decay * w_norm + eps)
      ratio = jnp.minimum(ratio / lr, 1.0)
      ratio = jnp.where((w_norm > 0) & (g_norm > 0), ratio, 1.0)
      return (g + weight_decay * w) * ratio
    return (jax.tree.map(scale, updates, params),
            _SoloLarsState(count=state.count + 1))

  return optax.GradientTransformation(init, update)


def make_optimizer(
    optim_cfg: ml_collections.ConfigDict, *, total_steps: int,
    warmup_steps: int, global_batch: int, lr_multiplier: float = 1.0,
) -> tuple[optax.GradientTransformation, Callable[[Any], jax.Array]]:
  """Builds the optax optimiser and its learning-rate schedule.

  Biases and normalisation parameters (every tensor with ndim ≤ 1) get
  neither weight decay nor the LARS trust ratio (METHODS.md §1.2).

  Args:
    optim_cfg: `config.optim` (name, base_lr, lr_scaling, weight_decay,
      momentum, trust_coefficient, clip_lr, nesterov, b1, b2, end_lr_factor,
      grad_clip_norm). `clip_lr=True` with name "lars" is solo-learn's
      variant (used with trust_coefficient 0.02 by seed 003's runs).
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
  wd = optim_cfg.weight_decay
  momentum = optim_cfg.momentum
  nesterov = optim_cfg.nesterov
  if name == "lars" and optim_cfg.clip_lr:
    scale = scale_by_clipped_lars(lr, weight_decay=wd,
                                  eta=optim_cfg.trust_coefficient)
    tx = optax.chain(
        optax.masked(scale, _matrix_mask),
        optax.sgd(lr, momentum=momentum or None, nesterov=nesterov))
  elif name == "lars":
    tx = optax.lars(lr, weight_decay=wd, weight_decay_mask=_matrix_mask,
                    trust_coefficient=optim_cfg.trust_coefficient,
                    trust_ratio_mask=_matrix_mask, momentum=momentum,
                    nesterov=nesterov)
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
