"""The refined saliency network (DeepUSPS-style self-refinement).

A small top-down decoder (FPN-like: 1×1 laterals, bilinear upsampling,
3×3 convs, a 1-channel logit head) on the project's ResNet encoder
(``models.network.build_encoder``), optionally initialised from an SSL
checkpoint of this project. It is trained with pixel-wise binary cross
entropy on pseudo-labels fused from the handcrafted maps, in a few
self-refinement rounds (seed 004 App. B.2.1): after each round the network
predicts the training images, the predictions are averaged over the rounds
so far, and the average, thresholded, is the next round's label. The
learning rate grows by ``lr_growth`` per round (the paper doubles it).

Checkpoints (orbax, ``<workdir>/refine/checkpoints/<round>``) are written
after every round, after the next round's labels
(``<workdir>/refine/labels_<round>.npz``), so an interrupted run resumes at
the last finished round.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Callable

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mdssl_jax import atomic_file
from mdssl_jax import checkpoint as ckpt_lib
from mdssl_jax import progress as progress_lib
from mdssl_jax.models import network


class SaliencyNet(nn.Module):
  """ResNet encoder + top-down decoder -> per-pixel saliency logits.

  Attributes:
    encoder: a ResNet (``build_encoder``); its variables live under
      "encoder", as in the SSL network, so SSL weights load directly.
    decoder_width: channels of every decoder level.
  """
  encoder: nn.Module
  decoder_width: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Maps normalised [B, H, W, 3] images to [B, H, W] logits."""
    _, feats = self.encoder(x, train=train)
    keys = sorted((k for k in feats if k.startswith("stage")),
                  key=lambda k: int(k[5:]))
    y = None
    for key in reversed(keys):
      lateral = nn.Conv(self.decoder_width, (1, 1), name=f"lateral_{key}")(
          feats[key].astype(jnp.float32))
      if y is not None:
        y = jax.image.resize(y, lateral.shape, "bilinear") + lateral
      else:
        y = lateral
      y = nn.relu(nn.Conv(self.decoder_width, (3, 3),
                          name=f"smooth_{key}")(y))
    logits = nn.Conv(1, (3, 3), name="head")(y)
    b, h, w, _ = x.shape
    return jax.image.resize(logits, (b, h, w, 1), "bilinear")[..., 0]


def build_net(cfg: ml_collections.ConfigDict) -> SaliencyNet:
  """The network described by ``config.refine`` (model, decoder_width)."""
  if cfg.model.name != "resnet":
    raise ValueError(f"refine.model.name must be 'resnet' (the decoder reads "
                     f"the ResNet stages), got {cfg.model.name!r}.")
  return SaliencyNet(encoder=network.build_encoder(cfg.model, jnp.float32),
                     decoder_width=int(cfg.decoder_width))


def normalise(images: np.ndarray, cfg: ml_collections.ConfigDict
              ) -> np.ndarray:
  """[N, H, W, 3] uint8 -> float32 normalised with cfg.mean / cfg.std."""
  mean = np.asarray(cfg.mean, np.float32)
  std = np.asarray(cfg.std, np.float32)
  return (images.astype(np.float32) / 255.0 - mean) / std


@functools.lru_cache(maxsize=8)
def _init_fn(net: SaliencyNet):
  # Jitted: op-by-op initialisation of a ResNet is slow on a CPU.
  return jax.jit(functools.partial(net.init, train=False))


def init_variables(net: SaliencyNet, cfg: ml_collections.ConfigDict,
                   image_size: int) -> dict[str, Any]:
  """{"params", "batch_stats"}; the encoder from cfg.init_workdir if set."""
  sample = jnp.zeros((2, image_size, image_size, 3), jnp.float32)
  variables = _init_fn(net)(jax.random.PRNGKey(int(cfg.seed)), sample)
  variables = {"params": variables["params"],
               "batch_stats": variables.get("batch_stats", {})}
  if cfg.init_workdir:
    params, stats = load_ssl_encoder(cfg.init_workdir, cfg.init_step)
    _check_same_tree(variables["params"]["encoder"], params,
                     cfg.init_workdir)
    variables["params"] = {**variables["params"], "encoder": params}
    variables["batch_stats"] = {**variables["batch_stats"],
                                "encoder": stats}
  return variables


def load_ssl_encoder(workdir: str, step: int | None
                     ) -> tuple[Any, Any]:
  """(params, batch_stats) of the encoder of an SSL run's checkpoint.

  Args:
    workdir: a workdir written by ``python -m mdssl_jax.main``.
    step: checkpoint step; None: the latest.

  Returns:
    The encoder's params and batch_stats as host arrays.
  """
  # pylint: disable=g-import-not-at-top
  from mdssl_jax import evaluate
  from mdssl_jax import train
  # pylint: enable=g-import-not-at-top
  config = evaluate.load_config(workdir)
  _, state, _ = train.load_for_eval(config, workdir, step)
  return (jax.device_get(state.params["encoder"]),
          jax.device_get(state.batch_stats.get("encoder", {})))


def _check_same_tree(expected: Any, got: Any, workdir: str) -> None:
  shapes = lambda t: jax.tree.map(lambda a: tuple(a.shape), t)
  if shapes(expected) != shapes(got):
    raise ValueError(
        f"refine.init_workdir={workdir!r}: its encoder does not match "
        "refine.model; set refine.model to the run's config.model (depth, "
        "width_multiplier, stem, norm).")


def _loss_fn(net: SaliencyNet):

  def loss(params, batch_stats, images, labels):
    logits, updates = net.apply(
        {"params": params, "batch_stats": batch_stats}, images, train=True,
        mutable=["batch_stats"])
    bce = optax.sigmoid_binary_cross_entropy(logits, labels).mean()
    return bce, updates.get("batch_stats", batch_stats)

  return loss


def make_optimizer(lr: float) -> optax.GradientTransformation:
  """Adam (b1 0.9, the paper's "momentum") with its lr in the state."""
  return optax.inject_hyperparams(optax.adam)(learning_rate=lr, b1=0.9)


@functools.lru_cache(maxsize=8)
def make_train_step(net: SaliencyNet) -> Callable[..., Any]:
  """Jitted (variables, opt_state, images, labels) -> (vars, opt, loss).

  One compilation serves every round: the learning rate lives in
  opt_state (:func:`make_optimizer`).
  """
  grad_fn = jax.value_and_grad(_loss_fn(net), has_aux=True)
  tx = make_optimizer(0.0)

  @jax.jit
  def step(variables, opt_state, images, labels):
    (loss, stats), grads = grad_fn(variables["params"],
                                   variables["batch_stats"], images, labels)
    updates, opt_state = tx.update(grads, opt_state, variables["params"])
    params = optax.apply_updates(variables["params"], updates)
    return {"params": params, "batch_stats": stats}, opt_state, loss

  return step


@functools.lru_cache(maxsize=8)
def _predict_fn(net: SaliencyNet):

  @jax.jit
  def predict(variables, images):
    return jax.nn.sigmoid(net.apply(variables, images, train=False))

  return predict


def predict(net: SaliencyNet, variables: dict[str, Any], images: np.ndarray,
            cfg: ml_collections.ConfigDict) -> np.ndarray:
  """Saliency probabilities of [N, S, S, 3] uint8 images: [N, S, S].

  Batches of cfg.batch_size; the last one is zero-padded so one compiled
  shape serves every call.
  """
  fn = _predict_fn(net)
  batch = int(cfg.batch_size)
  out = []
  for lo in range(0, len(images), batch):
    chunk = normalise(images[lo:lo + batch], cfg)
    pad = batch - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:],
                                              np.float32)])
    out.append(np.asarray(fn(variables, chunk))[:batch - pad])
  return np.concatenate(out) if out else np.zeros(images.shape[:3],
                                                  np.float32)


def _batches(num: int, batch: int, steps: int, rng: np.random.Generator):
  """Index batches from consecutive random permutations (full batches)."""
  order = np.empty(0, np.int64)
  for _ in range(steps):
    if len(order) < batch:
      order = np.concatenate([order, rng.permutation(num)])
    yield order[:batch]
    order = order[batch:]


def train_round(net: SaliencyNet, variables: dict[str, Any],
                images: np.ndarray, labels: np.ndarray,
                cfg: ml_collections.ConfigDict, round_index: int,
                log: Callable[[str], None] = logging.info
                ) -> tuple[dict[str, Any], float]:
  """One refinement round: cfg.epochs_per_round epochs of Adam on BCE.

  Args:
    net: the network.
    variables: {"params", "batch_stats"} to start from.
    images: [N, S, S, 3] uint8 training images.
    labels: [N, S, S] float32 {0, 1} labels.
    cfg: ``config.refine``.
    round_index: 0-based round (learning rate cfg.lr · lr_growth^round).
    log: where progress lines go.

  Returns:
    (trained variables, mean loss of the last epoch).
  """
  num, batch = len(images), int(cfg.batch_size)
  if num < batch:
    raise ValueError(f"refine.batch_size={batch} exceeds the {num} "
                     "training images; lower it or raise "
                     "refine.train_examples.")
  steps_per_epoch = num // batch
  steps = steps_per_epoch * int(cfg.epochs_per_round)
  lr = float(cfg.lr) * float(cfg.lr_growth) ** round_index
  opt_state = make_optimizer(lr).init(variables["params"])
  step_fn = make_train_step(net)
  rng = np.random.default_rng([int(cfg.seed), round_index])
  progress = progress_lib.Progress(total_steps=steps, start_step=0,
                                   images_per_step=batch)
  losses = []
  for step, idx in enumerate(_batches(num, batch, steps, rng), 1):
    x = normalise(images[idx], cfg)
    y = labels[idx]
    flip = rng.random(batch) < 0.5  # Same flip for image and label.
    x[flip] = x[flip, :, ::-1]
    y = np.where(flip[:, None, None], y[:, :, ::-1], y)
    variables, opt_state, loss = step_fn(variables, opt_state, x, y)
    losses.append(loss)
    if step % max(1, steps // 5) == 0 or step == steps:
      log(f"refine round {round_index + 1}/{cfg.rounds} (lr {lr:.3g}): "
          + progress.line(step, {"loss": float(loss)}))
  last = np.asarray(jax.device_get(losses[-steps_per_epoch:]))
  return variables, float(last.mean())


def refine(images: np.ndarray, labels: np.ndarray,
           cfg: ml_collections.ConfigDict, workdir: str,
           log: Callable[[str], None] = logging.info
           ) -> tuple[SaliencyNet, dict[str, Any], list[dict[str, float]]]:
  """Trains the network in cfg.rounds self-refinement rounds, resumable.

  Args:
    images: [N, S, S, 3] uint8 training images.
    labels: [N, S, S] float32 {0, 1} fused pseudo-labels (round 1).
    cfg: ``config.refine``.
    workdir: the tool's workdir (checkpoints in ``<workdir>/refine``).
    log: where progress lines go.

  Returns:
    (net, final variables, per-round history [{"round", "loss",
    "label_change"}]).
  """
  net = build_net(cfg)
  variables = init_variables(net, cfg, images.shape[1])
  root = os.path.join(workdir, "refine")
  labels_file = lambda r: os.path.join(root, f"labels_{r}.npz")
  history: list[dict[str, float]] = []
  avg = np.zeros(labels.shape, np.float32)
  start = 0
  with ckpt_lib.Checkpointer(root, keep=2, async_save=False) as checkpointer:
    done = checkpointer.latest_step()
    if done is not None:
      device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
      abstract = jax.tree.map(
          lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
          variables)
      variables, meta = checkpointer.restore(abstract, done)
      with np.load(labels_file(done)) as saved:
        labels, avg = saved["labels"], saved["average"]
      history, start = meta["history"], done
      log(f"refine: resuming after round {done}/{cfg.rounds} "
          f"({checkpointer.directory}).")
    for r in range(start, int(cfg.rounds)):
      t0 = time.time()
      variables, loss = train_round(net, variables, images, labels, cfg, r,
                                    log)
      pred = predict(net, variables, images, cfg)
      avg = avg + (pred - avg) / (r + 1)  # Mean over the rounds so far.
      new = (avg >= float(cfg.threshold)).astype(np.float32)
      history.append({"round": r + 1, "loss": loss,
                      "label_change": float(np.abs(new - labels).mean())})
      labels = new
      # The labels first: a checkpoint never exists without its labels.
      with atomic_file.atomic_open(labels_file(r + 1), "wb") as f:
        np.savez(f, labels=labels, average=avg)
      checkpointer.save(r + 1, jax.device_get(variables),
                        {"history": history})
      log(f"refine: round {r + 1}/{cfg.rounds} done in "
          f"{time.time() - t0:.1f} s, loss {loss:.4f}, "
          f"{history[-1]['label_change']:.2%} of label pixels changed.")
  return net, variables, history
