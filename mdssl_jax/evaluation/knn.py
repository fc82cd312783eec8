"""Weighted k-nearest-neighbour classifier on frozen features (Wu et al. 2018).

Synopsis::

  scores = knn_predict(train_f, train_y, test_f, num_classes=10)  # [n, 10]
  acc = knn_accuracy(train_f, train_y, test_f, test_y, num_classes=10)
  acc["top1"], acc["top5"]  # percentages in [0, 100]

Protocol (METHODS.md §6.2): features are ℓ2-normalised, the k train features
with the highest cosine similarity s_i to a test feature vote for their
label y_i with weight exp(s_i/T), and class c scores Σ_i exp(s_i/T)·[y_i = c].
The test set is processed in fixed-shape chunks (the last one padded) so that
one compiled function serves every chunk and the [chunk, n_train] similarity
matrix stays below ~5e6 entries, solo-learn's cap.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mdssl_jax.evaluation.evaluators import knn as knn_spec
from mdssl_jax.losses.common import l2_normalize

# Cap on chunk_size * n_train similarity entries per chunk (solo-learn's).
_MAX_SIMILARITY_ENTRIES = 5_000_000
# exp(1/T) must stay finite in float32 (max ≈ exp(88.7)).
_MIN_TEMPERATURE = 1.0 / 80.0


def _check_features(name: str, x: np.ndarray) -> None:
  if x.ndim != 2:
    raise ValueError(
        f"{name} must be a 2-D [n, F] array, got shape {x.shape}; flatten "
        "or pool the encoder output first.")
  if not np.all(np.isfinite(x)):
    raise ValueError(
        f"{name} contains NaN or inf; check the encoder (diverged "
        "training?) before evaluating.")


def _check_labels(name: str, y: np.ndarray, n: int, num_classes: int) -> None:
  if y.shape != (n,):
    raise ValueError(
        f"{name} must have shape ({n},) to match its features, got {y.shape}.")
  if n and (y.min() < 0 or y.max() >= num_classes):
    raise ValueError(
        f"{name} must lie in [0, num_classes={num_classes}), got range "
        f"[{y.min()}, {y.max()}]; pass the right num_classes or remap labels.")


def _validate(train_features, train_labels, test_features, *, num_classes, k,
              temperature):
  """Converts inputs to NumPy and raises ValueError on bad ones."""
  train_features = np.asarray(train_features, dtype=np.float32)
  test_features = np.asarray(test_features, dtype=np.float32)
  train_labels = np.asarray(train_labels)
  _check_features("train_features", train_features)
  _check_features("test_features", test_features)
  if train_features.shape[0] == 0:
    raise ValueError("train_features is empty; kNN needs at least one "
                     "training example.")
  if train_features.shape[1] != test_features.shape[1]:
    raise ValueError(
        f"Feature widths differ: train {train_features.shape[1]} vs test "
        f"{test_features.shape[1]}; embed both splits with the same encoder.")
  if not np.issubdtype(train_labels.dtype, np.integer):
    raise ValueError(
        f"train_labels must be integers, got {train_labels.dtype}.")
  if int(num_classes) < 1:
    raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
  _check_labels("train_labels", train_labels, train_features.shape[0],
                num_classes)
  if int(k) < 1:
    raise ValueError(f"k must be >= 1, got {k}.")
  if not temperature >= _MIN_TEMPERATURE:
    raise ValueError(
        f"temperature must be >= {_MIN_TEMPERATURE:.4f} so that exp(1/T) fits "
        f"in float32, got {temperature}.")
  return train_features, train_labels.astype(np.int32), test_features


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def _knn_chunk_scores(train_unit: jax.Array, train_labels: jax.Array,
                      test_chunk: jax.Array, temperature: jax.Array, *,
                      k: int, num_classes: int) -> jax.Array:
  """Class scores for one chunk.

  Args:
    train_unit: [n_train, F] ℓ2-normalised train features.
    train_labels: [n_train] int32 labels.
    test_chunk: [chunk, F] raw test features.
    temperature: scalar T.
    k: neighbours (already clipped to n_train).
    num_classes: number of classes C.

  Returns:
    [chunk, C] float32 scores Σ_i exp(s_i/T)·[y_i = c].
  """
  sims = l2_normalize(test_chunk) @ train_unit.T  # [chunk, n_train]
  top_sims, top_idx = jax.lax.top_k(sims, k)  # [chunk, k]
  weights = jnp.exp(top_sims / temperature)
  neighbour_labels = train_labels[top_idx]  # [chunk, k]
  rows = jnp.broadcast_to(jnp.arange(sims.shape[0])[:, None], top_idx.shape)
  # Scatter-add avoids a [chunk, k, C] one-hot (large for k=200, C=1000).
  scores = jnp.zeros((sims.shape[0], num_classes), jnp.float32)
  return scores.at[rows, neighbour_labels].add(weights)


def knn_predict(train_features: np.ndarray, train_labels: np.ndarray,
                test_features: np.ndarray, *, num_classes: int,
                k: int = knn_spec.DEFAULTS["k"],
                temperature: float = knn_spec.DEFAULTS["temperature"],
                chunk_size: int | None = None) -> np.ndarray:
  """Weighted-vote kNN class scores for every test feature.

  Args:
    train_features: [n_train, F] float features of the labelled set (need
      not be normalised).
    train_labels: [n_train] int labels in [0, num_classes).
    test_features: [n_test, F] float features to classify.
    num_classes: number of classes C.
    k: number of neighbours; clipped to n_train.
    temperature: T in the weights exp(s/T); must be >= 0.0125 so that the
      weights stay finite in float32.
    chunk_size: test rows per chunk; default keeps chunk · n_train ≤ 5e6.
      The result does not depend on it.

  Returns:
    [n_test, C] float32 NumPy scores; argmax is the prediction (ties go to
    the lowest class index).

  Raises:
    ValueError: on mismatched shapes, out-of-range labels, non-finite
      features, k < 1 or a too-small temperature.
  """
  train_x, train_y, test_x = _validate(
      train_features, train_labels, test_features, num_classes=num_classes,
      k=k, temperature=temperature)
  n_train, n_test = train_x.shape[0], test_x.shape[0]
  if n_test == 0:
    return np.zeros((0, num_classes), np.float32)
  if chunk_size is None:
    chunk_size = max(1, _MAX_SIMILARITY_ENTRIES // n_train)
  elif chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
  chunk_size = min(int(chunk_size), n_test)
  k = min(int(k), n_train)

  train_unit = l2_normalize(jnp.asarray(train_x))
  train_y = jnp.asarray(train_y)
  temp = jnp.float32(temperature)
  num_chunks = -(-n_test // chunk_size)
  padded = np.zeros((num_chunks * chunk_size, test_x.shape[1]), np.float32)
  padded[:n_test] = test_x
  # Dispatch every chunk before fetching any, so host and device overlap.
  outputs = [
      _knn_chunk_scores(train_unit, train_y,
                        padded[i * chunk_size:(i + 1) * chunk_size], temp,
                        k=k, num_classes=int(num_classes))
      for i in range(num_chunks)
  ]
  return np.concatenate(jax.device_get(outputs), axis=0)[:n_test]


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
  """Percentage of rows whose label is among the k highest scores.

  Args:
    scores: [n, C] class scores.
    labels: [n] int labels.
    k: how many top classes count as correct (k <= C).

  Returns:
    Accuracy in [0, 100]; 0.0 for an empty set. Ties among equal scores are
    broken towards lower class indices.
  """
  scores = np.asarray(scores)
  labels = np.asarray(labels)
  if scores.shape[0] == 0:
    return 0.0
  if k == 1:
    hit = np.argmax(scores, axis=1) == labels
  else:
    # Stable sort on -scores keeps lower indices first among ties.
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hit = np.any(top == labels[:, None], axis=1)
  return float(100.0 * np.mean(hit))


def knn_accuracy(train_features: np.ndarray, train_labels: np.ndarray,
                 test_features: np.ndarray, test_labels: np.ndarray, *,
                 num_classes: int, k: int = knn_spec.DEFAULTS["k"],
                 temperature: float = knn_spec.DEFAULTS["temperature"],
                 chunk_size: int | None = None) -> dict[str, float]:
  """Top-1 (and top-5) accuracy of the weighted kNN classifier.

  Args:
    train_features: [n_train, F] float features.
    train_labels: [n_train] int labels in [0, num_classes).
    test_features: [n_test, F] float features.
    test_labels: [n_test] int labels in [0, num_classes).
    num_classes: number of classes C.
    k: number of neighbours (clipped to n_train).
    temperature: vote temperature T.
    chunk_size: optional test chunk size (see `knn_predict`).

  Returns:
    {"top1": %} plus {"top5": %} when num_classes >= 5; values in [0, 100].
  """
  test_features = np.asarray(test_features)
  test_labels = np.asarray(test_labels)
  if test_features.ndim != 2 or test_features.shape[0] == 0:
    raise ValueError(
        f"test_features must be a non-empty [n_test, F] array, got shape "
        f"{test_features.shape}.")
  if not np.issubdtype(test_labels.dtype, np.integer):
    raise ValueError(f"test_labels must be integers, got {test_labels.dtype}.")
  _check_labels("test_labels", test_labels, test_features.shape[0],
                num_classes)
  scores = knn_predict(train_features, train_labels, test_features,
                       num_classes=num_classes, k=k, temperature=temperature,
                       chunk_size=chunk_size)
  result = {"top1": topk_accuracy(scores, test_labels, 1)}
  if num_classes >= 5:
    result["top5"] = topk_accuracy(scores, test_labels, 5)
  return result
