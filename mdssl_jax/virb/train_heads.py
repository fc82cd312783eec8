"""Training and applying end-task heads (Adam; the encoder stays frozen).

Synopsis::

  head = heads.LinearHead(10)
  trained, losses = train_heads.train_head(
      head, feats, labels, loss="ce", steps=1500, batch_size=32, lr=3e-4,
      seed=0)
  logits = train_heads.predict(head, trained, test_feats, batch_size=256)

Inputs are precomputed encoder outputs (any pytree of arrays with a
leading example axis), so no gradient ever reaches the encoder. The
compiled step is keyed by (head, loss, lr, out_size) and the input shapes,
so every encoder of one architecture reuses it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mdssl_jax.virb import heads as heads_lib

LOSSES = ("ce", "l1")

PyTree = Any


@dataclasses.dataclass
class TrainedHead:
  """A trained head's parameters and its target scaling.

  Attributes:
    params: the head's parameters.
    shift, scale: L1 heads regress (target - shift) / scale (per-channel
      train mean and std, so that every task starts from a zero-mean,
      unit-scale problem); predictions are mapped back. 0 and 1 for CE.
  """
  params: PyTree
  shift: np.ndarray
  scale: np.ndarray


def _apply(head: nn.Module, params: PyTree, inputs: PyTree,
           out_size: int | None) -> jax.Array:
  if isinstance(head, (heads_lib.LinearHead, heads_lib.FusionHead)):
    return head.apply({"params": params}, inputs)
  return head.apply({"params": params}, inputs, out_size)


def _loss(outputs: jax.Array, targets: jax.Array, loss: str) -> jax.Array:
  if loss == "ce":  # Image-level [B, K] or pixelwise [B, S, S, K] logits.
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        outputs.astype(jnp.float32), targets))
  return jnp.mean(jnp.abs(outputs.astype(jnp.float32) - targets))


@functools.partial(jax.jit, static_argnames=("head", "loss", "lr",
                                             "out_size"))
def _train_step(params, opt_state, inputs, targets, batch_idx, *, head, loss,
                lr, out_size):
  """One Adam step on the examples `batch_idx` [B] of the train set.

  A step per call: inside a lax.scan, XLA:CPU ran the conv heads' steps
  tens of times slower (measured ~2 s against 0.04 s per DeepLab step).
  """
  x = jax.tree.map(lambda a: a[batch_idx], inputs)
  y = targets[batch_idx]
  value, grads = jax.value_and_grad(
      lambda p: _loss(_apply(head, p, x, out_size), y, loss))(params)
  updates, opt_state = optax.adam(lr).update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, value


@functools.partial(jax.jit, static_argnames=("head", "out_size"))
def _init(rng, sample, *, head, out_size):
  """The head's parameters, initialised in one compiled program (eager
  init compiles every parameter's initialiser on its own)."""
  return head.init(rng, sample, *(() if out_size is None
                                  else (out_size,)))["params"]


@functools.partial(jax.jit, static_argnames=("head", "out_size"))
def _predict_batch(params, inputs, *, head, out_size):
  return _apply(head, params, inputs, out_size).astype(jnp.float32)


def _num(inputs: PyTree) -> int:
  return int(jax.tree.leaves(inputs)[0].shape[0])


def _take(inputs: PyTree, start: int, stop: int) -> PyTree:
  return jax.tree.map(lambda a: a[start:stop], inputs)


def train_head(head: nn.Module, inputs: PyTree, targets: np.ndarray, *,
               loss: str, steps: int, batch_size: int, lr: float, seed: int,
               out_size: int | None = None
               ) -> tuple[TrainedHead, np.ndarray]:
  """Trains `head` on frozen encoder outputs with Adam.

  Args:
    head: a module of `mdssl_jax.virb.heads`.
    inputs: its inputs for every train example (leading axis n): [n, F],
      [n, T, F], a list of [n, h_i, w_i, C_i] or a pair of such lists.
    targets: [n] or [n, S, S] int labels (loss "ce") or float targets
      shaped as the head's output (loss "l1").
    loss: "ce" (softmax cross-entropy, image-level or per pixel) or "l1".
    steps: Adam steps.
    batch_size: examples per step (at most n); batches walk through
      seeded permutations of the examples.
    lr: Adam learning rate.
    seed: head initialisation and batch order.
    out_size: output side S of the dense heads; None for image-level
      heads.

  Returns:
    (the trained head, per-step train losses [steps] float32; for "l1"
    in units of the targets' std).

  Raises:
    ValueError: unknown loss, steps < 1, or inputs and targets disagree.
  """
  if loss not in LOSSES:
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}.")
  if steps < 1:
    raise ValueError(f"steps must be >= 1, got {steps}.")
  n = _num(inputs)
  if len(targets) != n:
    raise ValueError(f"{n} inputs but {len(targets)} targets.")
  batch = min(batch_size, n)
  rng = np.random.default_rng(seed)
  per_epoch = n // batch
  epochs = -(-steps // per_epoch)
  order = np.concatenate([rng.permutation(n)[:per_epoch * batch]
                          for _ in range(epochs)])
  idx = order[:steps * batch].reshape(steps, batch)
  shift, scale = np.float32(0.0), np.float32(1.0)
  if loss == "l1":
    flat = np.reshape(targets, (-1, np.shape(targets)[-1]))
    shift = flat.mean(0).astype(np.float32)
    scale = np.maximum(flat.std(0), 1e-6).astype(np.float32)
    targets = (targets - shift) / scale
  inputs = jax.tree.map(jnp.asarray, inputs)
  targets = jnp.asarray(targets)
  params = _init(jax.random.PRNGKey(seed), _take(inputs, 0, batch),
                 head=head, out_size=out_size)
  opt_state = optax.adam(lr).init(params)
  values = []
  for batch_idx in idx:
    params, opt_state, value = _train_step(
        params, opt_state, inputs, targets, batch_idx, head=head, loss=loss,
        lr=float(lr), out_size=out_size)
    values.append(value)
  losses = np.asarray(jax.device_get(values), np.float32)
  return TrainedHead(params, shift, scale), losses


def predict(head: nn.Module, trained: TrainedHead, inputs: PyTree, *,
            batch_size: int, out_size: int | None = None) -> np.ndarray:
  """The head's outputs on every example of `inputs`.

  Args:
    head: the module.
    trained: `train_head`'s result.
    inputs: as in `train_head`, leading axis m.
    batch_size: examples per call; the last batch is zero-padded.
    out_size: as in `train_head`.

  Returns:
    [m, ...] float32 logits or regressed values.
  """
  m = _num(inputs)
  batch = min(batch_size, m)
  outs = []
  for start in range(0, m, batch):
    chunk = _take(inputs, start, start + batch)
    rows = _num(chunk)
    if rows < batch:
      chunk = jax.tree.map(
          lambda a: np.concatenate(
              [a, np.zeros((batch - rows,) + a.shape[1:], a.dtype)]), chunk)
    out = _predict_batch(trained.params, chunk, head=head, out_size=out_size)
    outs.append(np.asarray(out)[:rows])
  return np.concatenate(outs) * trained.scale + trained.shift
