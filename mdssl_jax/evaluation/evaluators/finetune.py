"""Fine-tuning evaluator: encoder + linear head on a label fraction.

RELICv2 D.2's semi-supervised protocol (`mdssl_jax.evaluation.finetune`):
separate head / encoder learning rates, Nesterov SGD, step decay, weight
decay, crop_flip views, epochs over the labelled subset. BatchNorm stays in
eval mode: the checkpoint's running statistics are fixed, BN scale and bias
train. The evaluated parameters are not modified (a copy is fine-tuned).
The defaults are D.2's 10 % setting; `protocols.finetune_relicv2` gives
both fractions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mdssl_jax.evaluation.evaluators import linear_probe as probe_spec

if TYPE_CHECKING:
  from mdssl_jax.evaluation.suite import EvalContext

DEFAULTS = {
    "steps": 1000,  # Used only when epochs == 0.
    "epochs": 20.0,  # > 0: steps = ceil(epochs · n_labelled / batch).
    "batch_size": 512,
    "head_lr": 0.3,
    "encoder_lr": 0.004,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 1e-5,
    "schedule": "step",
    "milestones": (0.6, 0.8),  # Epochs 12 and 16 of 20.
    "decay": 0.2,
    "augment": "crop_flip",
    # Raw features, as D.2: z-scoring by the initial encoder's std
    # amplifies near-constant dimensions once the encoder moves.
    "standardize": False,
    "label_fraction": 0.1,
    "subset_seed": 0,
    "seed": 0,
}
# Table: column title prefix and (metric, title suffix) pairs.
LABEL = "finetune"
COLUMNS = (("top1", "@1"), ("top5", "@5"))


def validate(cfg) -> list[str]:
  """Cheap checks of one `config.evals` entry of type finetune."""
  errors = []
  if cfg.steps < 1:
    errors.append(f"steps={cfg.steps} must be ≥ 1.")
  for key in ("head_lr", "encoder_lr"):
    if not cfg[key] > 0:
      errors.append(f"{key}={cfg[key]} must be > 0.")
  return errors + probe_spec.common_errors(cfg)


def run(cfg, data: EvalContext) -> dict[str, float | None]:
  """Fine-tunes a copy of the encoder on the labelled subset, tests it.

  Args:
    cfg: this evaluator's `config.evals` entry (the keys of `DEFAULTS`).
    data: the domain's images, labels, extractor and evaluated parameters.

  Returns:
    {"top1": test %, "top5": test % or None (< 5 classes), "train_top1": %
     on the labelled images, "final_loss": their cross-entropy,
     "encoder_rel_change": ‖θ - θ₀‖ / ‖θ₀‖ of the encoder, "n_labelled":
     labelled examples, "steps": SGD steps}. BN statistics are those of
     the checkpoint (eval mode); BN scale / bias are fine-tuned.
  """
  # pylint: disable-next=g-import-not-at-top
  from mdssl_jax.evaluation import finetune
  idx = probe_spec.labelled_indices(cfg, data)
  batch = min(cfg.batch_size, idx.shape[0])
  steps = probe_spec.resolve_steps(cfg.epochs, cfg.steps, idx.shape[0], batch)
  res = finetune.finetune(
      data.train_images[idx], data.train_labels[idx], data.test_images,
      data.test_labels, features_fn=data.extractor.features_fn,
      params=data.params, batch_stats=data.batch_stats,
      extractor=data.extractor, num_classes=data.num_classes, steps=steps,
      batch_size=batch, head_lr=cfg.head_lr, encoder_lr=cfg.encoder_lr,
      momentum=cfg.momentum, nesterov=cfg.nesterov,
      weight_decay=cfg.weight_decay, schedule=cfg.schedule,
      milestones=tuple(cfg.milestones), decay=cfg.decay,
      augment=cfg.augment, standardize=cfg.standardize, seed=cfg.seed)
  return {"top1": res["top1"], "top5": res.get("top5"),
          "train_top1": res["train_top1"], "final_loss": res["final_loss"],
          "encoder_rel_change": res["encoder_rel_change"],
          "n_labelled": float(idx.shape[0]), "steps": float(steps)}
