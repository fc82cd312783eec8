"""SwAV (Caron et al. 2020; METHODS.md §5.7): swapped prototype prediction.

Projections are ℓ2-normalised and scored against ℓ2-normalised prototypes
(normalised inside the graph, so the scores always use unit prototypes).
Codes come from Sinkhorn-Knopp on the large views; an optional FIFO queue of
past projections enlarges the Sinkhorn problem once it is full.

BatchNorm (`model.view_batch_stats`, default "per_group"): as SwAV's
ResNet `forward`, the backbone runs once per resolution group (the large
crops together, the small crops together) and the projection head once over
every crop.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mdssl_jax import config_lib
from mdssl_jax.losses import l2_normalize, swav_loss
from mdssl_jax.losses.swav import normalize_prototypes
from mdssl_jax.methods import base


class NormalizedPrototypes(nn.Module):
  """Scores n(z) · n(C) for K prototypes C ([d, K] kernel)."""
  num_prototypes: int

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
    del train
    kernel = self.param("kernel", nn.initializers.normal(1.0),
                        (z.shape[-1], self.num_prototypes), jnp.float32)
    return l2_normalize(z) @ normalize_prototypes(kernel)


class SwAV(base.Method):
  """SwAV with multi-crop and an optional queue."""

  name = "swav"
  small_views = None

  @classmethod
  def validate(cls, config):
    errors = super().validate(config)
    q = config.method_args.queue_size
    batch = config_lib.global_batch(config)
    if q and q % batch:
      errors.append(f"method_args.queue_size={q} must be a multiple of the "
                    f"global batch {batch}.")
    return errors

  def build_head(self):
    return NormalizedPrototypes(self.args.num_prototypes)

  def init_buffers(self):
    q = self.args.queue_size
    if not q:
      return {}
    d = self.config.projector.out_dim
    return {"queue": jnp.zeros((2, q, d), jnp.float32),
            "queue_filled": jnp.zeros((), jnp.int32)}

  def transform_grads(self, grads, step):
    return self.zero_grads_where(grads, ("head",),
                                 step < self.args.freeze_prototypes_steps)

  def loss(self, inputs):
    a = self.args
    groups = [inputs.batch[k] for k in ("large", "small")
              if k in inputs.batch]
    outs, bs = self.encode_multicrop(inputs.params, inputs.batch_stats,
                                     groups)
    scores = jnp.concatenate([g["head"] for g in outs], axis=0)
    z = outs[0]["proj"]
    kw = dict(num_global=2, temperature=a.temperature, epsilon=a.epsilon,
              num_iters=a.sinkhorn_iters)
    loss, metrics = swav_loss(scores, **kw)
    buffers = inputs.buffers
    if a.queue_size:
      queue = buffers["queue"]
      protos = normalize_prototypes(
          jax.lax.stop_gradient(inputs.params["head"]["kernel"]))
      q_loss, q_metrics = swav_loss(scores, queue_scores=queue @ protos, **kw)
      use = ((buffers["queue_filled"] >= a.queue_size)
             & (inputs.step >= a.queue_start_step))
      loss = jnp.where(use, q_loss, loss)
      metrics = jax.tree.map(lambda x, y: jnp.where(use, x, y), q_metrics,
                             metrics)
      new = jax.lax.stop_gradient(l2_normalize(z[:2]))
      queue = jnp.concatenate([new, queue], axis=1)[:, :a.queue_size]
      filled = jnp.where(inputs.step >= a.queue_start_step,
                         buffers["queue_filled"] + new.shape[1],
                         buffers["queue_filled"])
      buffers = {"queue": queue, "queue_filled": filled}
      metrics["queue_in_use"] = use.astype(jnp.float32)
    metrics.update(self.monitor(z[0], z[1]))
    return loss, base.StepAux(metrics, bs, inputs.target_batch_stats, buffers)
