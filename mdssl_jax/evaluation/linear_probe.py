"""Linear probe: softmax regression trained with SGD on frozen features.

Synopsis::

  res = train_linear_probe(train_f, train_y, test_f, test_y, num_classes=10,
                           steps=5000)
  res["top1"], res["top5"], res["train_top1"], res["final_loss"]

The defaults are the linear_probe evaluator's (`evaluators/linear_probe.py`
DEFAULTS): the MDSSL protocol (METHODS.md §2.9, §6.1), SGD with lr 0.1
(momentum 0.9), no schedule, no weight decay, batch 1024, except 2000
iterations instead of 30 000 (pass steps=30_000 for it). Minibatches walk
through seeded permutations of the training set, one per epoch (the
remainder batch of each epoch is dropped). Training runs as jitted
`lax.scan`s of 1000 SGD steps each (one compilation); the host only draws
the next block of permutation indices, which NumPy does far faster than a
sort in XLA:CPU, so a few thousand steps on [10k, 512] features take seconds
on CPU.

`standardize=True` z-scores every feature dimension with the mean and
standard deviation of the *training* features (the same affine map is then
applied to the test features, so no test statistics leak). Frozen encoders
differ a lot in feature scale (e.g. post-ReLU ResNet features vs normalised
ones); standardising makes a single learning rate work across encoders. It
is an affine reparametrisation, so the best achievable probe is unchanged.
"""

from __future__ import annotations

import functools
import math
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mdssl_jax.evaluation.evaluators import linear_probe as probe_spec
from mdssl_jax.evaluation.knn import topk_accuracy

_SCHEDULES = probe_spec.SCHEDULES
_DEFAULTS = probe_spec.DEFAULTS
# SGD steps per jitted call; [block, batch] int32 indices are sent each call.
_BLOCK_STEPS = 1000
# Up to this many classes the probe's weight gradient uses a fused reduce.
_FUSED_GRAD_MAX_CLASSES = 64
# Rows per jitted call when evaluating the trained probe.
_EVAL_CHUNK = 8192
# Std floor below which a feature dimension counts as constant (left unscaled).
_MIN_STD = 1e-6


@jax.custom_vjp
def _dense(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """x [b, F] @ kernel [F, C] + bias [C]; a Dense layer with a faster VJP."""
  return x @ kernel + bias


def _dense_fwd(x, kernel, bias):
  return _dense(x, kernel, bias), (x, kernel)


def _dense_bwd(residuals, g):
  x, kernel = residuals
  if (jax.default_backend() == "cpu"
      and kernel.shape[1] <= _FUSED_GRAD_MAX_CLASSES):
    # XLA:CPU runs x.T @ g (contraction over the batch rows, few output
    # columns) ~2x slower than this fused multiply-reduce.
    d_kernel = jnp.sum(x[:, :, None] * g[:, None, :], axis=0)
  else:
    d_kernel = x.T @ g
  return g @ kernel.T, d_kernel, jnp.sum(g, axis=0)


_dense.defvjp(_dense_fwd, _dense_bwd)


def _init_params(num_features: int, num_classes: int) -> dict[str, jax.Array]:
  # Same tree as flax.linen.Dense params. Zero init: the problem is convex,
  # so this removes init noise and the seed only sets the minibatch order.
  return {"kernel": jnp.zeros((num_features, num_classes), jnp.float32),
          "bias": jnp.zeros((num_classes,), jnp.float32)}


def _ce_loss(params, x, y) -> jax.Array:
  logits = _dense(x, params["kernel"], params["bias"])
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _optimizer(lr, momentum, weight_decay, total_steps, *, nesterov: bool,
               cosine: bool) -> optax.GradientTransformation:
  """SGD with coupled L2 decay; hyperparameters may be traced scalars."""
  if cosine:
    def learning_rate(count):
      frac = jnp.minimum(count, total_steps) / total_steps
      return lr * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
  else:
    learning_rate = lr
  return optax.chain(
      optax.add_decayed_weights(weight_decay),
      optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov))


@functools.partial(jax.jit, static_argnames=("nesterov", "cosine"))
def _run_block(state, x: jax.Array, y: jax.Array, indices: jax.Array,
               num_valid: jax.Array, hparams: jax.Array, *, nesterov: bool,
               cosine: bool):
  """Runs one SGD step per row of `indices` (rows >= num_valid are no-ops).

  Args:
    state: (params, opt_state).
    x: [n, F] features.
    y: [n] int32 labels.
    indices: [block, batch] int32 minibatch row indices.
    num_valid: scalar, number of leading rows of `indices` to use.
    hparams: [4] float32 (lr, momentum, weight_decay, total_steps).
    nesterov: Nesterov momentum.
    cosine: cosine learning-rate decay over total_steps.

  Returns:
    The updated (params, opt_state).
  """
  tx = _optimizer(*hparams, nesterov=nesterov, cosine=cosine)
  grad_fn = jax.grad(_ce_loss)

  def sgd_step(state, idx):
    params, opt_state = state
    updates, opt_state = tx.update(grad_fn(params, x[idx], y[idx]),
                                   opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  def body(state, i):
    state = jax.lax.cond(i < num_valid, sgd_step, lambda s, _: s, state,
                         indices[i])
    return state, None

  return jax.lax.scan(body, state, jnp.arange(indices.shape[0]))[0]


def _index_blocks(n: int, batch_size: int, steps: int, block: int,
                  seed: int) -> Iterator[tuple[np.ndarray, int]]:
  """Yields ([block, batch_size] int32 indices, num_valid) pairs.

  Epochs are seeded permutations of range(n) cut into batches (dropping the
  remainder); the final block is zero-padded past num_valid.
  """
  rng = np.random.default_rng(seed)
  per_epoch = n // batch_size
  pending, num_pending = [], 0
  remaining = steps
  while remaining > 0:
    take = min(block, remaining)
    while num_pending < take:
      perm = rng.permutation(n)[:per_epoch * batch_size].astype(np.int32)
      pending.append(perm.reshape(per_epoch, batch_size))
      num_pending += per_epoch
    rows = np.concatenate(pending)
    out, rest = rows[:take], rows[take:]
    pending, num_pending = [rest], rest.shape[0]
    remaining -= take
    if take < block:
      out = np.concatenate(
          [out, np.zeros((block - take, batch_size), np.int32)])
    yield out, take


def _train(x: np.ndarray, y: np.ndarray, *, num_classes: int, steps: int,
           batch_size: int, lr: float, momentum: float, weight_decay: float,
           nesterov: bool, cosine: bool, seed: int):
  """Trains the probe; returns its Dense params."""
  # The host draws index blocks (NumPy permutations are far cheaper than
  # sorts in XLA:CPU) while the device runs the previous jitted block.
  hparams = jnp.asarray([lr, momentum, weight_decay, steps], jnp.float32)
  tx = _optimizer(*hparams, nesterov=nesterov, cosine=cosine)
  params = _init_params(x.shape[1], num_classes)
  state = (params, tx.init(params))
  x, y = jnp.asarray(x), jnp.asarray(y)
  block = min(steps, _BLOCK_STEPS)
  for indices, num_valid in _index_blocks(x.shape[0], batch_size, steps,
                                          block, seed):
    state = _run_block(state, x, y, indices, np.int32(num_valid), hparams,
                       nesterov=nesterov, cosine=cosine)
  return state[0]


@jax.jit
def _logits_and_losses(params, x, y):
  logits = _dense(x, params["kernel"], params["bias"])
  return logits, optax.softmax_cross_entropy_with_integer_labels(logits, y)


def _evaluate(params, x: np.ndarray, y: np.ndarray,
              topk: tuple[int, ...]) -> tuple[dict[int, float], float]:
  """Top-k accuracies (%) and mean cross-entropy of the probe on (x, y).

  Runs in fixed-size padded chunks so [n, C] logits never exist at once.
  """
  n = x.shape[0]
  chunk = min(n, _EVAL_CHUNK)
  hits = {k: 0.0 for k in topk}
  loss_sum = 0.0
  for start in range(0, n, chunk):
    xc, yc = x[start:start + chunk], y[start:start + chunk]
    rows = xc.shape[0]
    if rows < chunk:
      xc = np.concatenate([xc, np.zeros((chunk - rows, x.shape[1]),
                                        np.float32)])
      yc = np.concatenate([yc, np.zeros((chunk - rows,), np.int32)])
    logits, losses = jax.device_get(_logits_and_losses(params, xc, yc))
    loss_sum += float(np.sum(losses[:rows], dtype=np.float64))
    for k in topk:
      hits[k] += topk_accuracy(logits[:rows], yc[:rows], k) * rows
  return {k: h / n for k, h in hits.items()}, loss_sum / n


def _as_features(name: str, x) -> np.ndarray:
  x = np.asarray(x, dtype=np.float32)
  if x.ndim != 2 or x.shape[0] == 0:
    raise ValueError(f"{name} must be a non-empty [n, F] array, got shape "
                     f"{x.shape}.")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} contains NaN or inf; check the encoder before "
                     "probing.")
  return x


def _as_labels(name: str, y, n: int, num_classes: int) -> np.ndarray:
  y = np.asarray(y)
  if not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"{name} must be integers, got dtype {y.dtype}.")
  if y.shape != (n,):
    raise ValueError(f"{name} must have shape ({n},) to match its features, "
                     f"got {y.shape}.")
  if y.min() < 0 or y.max() >= num_classes:
    raise ValueError(
        f"{name} must lie in [0, num_classes={num_classes}), got range "
        f"[{y.min()}, {y.max()}].")
  return y.astype(np.int32)


def _check_hparams(*, num_classes, steps, batch_size, lr, momentum,
                   weight_decay, schedule) -> None:
  if num_classes < 2:
    raise ValueError(f"num_classes must be >= 2 for a probe, got "
                     f"{num_classes}.")
  if steps < 1:
    raise ValueError(f"steps must be >= 1, got {steps}.")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  if not (math.isfinite(lr) and lr > 0):
    raise ValueError(f"lr must be a positive finite number, got {lr}.")
  if not 0.0 <= momentum < 1.0:
    raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
  if not weight_decay >= 0.0:
    raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
  if schedule not in _SCHEDULES:
    raise ValueError(f"schedule must be one of {_SCHEDULES}, got "
                     f"{schedule!r}.")


def standardize_features(
    train_features: np.ndarray, *others: np.ndarray
) -> tuple[np.ndarray, ...]:
  """Z-scores features with statistics of `train_features` only.

  Dimensions with std < 1e-6 on the train set are only centred.

  Args:
    train_features: [n, F] features that define mean and std.
    *others: further [m, F] arrays transformed with the same statistics.

  Returns:
    Tuple of float32 arrays, train first, in the input order.
  """
  x = np.asarray(train_features, np.float64)
  mean = x.mean(axis=0)
  std = x.std(axis=0)
  std = np.where(std < _MIN_STD, 1.0, std)
  return tuple(((np.asarray(a, np.float64) - mean) / std).astype(np.float32)
               for a in (train_features,) + others)


def train_linear_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    num_classes: int,
    steps: int = _DEFAULTS["steps"],
    batch_size: int = _DEFAULTS["batch_size"],
    lr: float = _DEFAULTS["lr"],
    momentum: float = _DEFAULTS["momentum"],
    nesterov: bool = _DEFAULTS["nesterov"],
    weight_decay: float = _DEFAULTS["weight_decay"],
    schedule: str = _DEFAULTS["schedule"],
    standardize: bool = _DEFAULTS["standardize"],
    seed: int = _DEFAULTS["seed"],
) -> dict[str, float]:
  """Trains a softmax-regression probe with SGD and evaluates it.

  Weight decay is coupled L2 (added to the gradient, as in
  `torch.optim.SGD`) on kernel and bias. Deterministic for a given seed.

  Args:
    train_features: [n_train, F] frozen train features.
    train_labels: [n_train] int labels in [0, num_classes).
    test_features: [n_test, F] frozen test features.
    test_labels: [n_test] int labels in [0, num_classes).
    num_classes: number of classes C (>= 2).
    steps: SGD iterations (MDSSL: 30 000).
    batch_size: minibatch size; clipped to n_train.
    lr: peak learning rate.
    momentum: heavy-ball momentum in [0, 1); 0 gives plain SGD.
    nesterov: use Nesterov momentum.
    weight_decay: L2 coefficient (>= 0).
    schedule: "constant" or "cosine" (decays to 0 at `steps`).
    standardize: z-score features with train-set mean/std (see module doc).
    seed: seed of the minibatch order (and of nothing else).

  Returns:
    {"top1": test %, "top5": test % (only if C >= 5), "train_top1": %,
     "final_loss": mean cross-entropy on the full train set after training}.

  Raises:
    ValueError: on bad shapes, labels or hyperparameters.
  """
  _check_hparams(num_classes=num_classes, steps=steps, batch_size=batch_size,
                 lr=lr, momentum=momentum, weight_decay=weight_decay,
                 schedule=schedule)
  train_x = _as_features("train_features", train_features)
  test_x = _as_features("test_features", test_features)
  if train_x.shape[1] != test_x.shape[1]:
    raise ValueError(
        f"Feature widths differ: train {train_x.shape[1]} vs test "
        f"{test_x.shape[1]}; embed both splits with the same encoder.")
  train_y = _as_labels("train_labels", train_labels, train_x.shape[0],
                       num_classes)
  test_y = _as_labels("test_labels", test_labels, test_x.shape[0],
                      num_classes)
  if standardize:
    train_x, test_x = standardize_features(train_x, test_x)

  params = _train(
      train_x, train_y, num_classes=int(num_classes), steps=int(steps),
      batch_size=min(int(batch_size), train_x.shape[0]), lr=float(lr),
      momentum=float(momentum), weight_decay=float(weight_decay),
      nesterov=bool(nesterov), cosine=schedule == "cosine", seed=int(seed))
  topk = (1, 5) if num_classes >= 5 else (1,)
  test_acc, _ = _evaluate(params, test_x, test_y, topk)
  train_acc, train_loss = _evaluate(params, train_x, train_y, (1,))
  result = {"top1": test_acc[1]}
  if 5 in test_acc:
    result["top5"] = test_acc[5]
  result["train_top1"] = train_acc[1]
  result["final_loss"] = train_loss
  return result
