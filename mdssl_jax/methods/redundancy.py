"""Redundancy-reduction methods: VICReg and Barlow Twins (METHODS.md §5.4–5.5).

Both views pass through one shared network; there is no target, predictor
or stop-gradient.

BatchNorm (`model.view_batch_stats`, default "per_view"): one pass per view,
as the official code (`backbone(x)`, `backbone(y)` in VICReg's and Barlow
Twins' `forward`) and solo-learn do.
"""

from __future__ import annotations


from mdssl_jax.losses import barlow_twins_loss, vicreg_loss
from mdssl_jax.methods import base


def _two_views(method: base.Method, inputs: base.StepInputs):
  out, bs = method.encode_views(inputs.params, inputs.batch_stats,
                                inputs.batch["large"])
  return out["proj"][0], out["proj"][1], bs


class VICReg(base.Method):
  """VICReg (Bardes et al. 2022): invariance, variance, covariance (25/25/1)."""

  name = "vicreg"

  def loss(self, inputs):
    z1, z2, bs = _two_views(self, inputs)
    a = self.args
    loss, metrics = vicreg_loss(z1, z2, sim_coeff=a.sim_coeff,
                                std_coeff=a.std_coeff, cov_coeff=a.cov_coeff)
    metrics.update(self.monitor(z1, z2))
    return loss, base.StepAux(metrics, bs, inputs.target_batch_stats,
                              inputs.buffers)


class BarlowTwins(base.Method):
  """Barlow Twins (Zbontar et al. 2021): cross-correlation towards identity.

  `lambd` 5e-3 off-diagonal weight; `scale` multiplies the whole loss
  (solo-learn uses 0.1).
  """

  name = "barlow_twins"

  def loss(self, inputs):
    z1, z2, bs = _two_views(self, inputs)
    loss, metrics = barlow_twins_loss(z1, z2, lambd=self.args.lambd,
                                      scale=self.args.scale)
    metrics.update(self.monitor(z1, z2))
    return loss, base.StepAux(metrics, bs, inputs.target_batch_stats,
                              inputs.buffers)
