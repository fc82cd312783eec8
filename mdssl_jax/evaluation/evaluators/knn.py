"""Weighted kNN evaluator (METHODS.md §6.2) on frozen features."""

from __future__ import annotations

DEFAULTS = {
    "k": 20,
    "temperature": 0.07,
    "chunk_size": 0,  # Test rows per similarity chunk; 0: automatic.
}


def validate(cfg) -> list[str]:
  """Cheap checks of one `config.evals` entry of type knn."""
  errors = []
  if cfg.k < 1:
    errors.append(f"k={cfg.k} must be ≥ 1.")
  if not cfg.temperature > 0:
    errors.append(f"temperature={cfg.temperature} must be > 0.")
  if cfg.chunk_size < 0:
    errors.append(f"chunk_size={cfg.chunk_size} must be ≥ 0 (0: auto).")
  return errors
