"""SimCLR: one network, two views, NT-Xent over the batch.

BatchNorm (`model.view_batch_stats`, default "joint"): both views in one
pass, as SimCLR's TF code concatenates them (statistics over 2B rows).
"""

from __future__ import annotations

from mdssl_jax.losses import nt_xent
from mdssl_jax.methods import base


def two_view_projections(method: base.Method, inputs: base.StepInputs):
  """Encodes both views (`model.view_batch_stats`; SimCLR: one joint pass).

  Returns:
    (z1 [B, d], z2 [B, d], updated batch_stats).
  """
  out, batch_stats = method.encode_views(inputs.params, inputs.batch_stats,
                                         inputs.batch["large"])
  return out["proj"][0], out["proj"][1], batch_stats


class SimCLR(base.Method):
  """SimCLR (Chen et al. 2020): NT-Xent over the whole (union) batch.

  On a multi-domain batch this is the "multi-domain SimCLR" baseline of
  MDSSL: negatives come from every domain.
  """

  name = "simclr"

  @classmethod
  def validate(cls, config):
    errors = super().validate(config)
    if config.method_args.temperature <= 0:
      errors.append("method_args.temperature must be > 0, got "
                    f"{config.method_args.temperature}.")
    return errors

  def loss(self, inputs):
    z1, z2, batch_stats = two_view_projections(self, inputs)
    loss, metrics = nt_xent(z1, z2, temperature=self.args.temperature)
    metrics.update(self.monitor(z1, z2))
    return loss, base.StepAux(metrics, batch_stats, inputs.target_batch_stats,
                              inputs.buffers)
