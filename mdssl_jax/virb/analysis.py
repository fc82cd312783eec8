"""Cross-task analysis of battery scores (seed 001 §4; METHODS §6.7).

Scores are an [E, T] matrix: E encoders (the random baseline among them)
by T tasks, every score higher-is-better.

* normalised score: (score - baseline's score) / std over the E encoders
  of that task (population std, ddof 0); 0 where all encoders tie, i.e.
  the std is at most `MIN_STD` (a few pixels' difference in mIoU would
  otherwise become a normalised score of ±2).
* per-category mean: the mean normalised score over a category's tasks.
* Spearman matrix [T, T]: rank correlation of two tasks' scores across
  encoders (average ranks for ties); NaN where a task's scores all tie
  (std <= `MIN_STD`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Scores whose std across encoders is at most this are ties: 0.001 is a
# third of one test image of the default 300 in top-1.
MIN_STD = 1e-3


def _check(scores: np.ndarray) -> np.ndarray:
  scores = np.asarray(scores, np.float64)
  if scores.ndim != 2:
    raise ValueError(f"scores must be [encoders, tasks], got {scores.shape}.")
  return scores


def normalised_scores(scores: np.ndarray, baseline: int,
                      min_std: float = MIN_STD) -> np.ndarray:
  """Seed 001's normalised score per encoder and task.

  Args:
    scores: [E, T] raw scores.
    baseline: row of the baseline encoder.
    min_std: tasks with a std at most this are ties.

  Returns:
    [E, T] float64: (scores - scores[baseline]) / scores.std(0); the
    baseline's row is 0, and so is every task whose scores all tie.
  """
  scores = _check(scores)
  std = scores.std(axis=0)
  diff = scores - scores[baseline]
  tied = std <= min_std
  return np.where(tied, 0.0, diff / np.where(tied, 1.0, std))


def category_means(normalised: np.ndarray,
                   categories: Sequence[str]) -> dict[str, np.ndarray]:
  """The mean normalised score of each category's tasks, per encoder.

  Args:
    normalised: [E, T] normalised scores.
    categories: the category of each of the T tasks.

  Returns:
    {category: [E] float64}, in first-appearance order.
  """
  normalised = _check(normalised)
  if len(categories) != normalised.shape[1]:
    raise ValueError(f"{len(categories)} categories for "
                     f"{normalised.shape[1]} tasks.")
  cats = np.asarray(categories)
  return {c: normalised[:, cats == c].mean(axis=1)
          for c in dict.fromkeys(categories)}


def rankdata(values: np.ndarray) -> np.ndarray:
  """Ranks 1..n of a 1-D array, ties sharing their average rank."""
  values = np.asarray(values, np.float64)
  order = np.argsort(values, kind="stable")
  ranks = np.empty(len(values), np.float64)
  ranks[order] = np.arange(1, len(values) + 1)
  for value in np.unique(values):
    tied = values == value
    ranks[tied] = ranks[tied].mean()
  return ranks


def spearman_matrix(scores: np.ndarray,
                    min_std: float = MIN_STD) -> np.ndarray:
  """Spearman correlation between tasks, across encoders.

  Args:
    scores: [E, T] scores, E >= 2.
    min_std: tasks with a std at most this are ties (NaN rows).

  Returns:
    [T, T] float64 in [-1, 1]; NaN in the rows and columns of tasks whose
    scores all tie (the diagonal of the others is 1).
  """
  scores = _check(scores)
  if scores.shape[0] < 2:
    raise ValueError("Spearman correlation needs scores of >= 2 encoders.")
  ranks = np.stack([rankdata(col) for col in scores.T], axis=1)
  centred = ranks - ranks.mean(axis=0)
  norm = np.sqrt((centred ** 2).sum(axis=0))
  norm[scores.std(axis=0) <= min_std] = np.nan
  corr = (centred.T @ centred) / np.outer(norm, norm)
  return np.clip(corr, -1.0, 1.0)
