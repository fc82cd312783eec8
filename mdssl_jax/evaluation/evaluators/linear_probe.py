"""Linear-probe evaluator (softmax regression on frozen features)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
  from mdssl_jax.evaluation.suite import EvalContext

SCHEDULES = ("constant", "cosine")

DEFAULTS = {
    "steps": 2000,  # MDSSL's protocol (Table 7): 30 000.
    "batch_size": 1024,
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": False,
    "weight_decay": 0.0,
    "schedule": "constant",
    "standardize": True,
    "seed": 0,
}
# Table: column title prefix and (metric, title suffix) pairs.
LABEL = "probe"
COLUMNS = (("top1", "@1"), ("top5", "@5"))


def validate(cfg) -> list[str]:
  """Cheap checks of one `config.evals` entry of type linear_probe."""
  errors = []
  if cfg.steps < 1:
    errors.append(f"steps={cfg.steps} must be ≥ 1.")
  if cfg.batch_size < 1:
    errors.append(f"batch_size={cfg.batch_size} must be ≥ 1.")
  if not cfg.lr > 0:
    errors.append(f"lr={cfg.lr} must be > 0.")
  if not 0.0 <= cfg.momentum < 1.0:
    errors.append(f"momentum={cfg.momentum} must be in [0, 1).")
  if not cfg.weight_decay >= 0.0:
    errors.append(f"weight_decay={cfg.weight_decay} must be ≥ 0.")
  if cfg.schedule not in SCHEDULES:
    errors.append(f"schedule={cfg.schedule!r}; use one of {SCHEDULES}.")
  return errors


def run(cfg, data: EvalContext) -> dict[str, float | None]:
  """Trains a probe on one domain's train features, tests it on its test set.

  Args:
    cfg: this evaluator's `config.evals` entry (the keys of `DEFAULTS`).
    data: the domain's features and labels.

  Returns:
    {"top1": test %, "top5": test % or None when < 5 classes, "train_top1":
     %, "final_loss": train cross-entropy after training}.
  """
  # pylint: disable-next=g-import-not-at-top
  from mdssl_jax.evaluation import linear_probe
  res = linear_probe.train_linear_probe(
      data.train_features, data.train_labels, data.test_features,
      data.test_labels, num_classes=data.num_classes, steps=cfg.steps,
      batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum,
      nesterov=cfg.nesterov, weight_decay=cfg.weight_decay,
      schedule=cfg.schedule, standardize=cfg.standardize, seed=cfg.seed)
  return {"top1": res["top1"], "top5": res.get("top5"),
          "train_top1": res["train_top1"], "final_loss": res["final_loss"]}
