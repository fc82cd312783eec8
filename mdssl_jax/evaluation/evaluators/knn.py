"""Weighted kNN evaluator (METHODS.md §6.2) on frozen features."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mdssl_jax.evaluation import label_fractions

if TYPE_CHECKING:
  from mdssl_jax.evaluation.suite import EvalContext

DEFAULTS = {
    "k": 20,
    "temperature": 0.07,
    "chunk_size": 0,  # Test rows per similarity chunk; 0: automatic.
    "label_fraction": 1.0,  # Of the train split (the neighbour bank).
    "subset_seed": 0,
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
  return errors + label_fractions.check_fraction(cfg.label_fraction)


def run(cfg, data: EvalContext) -> dict[str, float | None]:
  """kNN accuracy of one domain's test features against its train features.

  The neighbour bank is `cfg.label_fraction` of the train split (class-
  stratified, nested, `label_fractions`); the full test split is classified.

  Args:
    cfg: this evaluator's `config.evals` entry (the keys of `DEFAULTS`).
    data: the domain's features and labels.

  Returns:
    {"top1": %, "top5": % or None when the domain has < 5 classes}.
  """
  from mdssl_jax.evaluation import knn  # pylint: disable=g-import-not-at-top
  idx = label_fractions.subset_indices(
      data.train_labels, cfg.label_fraction, cfg.subset_seed,
      data.subsets_dir, data.name)
  acc = knn.knn_accuracy(
      data.train_features[idx], data.train_labels[idx], data.test_features,
      data.test_labels, num_classes=data.num_classes, k=cfg.k,
      temperature=cfg.temperature, chunk_size=cfg.chunk_size or None)
  return {"top1": acc["top1"], "top5": acc.get("top5")}
