"""Linear-probe evaluator (softmax regression on a frozen encoder).

Two paths: `augment="none"` trains on the cached frozen features;
`augment="crop_flip"` (RELICv2 D.1) re-encodes random-resized-crop +
flip views of the train images with the frozen encoder at every step. The
encoder is never updated (BN in eval mode, stop-gradient). Named protocol
presets are in `mdssl_jax.evaluation.protocols`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from mdssl_jax.evaluation import label_fractions

if TYPE_CHECKING:
  from mdssl_jax.evaluation.suite import EvalContext

SCHEDULES = ("constant", "cosine", "step")
LR_SCALINGS = ("none", "linear")
AUGMENTS = ("none", "crop_flip")

DEFAULTS = {
    "steps": 2000,  # MDSSL's protocol (Table 7): 30 000.
    "epochs": 0.0,  # > 0: steps = ceil(epochs · n_train / batch).
    "batch_size": 1024,
    "lr": 0.1,
    "lr_scaling": "none",  # "linear": lr · batch / 256.
    "momentum": 0.9,
    "nesterov": False,
    "weight_decay": 0.0,
    "schedule": "constant",
    "milestones": (0.6, 0.8),  # "step": fractions of training.
    "decay": 0.1,  # "step": factor at each milestone.
    "augment": "none",
    "standardize": True,
    "label_fraction": 1.0,
    "subset_seed": 0,
    "seed": 0,
}
# Table: column title prefix and (metric, title suffix) pairs.
LABEL = "probe"
COLUMNS = (("top1", "@1"), ("top5", "@5"))


def schedule_errors(milestones, decay) -> list[str]:
  """Checks of the "step" schedule keys (also used by `finetune`)."""
  errors = []
  ms = list(milestones) if isinstance(milestones, (list, tuple)) else None
  if ms is None or not all(isinstance(m, (int, float)) for m in ms):
    errors.append(f"milestones={milestones!r} must be a tuple of fractions "
                  "of training, e.g. (0.6, 0.8).")
  elif not all(0.0 < m < 1.0 for m in ms) or ms != sorted(set(ms)):
    errors.append(f"milestones={tuple(ms)} must increase strictly and lie "
                  "in (0, 1).")
  if not (isinstance(decay, (int, float)) and 0.0 < decay <= 1.0):
    errors.append(f"decay={decay} must be in (0, 1].")
  return errors


def resolve_steps(epochs: float, steps: int, n_train: int,
                  batch_size: int) -> int:
  """SGD steps: `steps` if epochs == 0, else ceil(epochs · n_train / batch).

  Args:
    epochs: passes over the labelled set (0: use `steps`).
    steps: fixed step count.
    n_train: labelled examples (after the label fraction).
    batch_size: the batch actually used (clipped to n_train).
  """
  if epochs == 0:
    return int(steps)
  return max(1, math.ceil(epochs * n_train / batch_size))


def scaled_lr(lr: float, lr_scaling: str, batch_size: int) -> float:
  """`lr` ("none") or lr · batch / 256 ("linear", METHODS §1.1)."""
  return lr * batch_size / 256 if lr_scaling == "linear" else lr


def common_errors(cfg) -> list[str]:
  """Checks shared with `finetune`: optimiser, schedule, labels."""
  errors = []
  if cfg.epochs < 0:
    errors.append(f"epochs={cfg.epochs} must be ≥ 0 (0: use steps).")
  if cfg.batch_size < 1:
    errors.append(f"batch_size={cfg.batch_size} must be ≥ 1.")
  if not 0.0 <= cfg.momentum < 1.0:
    errors.append(f"momentum={cfg.momentum} must be in [0, 1).")
  if not cfg.weight_decay >= 0.0:
    errors.append(f"weight_decay={cfg.weight_decay} must be ≥ 0.")
  if cfg.schedule not in SCHEDULES:
    errors.append(f"schedule={cfg.schedule!r}; use one of {SCHEDULES}.")
  if cfg.augment not in AUGMENTS:
    errors.append(f"augment={cfg.augment!r}; use one of {AUGMENTS}.")
  errors += schedule_errors(cfg.milestones, cfg.decay)
  errors += label_fractions.check_fraction(cfg.label_fraction)
  return errors


def validate(cfg) -> list[str]:
  """Cheap checks of one `config.evals` entry of type linear_probe."""
  errors = []
  if cfg.steps < 1:
    errors.append(f"steps={cfg.steps} must be ≥ 1.")
  if not cfg.lr > 0:
    errors.append(f"lr={cfg.lr} must be > 0.")
  if cfg.lr_scaling not in LR_SCALINGS:
    errors.append(f"lr_scaling={cfg.lr_scaling!r}; use one of "
                  f"{LR_SCALINGS}.")
  return errors + common_errors(cfg)


def labelled_indices(cfg, data: EvalContext):
  """Train indices of `cfg.label_fraction` (stored in data.subsets_dir)."""
  return label_fractions.subset_indices(
      data.train_labels, cfg.label_fraction, cfg.subset_seed,
      data.subsets_dir, data.name)


def run(cfg, data: EvalContext) -> dict[str, float | None]:
  """Trains a probe on one domain's train split, tests it on its test set.

  The train side is `cfg.label_fraction` of the train split (class-
  stratified, nested, `label_fractions`); the test side is always the full
  test split under the eval transform.

  Args:
    cfg: this evaluator's `config.evals` entry (the keys of `DEFAULTS`).
    data: the domain's features, labels and (for crop_flip) images and
      encoder.

  Returns:
    {"top1": test %, "top5": test % or None when < 5 classes, "train_top1":
     %, "final_loss": train cross-entropy after training}.
  """
  # pylint: disable-next=g-import-not-at-top
  from mdssl_jax.evaluation import linear_probe
  idx = labelled_indices(cfg, data)
  batch = min(cfg.batch_size, idx.shape[0])
  kwargs = dict(
      num_classes=data.num_classes,
      steps=resolve_steps(cfg.epochs, cfg.steps, idx.shape[0], batch),
      batch_size=batch, lr=scaled_lr(cfg.lr, cfg.lr_scaling, batch),
      momentum=cfg.momentum, nesterov=cfg.nesterov,
      weight_decay=cfg.weight_decay, schedule=cfg.schedule,
      milestones=tuple(cfg.milestones), decay=cfg.decay,
      standardize=cfg.standardize, seed=cfg.seed)
  train_f, train_y = data.train_features[idx], data.train_labels[idx]
  if cfg.augment == "crop_flip":
    res = linear_probe.train_augmented_probe(
        data.train_images[idx], train_f, train_y, data.test_features,
        data.test_labels, features_fn=data.extractor.features_fn,
        params=data.params, batch_stats=data.batch_stats, **kwargs)
  else:
    res = linear_probe.train_linear_probe(
        train_f, train_y, data.test_features, data.test_labels, **kwargs)
  return {"top1": res["top1"], "top5": res.get("top5"),
          "train_top1": res["train_top1"], "final_loss": res["final_loss"]}
