"""Linear-probe evaluator (softmax regression on frozen features)."""

from __future__ import annotations

SCHEDULES = ("constant", "cosine")

DEFAULTS = {
    "steps": 2000,
    "batch_size": 1024,
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": False,
    "weight_decay": 0.0,
    "schedule": "constant",
    "standardize": True,
    "seed": 0,
}


def validate(cfg) -> list[str]:
  """Cheap checks of one `config.evals` entry of type linear_probe."""
  errors = []
  if cfg.steps < 1:
    errors.append(f"steps={cfg.steps} must be ≥ 1.")
  if cfg.batch_size < 1:
    errors.append(f"batch_size={cfg.batch_size} must be ≥ 1.")
  if not cfg.lr > 0:
    errors.append(f"lr={cfg.lr} must be > 0.")
  if cfg.schedule not in SCHEDULES:
    errors.append(f"schedule={cfg.schedule!r}; use one of {SCHEDULES}.")
  return errors
