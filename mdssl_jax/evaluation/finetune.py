"""Semi-supervised fine-tuning of encoder + linear head (RELICv2 D.2).

Synopsis::

  res = finetune(train_images, train_labels, test_images, test_labels,
                 features_fn=method.features, params=p, batch_stats=s,
                 extractor=extractor, num_classes=10, steps=200,
                 batch_size=64, head_lr=0.3, encoder_lr=0.004, ...)
  res["top1"], res["encoder_rel_change"]

The encoder (every parameter `features_fn` depends on) and a linear head
on its features train together with cross-entropy, each with its own
learning rate (`optax.multi_transform`), SGD with (Nesterov) momentum,
coupled L2 weight decay and the probe's schedules (RELICv2: × 0.2 at 60 %
and 80 % of training, i.e. epochs 12 and 16 of 20). Training views are
random-resized-crop + flip (`image_augment.crop_flip`) of the eval-
transformed images, or the images themselves.

BatchNorm runs in eval mode throughout: `features_fn` normalises with the
checkpoint's running statistics, which stay fixed (`batch_stats` is never
updated), while BN scale and bias are trained like every other encoder
parameter. Parameters `features_fn` does not use (projector, predictor,
heads of the SSL method) get exactly zero gradients; they are frozen, not
decayed, and excluded from `encoder_rel_change`.

The head is zero-initialised, on the raw features or (standardize=True)
on features z-scored with the initial encoder's train statistics, a fixed
affine map. Fine-tuning with fixed BN statistics can diverge at large
learning rates (the lost normalisation no longer bounds activations); a
non-finite loss or parameter change is logged as a warning. Inputs are
read, never written: training runs on a copy of `params` on one device
(nothing is donated).
"""

from __future__ import annotations

import math
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mdssl_jax.evaluation import image_augment
from mdssl_jax.evaluation import linear_probe
from mdssl_jax.evaluation.features import FeatureExtractor

# Minibatch rows drawn from the host per block.
_BLOCK = 1000


def _used_leaves(features_fn, params, batch_stats, images) -> Any:
  """Bool tree: leaves of `params` that `features_fn` depends on.

  A random cotangent on one batch's features gives every used leaf a
  nonzero gradient (and every unused one an exact zero).
  """
  def probe(p):
    feats = features_fn(p, batch_stats, images)
    r = jax.random.normal(jax.random.key(0), feats.shape, feats.dtype)
    return jnp.sum(feats * r)

  grads = jax.jit(jax.grad(probe))(params)
  return jax.tree.map(lambda g: bool(jax.device_get(jnp.any(g != 0))), grads)


def _tree_norm(tree, mask) -> float:
  """Float64 ℓ2 norm over the leaves of `tree` where `mask` is True."""
  leaves = [np.asarray(x, np.float64) for x, m in
            zip(jax.tree.leaves(tree), jax.tree.leaves(mask)) if m]
  return float(np.sqrt(sum(np.sum(np.square(x)) for x in leaves)))


def _make_step(features_fn, tx, augment: bool):
  """The jitted train step: (state, ..., idx [b], step index) -> state."""

  def loss_fn(trainable, batch_stats, views, labels, mean, inv_std):
    feats = features_fn(trainable["encoder"], batch_stats, views)
    x = (feats.astype(jnp.float32) - mean) * inv_std
    logits = x @ trainable["head"]["kernel"] + trainable["head"]["bias"]
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, labels).mean()

  def step(state, batch_stats, images, labels, idx, key, step_index, mean,
           inv_std):
    trainable, opt_state = state
    views = images[idx]
    if augment:
      views = image_augment.crop_flip(jax.random.fold_in(key, step_index),
                                      views)
    loss, grads = jax.value_and_grad(loss_fn)(
        trainable, batch_stats, views, labels[idx], mean, inv_std)
    updates, opt_state = tx.update(grads, opt_state, trainable)
    return (optax.apply_updates(trainable, updates), opt_state), loss

  return jax.jit(step)


def _placed_like(tree, reference):
  """`tree` with every leaf on the sharding of its `reference` leaf."""
  return jax.tree.map(
      lambda x, ref: jax.device_put(x, getattr(ref, "sharding", None)), tree,
      reference)


def finetune(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    features_fn,
    params: Any,
    batch_stats: Any,
    extractor: FeatureExtractor,
    num_classes: int,
    steps: int,
    batch_size: int,
    head_lr: float,
    encoder_lr: float,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    schedule: str,
    milestones: tuple[float, ...],
    decay: float,
    augment: str,
    standardize: bool,
    seed: int,
) -> dict[str, float]:
  """Fine-tunes a copy of the encoder with a linear head; tests both.

  Args:
    train_images: [n, H, W, 3] eval-transformed labelled images.
    train_labels: [n] int labels in [0, num_classes).
    test_images: [m, H, W, 3] eval-transformed test images.
    test_labels: [m] int labels.
    features_fn: un-jitted `(params, batch_stats, images) -> [b, F]`, eval
      mode (the extractor's `features_fn`).
    params: the evaluated encoder parameters (read only).
    batch_stats: their BatchNorm statistics (fixed throughout).
    extractor: the run's extractor, used to embed the splits before and
      after fine-tuning (its compiled function is reused).
    num_classes: C (>= 2).
    steps: SGD steps.
    batch_size: minibatch size (<= n).
    head_lr: the head's peak learning rate.
    encoder_lr: the encoder's peak learning rate.
    momentum: momentum in [0, 1).
    nesterov: Nesterov momentum.
    weight_decay: coupled L2 on head and encoder (not on unused leaves).
    schedule: "constant", "cosine" or "step".
    milestones: "step" decay points (fractions of training).
    decay: "step" factor.
    augment: "crop_flip" or "none".
    standardize: z-score features with the initial encoder's train stats.
    seed: seed of the minibatch order and the views.

  Returns:
    {"top1": test %, "top5": test % (C >= 5), "train_top1": % on the
     labelled images (un-augmented), "final_loss": their cross-entropy,
     "encoder_rel_change": ‖θ - θ₀‖ / ‖θ₀‖ over the encoder's used
     parameters}.
  """
  labels = np.asarray(train_labels, np.int32)
  n = labels.shape[0]
  if not 1 <= batch_size <= n:
    raise ValueError(f"batch_size={batch_size} must be in [1, n={n}].")
  init_feats = extractor(params, batch_stats, train_images)
  dim = init_feats.shape[1]
  mean, std = (linear_probe.feature_moments(init_feats) if standardize
               else (np.zeros(dim), np.ones(dim)))
  mean32, inv_std32 = mean.astype(np.float32), (1.0 / std).astype(np.float32)

  device = jax.devices()[0]
  encoder, stats = jax.device_put((params, batch_stats), device)
  images_d, labels_d = jax.device_put(
      (np.asarray(train_images, np.float32), labels), device)
  used = _used_leaves(features_fn, encoder, stats,
                      images_d[:min(n, batch_size)])
  if not any(jax.tree.leaves(used)):
    raise ValueError("features_fn depends on none of params; nothing to "
                     "fine-tune.")
  opt = dict(momentum=momentum, weight_decay=weight_decay, steps=steps,
             nesterov=nesterov, schedule=schedule, milestones=milestones,
             decay=decay)
  tx = optax.multi_transform(
      {"head": linear_probe.make_optimizer(head_lr, **opt),
       "encoder": linear_probe.make_optimizer(encoder_lr, **opt),
       "frozen": optax.set_to_zero()},
      {"head": {"kernel": "head", "bias": "head"},
       "encoder": jax.tree.map(lambda u: "encoder" if u else "frozen",
                               used)})
  head = {"kernel": jnp.zeros((dim, num_classes)),
          "bias": jnp.zeros((num_classes,))}
  trainable = {"head": head, "encoder": encoder}
  state = (trainable, tx.init(trainable))
  step_fn = _make_step(features_fn, tx, augment == "crop_flip")
  key = jax.random.key(seed)
  done = 0
  # The probe's minibatch order (seeded epoch permutations).
  blocks = linear_probe._index_blocks(  # pylint: disable=protected-access
      n, batch_size, steps, min(steps, _BLOCK), seed)
  for block, num_valid in blocks:
    for row in block[:num_valid]:
      state, _ = step_fn(state, stats, images_d, labels_d, row, key,
                         np.int32(done), mean32, inv_std32)
      done += 1
  tuned = state[0]
  change = jax.tree.map(lambda a, b: a - b, tuned["encoder"], encoder)
  rel_change = _tree_norm(change, used) / max(_tree_norm(encoder, used),
                                              1e-12)
  tuned_params = _placed_like(tuned["encoder"], params)

  def head_metrics(images, y, topk):
    feats = extractor(tuned_params, batch_stats, images)
    x = ((feats - mean) / std).astype(np.float32)
    return linear_probe.evaluate_head(tuned["head"], x, y, topk)

  topk = (1, 5) if num_classes >= 5 else (1,)
  test_acc, _ = head_metrics(test_images, np.asarray(test_labels, np.int32),
                             topk)
  train_acc, train_loss = head_metrics(train_images, labels, (1,))
  if not (math.isfinite(train_loss) and math.isfinite(rel_change)):
    logging.warning(
        "Fine-tuning diverged (train loss %s, encoder change %s); lower "
        "head_lr / encoder_lr.", train_loss, rel_change)
  result = {"top1": test_acc[1]}
  if 5 in test_acc:
    result["top5"] = test_acc[5]
  result.update(train_top1=train_acc[1], final_loss=train_loss,
                encoder_rel_change=rel_change)
  return result
