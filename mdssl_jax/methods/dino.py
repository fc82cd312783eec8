"""DINO (Caron et al. 2021; METHODS.md §5.6): self-distillation with a centre.

Student = encoder + DINO head; teacher = its EMA. The teacher sees the large
(global) views only; the student sees every view, small views in a separate
forward pass. The centre is a buffer updated from the un-centred teacher
outputs after the loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mdssl_jax import models
from mdssl_jax.losses import dino_center_update, dino_loss, teacher_temperature
from mdssl_jax.methods import base
from mdssl_jax.models import network as network_lib


class DINO(base.Method):
  """DINO with multi-crop; `method_args` as in solo-learn's ResNet setup."""

  name = "dino"
  has_target = True
  small_views = None

  def build_network(self):
    a = self.args
    head = models.DINOHead(out_dim=a.num_prototypes, hidden_dim=a.hidden_dim,
                           bottleneck_dim=a.bottleneck_dim,
                           num_layers=a.num_layers, use_bn=a.use_bn,
                           norm_last_layer=a.norm_last_layer, dtype=self.dtype)
    return network_lib.SSLNetwork(
        encoder=network_lib.build_encoder(self.config.model, self.dtype),
        head=head)

  def init_buffers(self):
    return {"center": jnp.zeros((self.args.num_prototypes,), jnp.float32)}

  def transform_grads(self, grads, step):
    # DINO keeps the last layer fixed for the first epoch for stability.
    return self.zero_grads_where(grads, ("head", "last_layer"),
                                 step < self.args.freeze_last_layer_steps)

  def loss(self, inputs):
    a = self.args
    student, bs = self.encode_views(inputs.params, inputs.batch_stats,
                                    inputs.batch["large"])
    logits = student["head"]
    if "small" in inputs.batch:
      small, bs = self.encode_views(inputs.params, bs, inputs.batch["small"])
      logits = jnp.concatenate([logits, small["head"]], axis=0)
    teacher, tbs = self.encode_views(inputs.target_params,
                                     inputs.target_batch_stats,
                                     inputs.batch["large"], target=True)
    teacher_logits = jax.lax.stop_gradient(teacher["head"])
    temp = teacher_temperature(
        inputs.step, warmup_start=a.warmup_teacher_temp, final=a.teacher_temp,
        warmup_steps=a.warmup_teacher_temp_steps)
    loss, metrics = dino_loss(logits, teacher_logits,
                              inputs.buffers["center"],
                              student_temp=a.student_temp, teacher_temp=temp)
    center = dino_center_update(inputs.buffers["center"], teacher_logits,
                                momentum=a.center_momentum)
    metrics["teacher_temp"] = temp
    feats = student["features"]
    metrics.update(self.monitor(feats[0], feats[1]))
    return loss, base.StepAux(metrics, bs, tbs, {"center": center})
