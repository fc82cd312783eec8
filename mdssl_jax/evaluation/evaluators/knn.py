"""Weighted kNN evaluator (METHODS.md §6.2) on frozen features."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
  from mdssl_jax.evaluation.suite import EvalContext

DEFAULTS = {
    "k": 20,
    "temperature": 0.07,
    "chunk_size": 0,  # Test rows per similarity chunk; 0: automatic.
}
# Table: column title prefix and (metric, title suffix) pairs.
LABEL = "kNN"
COLUMNS = (("top1", "@1"), ("top5", "@5"))


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


def run(cfg, data: EvalContext) -> dict[str, float | None]:
  """kNN accuracy of one domain's test features against its train features.

  Args:
    cfg: this evaluator's `config.evals` entry (k, temperature, chunk_size).
    data: the domain's features and labels.

  Returns:
    {"top1": %, "top5": % or None when the domain has < 5 classes}.
  """
  from mdssl_jax.evaluation import knn  # pylint: disable=g-import-not-at-top
  acc = knn.knn_accuracy(
      data.train_features, data.train_labels, data.test_features,
      data.test_labels, num_classes=data.num_classes, k=cfg.k,
      temperature=cfg.temperature, chunk_size=cfg.chunk_size or None)
  return {"top1": acc["top1"], "top5": acc.get("top5")}
