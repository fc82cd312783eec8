"""DINO (Caron et al. 2021; METHODS.md §5.6): self-distillation with a centre.

Student = encoder + DINO head; teacher = its EMA. The teacher sees the large
(global) views only; the student sees every view, small views in a separate
forward pass. The centre is a buffer updated from the un-centred teacher
outputs after the loss.

BatchNorm (`model.view_batch_stats`, default "per_group"): as DINO's
MultiCropWrapper, the backbone runs once per resolution group (both global
crops together, all local crops together) and the head once over every
crop; the teacher encodes the two global crops in one pass.
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
    groups = [inputs.batch[k] for k in ("large", "small")
              if k in inputs.batch]
    student, bs = self.encode_multicrop(inputs.params, inputs.batch_stats,
                                        groups)
    logits = jnp.concatenate([g["head"] for g in student], axis=0)
    (teacher,), tbs = self.encode_multicrop(inputs.target_params,
                                            inputs.target_batch_stats,
                                            groups[:1], target=True)
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
    feats = student[0]["features"]
    metrics.update(self.monitor(feats[0], feats[1]))
    return loss, base.StepAux(metrics, bs, tbs, {"center": center})
