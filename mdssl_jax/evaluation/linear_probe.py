"""Linear probe: softmax regression trained with SGD on frozen features.

Synopsis::

  res = train_linear_probe(train_f, train_y, test_f, test_y, num_classes=10,
                           steps=5000)
  res["top1"], res["top5"], res["train_top1"], res["final_loss"]
  res = train_augmented_probe(train_images, train_f, train_y, test_f, test_y,
                              features_fn=method.features, params=p,
                              batch_stats=s, num_classes=10, ...)

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

Schedules: "constant", "cosine" (to 0 at the last step) and "step" (× decay
at `step_boundaries(milestones, steps)`, solo-learn's 60 % / 80 %).
`train_augmented_probe` is RELICv2 D.1's augmented probe: the same SGD
loop, but every step re-encodes random-resized-crop + flip views of the
train images with the frozen encoder (eval-mode BN, stop-gradient) inside
the jitted scan, so it costs one encoder forward per step; the frozen-
feature path above is untouched by it.
"""

from __future__ import annotations

import functools
import math
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mdssl_jax.evaluation import image_augment
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


def _hparams(lr: float, momentum: float, weight_decay: float, steps: int,
             decay: float, boundaries: tuple[int, ...]) -> jax.Array:
  """[5 + len(boundaries)] float32 traced hyperparameters of `_optimizer`."""
  return jnp.asarray([lr, momentum, weight_decay, steps, decay, *boundaries],
                     jnp.float32)


def _optimizer(hparams: jax.Array, *, nesterov: bool,
               schedule: str) -> optax.GradientTransformation:
  """SGD with coupled L2 decay; `hparams` (see `_hparams`) may be traced."""
  lr, momentum, weight_decay, total_steps = (hparams[0], hparams[1],
                                             hparams[2], hparams[3])
  if schedule == "cosine":
    def learning_rate(count):
      frac = jnp.minimum(count, total_steps) / total_steps
      return lr * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
  elif schedule == "step":
    def learning_rate(count):
      passed = jnp.sum(count >= hparams[5:])
      return lr * hparams[4] ** passed
  else:
    learning_rate = lr
  return optax.chain(
      optax.add_decayed_weights(weight_decay),
      optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov))


def make_optimizer(lr: float, momentum: float, weight_decay: float,
                   steps: int, *, nesterov: bool, schedule: str,
                   milestones: tuple[float, ...],
                   decay: float) -> optax.GradientTransformation:
  """The probe's SGD (coupled L2, `schedule` over `steps`) for other loops.

  Args:
    lr: peak learning rate.
    momentum: momentum in [0, 1).
    weight_decay: coupled L2 coefficient.
    steps: total steps (cosine end, "step" boundaries).
    nesterov: Nesterov momentum.
    schedule: "constant", "cosine" or "step".
    milestones: "step" decay points, fractions of `steps`.
    decay: "step" factor.
  """
  hparams = _hparams(lr, momentum, weight_decay, steps, decay,
                     step_boundaries(milestones, steps))
  return _optimizer(hparams, nesterov=nesterov, schedule=schedule)


def step_boundaries(milestones, steps: int) -> tuple[int, ...]:
  """The steps at which a "step" schedule decays: round(m·steps) each.

  Update i (0-based) runs at lr·decay^(number of boundaries <= i).

  Args:
    milestones: fractions of training in (0, 1), increasing.
    steps: total SGD steps.
  """
  return tuple(int(math.floor(m * steps + 0.5)) for m in milestones)


@functools.partial(jax.jit, static_argnames=("nesterov", "schedule"))
def _run_block(state, x: jax.Array, y: jax.Array, indices: jax.Array,
               num_valid: jax.Array, hparams: jax.Array, *, nesterov: bool,
               schedule: str):
  """Runs one SGD step per row of `indices` (rows >= num_valid are no-ops).

  Args:
    state: (params, opt_state).
    x: [n, F] features.
    y: [n] int32 labels.
    indices: [block, batch] int32 minibatch row indices.
    num_valid: scalar, number of leading rows of `indices` to use.
    hparams: `_hparams` (lr, momentum, weight_decay, total_steps, decay,
      boundaries...).
    nesterov: Nesterov momentum.
    schedule: "constant", "cosine" (to 0 at total_steps) or "step".

  Returns:
    The updated (params, opt_state).
  """
  tx = _optimizer(hparams, nesterov=nesterov, schedule=schedule)
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
  remainder); the final block is zero-padded past num_valid. The probe's
  (and fine-tuning's) minibatch order.
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
           batch_size: int, hparams: jax.Array, nesterov: bool,
           schedule: str, seed: int):
  """Trains the probe; returns its Dense params."""
  # The host draws index blocks (NumPy permutations are far cheaper than
  # sorts in XLA:CPU) while the device runs the previous jitted block.
  tx = _optimizer(hparams, nesterov=nesterov, schedule=schedule)
  params = _init_params(x.shape[1], num_classes)
  state = (params, tx.init(params))
  x, y = jnp.asarray(x), jnp.asarray(y)
  block = min(steps, _BLOCK_STEPS)
  for indices, num_valid in _index_blocks(x.shape[0], batch_size, steps,
                                          block, seed):
    state = _run_block(state, x, y, indices, np.int32(num_valid), hparams,
                       nesterov=nesterov, schedule=schedule)
  return state[0]


@jax.jit
def _logits_and_losses(params, x, y):
  logits = _dense(x, params["kernel"], params["bias"])
  return logits, optax.softmax_cross_entropy_with_integer_labels(logits, y)


def evaluate_head(params, x: np.ndarray, y: np.ndarray,
                  topk: tuple[int, ...]) -> tuple[dict[int, float], float]:
  """Top-k accuracies (%) and mean cross-entropy of a linear head on (x, y).

  Runs in fixed-size padded chunks so [n, C] logits never exist at once.

  Args:
    params: {"kernel": [F, C], "bias": [C]}.
    x: [n, F] float32 (standardised) features.
    y: [n] int32 labels.
    topk: the k of the top-k accuracies.
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
                   weight_decay, schedule, milestones, decay) -> None:
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
  errors = probe_spec.schedule_errors(milestones, decay)
  if errors:
    raise ValueError(" ".join(errors))


def feature_moments(
    train_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Float64 ([F] mean, [F] std) of [n, F] features; std < 1e-6 becomes 1."""
  x = np.asarray(train_features, np.float64)
  std = x.std(axis=0)
  return x.mean(axis=0), np.where(std < _MIN_STD, 1.0, std)


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
  mean, std = feature_moments(train_features)
  return tuple(((np.asarray(a, np.float64) - mean) / std).astype(np.float32)
               for a in (train_features,) + others)


def _prepare(train_features, train_labels, test_features, test_labels,
             num_classes):
  """Checked float32 features and int32 labels of both splits."""
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
  return train_x, train_y, test_x, test_y


def _results(params, train_x, train_y, test_x, test_y,
             num_classes) -> dict[str, float]:
  topk = (1, 5) if num_classes >= 5 else (1,)
  test_acc, _ = evaluate_head(params, test_x, test_y, topk)
  train_acc, train_loss = evaluate_head(params, train_x, train_y, (1,))
  result = {"top1": test_acc[1]}
  if 5 in test_acc:
    result["top5"] = test_acc[5]
  result["train_top1"] = train_acc[1]
  result["final_loss"] = train_loss
  return result


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
    milestones: tuple[float, ...] = _DEFAULTS["milestones"],
    decay: float = _DEFAULTS["decay"],
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
    schedule: "constant", "cosine" (decays to 0 at `steps`) or "step"
      (× `decay` at each of `step_boundaries(milestones, steps)`).
    milestones: fractions of training where "step" decays, e.g. (0.6, 0.8).
    decay: the "step" factor, e.g. 0.1.
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
                 schedule=schedule, milestones=milestones, decay=decay)
  train_x, train_y, test_x, test_y = _prepare(
      train_features, train_labels, test_features, test_labels, num_classes)
  if standardize:
    train_x, test_x = standardize_features(train_x, test_x)

  hparams = _hparams(float(lr), float(momentum), float(weight_decay),
                     int(steps), float(decay),
                     step_boundaries(milestones, int(steps)))
  params = _train(
      train_x, train_y, num_classes=int(num_classes), steps=int(steps),
      batch_size=min(int(batch_size), train_x.shape[0]), hparams=hparams,
      nesterov=bool(nesterov), schedule=schedule, seed=int(seed))
  return _results(params, train_x, train_y, test_x, test_y, num_classes)


# ---- The augmented probe: the frozen encoder runs inside the loop. ----------


def _frozen_features(features_fn, encoder, views, mean, inv_std):
  params, batch_stats = encoder
  feats = features_fn(params, batch_stats, views).astype(jnp.float32)
  return (jax.lax.stop_gradient(feats) - mean) * inv_std


@functools.partial(jax.jit,
                   static_argnames=("features_fn", "nesterov", "schedule"))
def _run_augmented_block(state, encoder, images: jax.Array, y: jax.Array,
                         indices: jax.Array, num_valid: jax.Array,
                         first_step: jax.Array, key: jax.Array,
                         hparams: jax.Array, mean: jax.Array,
                         inv_std: jax.Array, *, features_fn, nesterov: bool,
                         schedule: str):
  """`_run_block` on features of crop_flip views, re-encoded every step.

  Args:
    state: (head params, opt_state).
    encoder: (params, batch_stats) of the frozen encoder (not updated).
    images: [n, H, W, 3] eval-transformed train images.
    y: [n] int32 labels.
    indices: [block, batch] int32 minibatch row indices.
    num_valid: scalar, number of leading rows of `indices` to use.
    first_step: global index of the block's first step (view keys).
    key: PRNG key of the run; step i's views use fold_in(key, i).
    hparams: `_hparams`.
    mean: [F] feature mean subtracted before the head.
    inv_std: [F] 1 / feature std.
    features_fn: the extractor's `(params, batch_stats, images) -> [b, F]`
      (eval mode).
    nesterov: Nesterov momentum.
    schedule: "constant", "cosine" or "step".

  Returns:
    The updated (head params, opt_state).
  """
  tx = _optimizer(hparams, nesterov=nesterov, schedule=schedule)
  grad_fn = jax.grad(_ce_loss)

  def sgd_step(state, i):
    params, opt_state = state
    idx = indices[i]
    views = image_augment.crop_flip(
        jax.random.fold_in(key, first_step + i), images[idx])
    x = _frozen_features(features_fn, encoder, views, mean, inv_std)
    updates, opt_state = tx.update(grad_fn(params, x, y[idx]), opt_state,
                                   params)
    return optax.apply_updates(params, updates), opt_state

  def body(state, i):
    state = jax.lax.cond(i < num_valid, sgd_step, lambda s, _: s, state, i)
    return state, None

  return jax.lax.scan(body, state, jnp.arange(indices.shape[0]))[0]


def train_augmented_probe(
    train_images: np.ndarray,
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    features_fn,
    params,
    batch_stats,
    num_classes: int,
    steps: int,
    batch_size: int,
    lr: float,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    schedule: str,
    milestones: tuple[float, ...],
    decay: float,
    standardize: bool,
    seed: int,
) -> dict[str, float]:
  """The RELICv2 D.1 probe: augmented train views through a frozen encoder.

  Every SGD step takes a minibatch of `train_images`, draws a random
  resized crop + flip of each (`image_augment.crop_flip`, keyed by seed
  and step), encodes the views with `features_fn` under `params` /
  `batch_stats` (eval-mode BN, stop-gradient: nothing about the encoder
  changes) and updates the head. The test side uses `test_features`, the
  eval (centre-crop) transform's; train accuracy and loss are measured on
  `train_features` (un-augmented). Standardisation uses the mean / std of
  `train_features`. Hyperparameters as in `train_linear_probe`.

  Args:
    train_images: [n, H, W, 3] eval-transformed train images.
    train_features: [n, F] their (un-augmented) features.
    train_labels: [n] int labels.
    test_features: [m, F] eval-transform test features.
    test_labels: [m] int labels.
    features_fn: un-jitted `(params, batch_stats, images) -> [b, F]`.
    params: encoder parameters (read only).
    batch_stats: their BatchNorm statistics (read only).
    num_classes: C.
    steps: SGD steps.
    batch_size: minibatch size; clipped to n.
    lr: peak learning rate.
    momentum: momentum in [0, 1).
    nesterov: Nesterov momentum.
    weight_decay: coupled L2 coefficient.
    schedule: "constant", "cosine" or "step".
    milestones: "step" decay points (fractions of training).
    decay: "step" factor.
    standardize: z-score features with train-feature statistics.
    seed: seed of the minibatch order and of the views.

  Returns:
    `train_linear_probe`'s dict.
  """
  _check_hparams(num_classes=num_classes, steps=steps, batch_size=batch_size,
                 lr=lr, momentum=momentum, weight_decay=weight_decay,
                 schedule=schedule, milestones=milestones, decay=decay)
  train_x, train_y, test_x, test_y = _prepare(
      train_features, train_labels, test_features, test_labels, num_classes)
  images = np.asarray(train_images, np.float32)
  if images.ndim != 4 or images.shape[0] != train_x.shape[0]:
    raise ValueError(f"train_images must be [n={train_x.shape[0]}, H, W, C] "
                     f"to match train_features, got {images.shape}.")
  if standardize:
    mean, std = feature_moments(train_x)
    train_x, test_x = standardize_features(train_x, test_x)
  else:
    mean, std = np.zeros(train_x.shape[1]), np.ones(train_x.shape[1])
  # One device: a replicated encoder would otherwise run every step on
  # every device of its mesh.
  device = jax.devices()[0]
  encoder = jax.device_put((params, batch_stats), device)
  images_d, labels_d = jax.device_put((images, train_y), device)
  mean_d = jnp.asarray(mean, jnp.float32)
  inv_std_d = jnp.asarray(1.0 / std, jnp.float32)
  hparams = _hparams(float(lr), float(momentum), float(weight_decay),
                     int(steps), float(decay),
                     step_boundaries(milestones, int(steps)))
  tx = _optimizer(hparams, nesterov=nesterov, schedule=schedule)
  head = _init_params(train_x.shape[1], num_classes)
  state = (head, tx.init(head))
  key = jax.random.key(seed)
  block = min(steps, _BLOCK_STEPS)
  done = 0
  for indices, num_valid in _index_blocks(
      images.shape[0], min(int(batch_size), images.shape[0]), int(steps),
      block, int(seed)):
    state = _run_augmented_block(
        state, encoder, images_d, labels_d, indices, np.int32(num_valid),
        np.int32(done), key, hparams, mean_d, inv_std_d,
        features_fn=features_fn, nesterov=bool(nesterov), schedule=schedule)
    done += num_valid
  return _results(state[0], train_x, train_y, test_x, test_y, num_classes)
