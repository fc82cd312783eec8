"""Online monitors: a linear probe, a kNN bank and RankMe, during training.

Synopsis::

  monitors = online_monitors.Monitors.create(config, num_classes=(10, 47),
                                             feature_dim=512)
  state = monitors.init()                       # TrainState.buffers["monitor"]
  state, metrics = monitors.update(state, features, batch, step)

All three read the stop-gradient backbone features [B, F] of the first large
view, which the method's loss computes anyway (`Method.loss_with_features`),
so no extra encoder pass runs. Their state lives in
``TrainState.buffers[MONITOR_KEY]`` and is updated after the SSL step; it
never enters the SSL gradient or the SSL optimiser state.

* Online linear probe (solo-learn's / stable-pretraining's online
  classifier): one linear head over the concatenated label spaces of the
  domains (domain d owns classes offset_d .. offset_d + C_d − 1), its logits
  masked to the example's own domain range, trained by its own optimiser
  (`monitors.online_probe`). Logged on the batch before the probe's update:
  "online/probe_loss", "online/probe_top1" and, with several domains,
  "online/probe_top1/<domain>" (top-1 in %).
* Online kNN: a FIFO bank of the last `bank_size` ℓ2-normalised features
  with their labels and domains. Each step the batch is classified against
  the bank before being inserted (METHODS §6.2 weighted vote, k neighbours
  of the example's own domain, weights exp(s/T)); "online/knn_top1" (%) over
  the rows that found a neighbour (0 on the first step, when the bank is
  empty).
* RankMe (Garrido et al. 2023): exp(−Σ p_k log p_k), p_k = σ_k/‖σ‖₁ + ε,
  of the bank's ℓ2-normalised features (of the batch's when the kNN bank is
  off), computed every `every_steps` steps (under `lax.cond`);
  "online/rankme" is the latest value (held in the state between
  computations).

Rows with a negative label (no label) are skipped by the probe and never
voted for by the kNN bank. The probe's "adam" is AdamW (decoupled
`weight_decay`); "sgd" is SGD with `momentum` and L2 `weight_decay`.

A checkpoint without monitor state resumes (and evaluates) with the enabled
monitors started afresh (`train.restore_state`); turning monitors on or off
on resume changes `config.monitors`, which the workdir check refuses unless
checkpoint.allow_changes names "monitors".
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax

from mdssl_jax.losses.common import l2_normalize

PyTree = Any

# The key of the monitors' state in TrainState.buffers.
MONITOR_KEY = "monitor"
# Masked logits: finite, so no inf − inf arises in the cross-entropy.
_MASKED_LOGIT = -1e9


def any_enabled(monitors: ml_collections.ConfigDict,
                with_probe: bool = True) -> bool:
  """Whether a monitor is on (the probe counts only if with_probe)."""
  return any(monitors[name].enabled for name in monitors
             if with_probe or name != "online_probe")


def rankme(x: jax.Array, eps: float = 1e-7) -> jax.Array:
  """RankMe (Garrido et al. 2023) of a matrix of embeddings.

  Args:
    x: [n, d] embeddings (zero rows, e.g. empty bank slots, change nothing).
    eps: the paper's ε added to each normalised singular value.

  Returns:
    float32 scalar exp(−Σ_k p_k log p_k), p_k = σ_k/‖σ‖₁ + ε, over the
    min(n, d) singular values σ_k: ≈ k for a rank-k matrix, ≈ 1 collapsed.
  """
  x = x.astype(jnp.float32)
  # The triangle R of x = QR (or of xᵀ) has x's singular values; an SVD of
  # the tall x would allocate its [n, n] left vectors (64 MB at n = 4096).
  if x.shape[0] != x.shape[1]:
    x = jnp.linalg.qr(x if x.shape[0] > x.shape[1] else x.T, mode="r")
  s = jnp.linalg.svd(x, compute_uv=False)
  p = s / jnp.maximum(jnp.sum(s), 1e-30) + eps
  return jnp.exp(-jnp.sum(p * jnp.log(p)))


def knn_vote(query: jax.Array, query_domain: jax.Array, bank: jax.Array,
             bank_labels: jax.Array, bank_domain: jax.Array, *, k: int,
             temperature: float) -> tuple[jax.Array, jax.Array]:
  """Weighted kNN predictions against a bank, same-domain neighbours only.

  Args:
    query: [B, F] ℓ2-normalised features.
    query_domain: [B] int domain of each query.
    bank: [S, F] ℓ2-normalised features.
    bank_labels: [S] int labels; negative: an empty or unlabelled slot.
    bank_domain: [S] int domains.
    k: neighbours per query (≤ S).
    temperature: T of the weights exp(s/T).

  Returns:
    (predicted labels [B] int32, found [B] bool: the query had at least one
    valid neighbour). Class c scores Σ_i exp(s_i/T)·[y_i = c] over the
    valid neighbours among the top k; ties go to the lowest class, as
    argmax over a class-score vector does.
  """
  valid = (bank_labels[None, :] >= 0) & (bank_domain[None, :]
                                          == query_domain[:, None])
  sims = jnp.where(valid, query @ bank.T, -jnp.inf)
  top, idx = jax.lax.top_k(sims, k)
  used = jnp.isfinite(top)
  weights = jnp.where(used, jnp.exp(jnp.where(used, top, 0.0) / temperature),
                      0.0)
  labels = bank_labels[idx]
  # The score of each neighbour's class: [B, k, k] instead of [B, classes].
  same = labels[:, :, None] == labels[:, None, :]
  scores = jnp.where(used, jnp.sum(weights[:, None, :] * same, axis=-1),
                     -1.0)
  best = jnp.max(scores, axis=-1, keepdims=True)
  big = jnp.iinfo(jnp.int32).max
  pred = jnp.min(jnp.where(scores == best, labels, big), axis=-1)
  return pred.astype(jnp.int32), jnp.any(used, axis=-1)


def _percent(hits: jax.Array, mask: jax.Array) -> jax.Array:
  """100 · (hits & mask) / mask over rows; 0 when no row counts."""
  n = jnp.sum(mask)
  return 100.0 * jnp.sum(hits & mask) / jnp.maximum(n, 1)


@dataclasses.dataclass(frozen=True)
class Monitors:
  """The enabled online monitors of a run (static; the state is separate).

  Attributes:
    config: `config.monitors`.
    num_classes: classes of each domain, in domain order (() without the
      probe).
    domain_names: the domains' names (per-domain metric suffixes).
    feature_dim: F, the backbone feature width.
    probe_tx: the probe's optimiser, or None when the probe is off.
  """
  config: ml_collections.ConfigDict
  num_classes: tuple[int, ...]
  domain_names: tuple[str, ...]
  feature_dim: int
  probe_tx: optax.GradientTransformation | None

  @classmethod
  def create(cls, config: ml_collections.ConfigDict,
             num_classes: Sequence[int] | None, feature_dim: int
             ) -> "Monitors":
    """The monitors of a validated run config.

    Args:
      config: the run config (`monitors`, `data.domains`).
      num_classes: classes of each domain of `config.data.domains`; None
        leaves the online probe out.
      feature_dim: width F of the backbone features.

    Raises:
      ValueError: num_classes does not give one count per domain.
    """
    names = tuple(d["name"] for d in config.data.domains)
    probe = config.monitors.online_probe
    tx = None
    if probe.enabled and num_classes is not None:
      if len(num_classes) != len(names):
        raise ValueError(
            f"The online probe needs the classes of each of the {len(names)} "
            f"domains, got num_classes={num_classes}: pass "
            "train.class_counts(domains).")
      if probe.optimizer == "adam":
        tx = optax.adamw(probe.lr, weight_decay=probe.weight_decay)
      else:
        tx = optax.chain(optax.add_decayed_weights(probe.weight_decay),
                         optax.sgd(probe.lr, momentum=probe.momentum))
    return cls(config.monitors, tuple(num_classes or ()), names,
               int(feature_dim), tx)

  @property
  def _offsets(self) -> jax.Array:
    """[D] first global class of each domain."""
    starts = [0]
    for c in self.num_classes[:-1]:
      starts.append(starts[-1] + c)
    return jnp.asarray(starts, jnp.int32)

  def init(self) -> dict[str, PyTree]:
    """The monitors' initial state: {"probe"?, "knn"?, "rankme"?}."""
    state = {}
    if self.probe_tx is not None:
      total = sum(self.num_classes)
      # Zero init, as a linear classifier needs no symmetry breaking.
      params = {"kernel": jnp.zeros((self.feature_dim, total), jnp.float32),
                "bias": jnp.zeros((total,), jnp.float32)}
      state["probe"] = {"params": params,
                        "opt_state": self.probe_tx.init(params)}
    knn = self.config.online_knn
    if knn.enabled:
      size = knn.bank_size
      state["knn"] = {
          "features": jnp.zeros((size, self.feature_dim), jnp.float32),
          "labels": jnp.full((size,), -1, jnp.int32),
          "domains": jnp.zeros((size,), jnp.int32),
          "next": jnp.zeros((), jnp.int32)}
    if self.config.rankme.enabled:
      state["rankme"] = jnp.zeros((), jnp.float32)
    return state

  def _probe_logits(self, params, features, domains):
    logits = features @ params["kernel"] + params["bias"]
    offsets = self._offsets
    sizes = jnp.asarray(self.num_classes, jnp.int32)
    cls = jnp.arange(logits.shape[-1])[None, :]
    lo = offsets[domains][:, None]
    own = (cls >= lo) & (cls < lo + sizes[domains][:, None])
    return jnp.where(own, logits, _MASKED_LOGIT)

  def _probe_step(self, probe, features, labels, domains):
    targets = self._offsets[domains] + jnp.maximum(labels, 0)
    labelled = labels >= 0

    def loss_fn(params):
      logits = self._probe_logits(params, features, domains)
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
      loss = jnp.sum(jnp.where(labelled, ce, 0.0)) / jnp.maximum(
          jnp.sum(labelled), 1)
      return loss, logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        probe["params"])
    updates, opt_state = self.probe_tx.update(grads, probe["opt_state"],
                                              probe["params"])
    params = optax.apply_updates(probe["params"], updates)
    hits = jnp.argmax(logits, axis=-1) == targets
    metrics = {"online/probe_loss": loss,
               "online/probe_top1": _percent(hits, labelled)}
    if len(self.num_classes) > 1:
      for d, name in enumerate(self.domain_names):
        metrics[f"online/probe_top1/{name}"] = _percent(
            hits, labelled & (domains == d))
    return {"params": params, "opt_state": opt_state}, metrics

  def _knn_step(self, bank, features, labels, domains):
    cfg = self.config.online_knn
    pred, found = knn_vote(features, domains, bank["features"],
                           bank["labels"], bank["domains"], k=cfg.k,
                           temperature=cfg.temperature)
    top1 = _percent(pred == labels, found & (labels >= 0))
    # FIFO: the batch overwrites the oldest rows (slot `next` onwards).
    size = cfg.bank_size
    rows = (bank["next"] + jnp.arange(features.shape[0])) % size
    new = {"features": bank["features"].at[rows].set(features),
           "labels": bank["labels"].at[rows].set(labels),
           "domains": bank["domains"].at[rows].set(domains),
           "next": (bank["next"] + features.shape[0]) % size}
    return new, {"online/knn_top1": top1}

  def update(self, state: dict[str, PyTree], features: jax.Array,
             batch: dict[str, jax.Array], step: jax.Array
             ) -> tuple[dict[str, PyTree], dict[str, jax.Array]]:
    """One step of every enabled monitor.

    Args:
      state: from `init` (or a previous update).
      features: [B, F] backbone features of the batch (gradients stopped
        here).
      batch: the training batch ("label" [B] and the configured domain
        of each row: "source_domain" [B] under pseudo-domains, else
        "domain" [B]).
      step: the training step (RankMe's cadence).

    Returns:
      (new state, metrics named "online/...").
    """
    features = jax.lax.stop_gradient(features).astype(jnp.float32)
    labels = batch["label"].astype(jnp.int32)
    domains = batch["source_domain" if "source_domain" in batch
                    else "domain"].astype(jnp.int32)
    new, metrics = {}, {}
    if "probe" in state:
      new["probe"], m = self._probe_step(state["probe"], features, labels,
                                         domains)
      metrics.update(m)
    normalized = l2_normalize(features)
    if "knn" in state:
      new["knn"], m = self._knn_step(state["knn"], normalized, labels,
                                     domains)
      metrics.update(m)
    if "rankme" in state:
      cfg = self.config.rankme
      source = new["knn"]["features"] if "knn" in new else normalized
      new["rankme"] = jax.lax.cond(
          step % cfg.every_steps == 0,
          lambda: rankme(source, cfg.eps), lambda: state["rankme"])
      metrics["online/rankme"] = new["rankme"]
    return new, metrics
