"""End-task metrics (NumPy): top-1 accuracy, mIoU and L1.

Every score the battery reports is "higher is better": top-1 and mIoU in
[0, 1], and -L1 for regression (seed 001 reports -L1 for depth).
"""

from __future__ import annotations

import numpy as np


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
  """Fraction of `pred == labels` (any matching shapes)."""
  pred, labels = np.asarray(pred), np.asarray(labels)
  if pred.shape != labels.shape:
    raise ValueError(f"pred {pred.shape} and labels {labels.shape} differ.")
  return float(np.mean(pred == labels))


def confusion(pred: np.ndarray, labels: np.ndarray,
              num_classes: int) -> np.ndarray:
  """[K, K] int64 counts: row = true class, column = predicted class."""
  pred = np.asarray(pred).ravel().astype(np.int64)
  labels = np.asarray(labels).ravel().astype(np.int64)
  if pred.shape != labels.shape:
    raise ValueError(f"pred and labels have {pred.size} and {labels.size} "
                     "pixels.")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes
                      or pred.min() < 0 or pred.max() >= num_classes):
    raise ValueError(f"classes must lie in [0, {num_classes}).")
  return np.bincount(labels * num_classes + pred,
                     minlength=num_classes ** 2).reshape(num_classes,
                                                         num_classes)


def mean_iou(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
  """Mean intersection over union of per-pixel classes.

  IoU_k = TP_k / (TP_k + FP_k + FN_k), counted over all pixels of all
  images, averaged over the classes that occur in `labels` or `pred` (a
  class absent from both has no IoU).

  Args:
    pred: [...] predicted classes.
    labels: [...] true classes, same shape.
    num_classes: K.

  Returns:
    mIoU in [0, 1].
  """
  conf = confusion(pred, labels, num_classes)
  tp = np.diag(conf).astype(np.float64)
  union = conf.sum(0) + conf.sum(1) - tp
  present = union > 0
  return float(np.mean(tp[present] / union[present]))


def l1(pred: np.ndarray, target: np.ndarray) -> float:
  """Mean absolute error over every element."""
  pred, target = np.asarray(pred), np.asarray(target)
  if pred.shape != target.shape:
    raise ValueError(f"pred {pred.shape} and target {target.shape} differ.")
  return float(np.mean(np.abs(pred.astype(np.float64) - target)))


def score(metric: str, outputs: np.ndarray, targets: np.ndarray,
          num_outputs: int) -> float:
  """The task score (higher is better) of a head's outputs.

  Args:
    metric: "top1" (outputs [n, K] logits), "miou" (outputs [n, S, S, K]
      logits) or "neg_l1" (outputs shaped as targets).
    outputs: the head's outputs on the test split.
    targets: the test labels or targets.
    num_outputs: K (classes) for top1 and miou.

  Returns:
    top-1, mIoU or -L1.
  """
  if metric == "top1":
    return accuracy(np.argmax(outputs, -1), targets)
  if metric == "miou":
    return mean_iou(np.argmax(outputs, -1), targets, num_outputs)
  if metric == "neg_l1":
    return -l1(outputs, targets)
  raise ValueError(f"unknown metric {metric!r}; use top1, miou or neg_l1.")


def trivial_score(metric: str, train_targets: np.ndarray,
                  test_targets: np.ndarray, num_outputs: int) -> float:
  """The chance / trivial baseline of a task, on its test split.

  top1: always the most frequent train class; miou: every pixel the most
  frequent train class (the background); neg_l1: the train mean, per
  channel, everywhere.

  Args:
    metric: "top1", "miou" or "neg_l1".
    train_targets, test_targets: the task's targets.
    num_outputs: K (classes) for top1 and miou.

  Returns:
    The baseline's score on the test split.
  """
  if metric in ("top1", "miou"):
    majority = int(np.argmax(np.bincount(np.ravel(train_targets),
                                         minlength=num_outputs)))
    pred = np.full(np.shape(test_targets), majority)
    if metric == "top1":
      return accuracy(pred, test_targets)
    return mean_iou(pred, test_targets, num_outputs)
  if metric == "neg_l1":
    channels = np.shape(train_targets)[-1]
    mean = np.reshape(train_targets, (-1, channels)).mean(0)
    return -l1(np.broadcast_to(mean, np.shape(test_targets)), test_targets)
  raise ValueError(f"unknown metric {metric!r}; use top1, miou or neg_l1.")
