"""EMA-target methods: BYOL, MoCo v3 and MSBReg (METHODS.md §4, §5.2, §5.3).

All three share one shape: every view goes through the online network
(encoder → projector → predictor) and through the EMA target (encoder →
projector, stop-gradient); the loss compares online predictions with target
projections of the other views.

BatchNorm (`model.view_batch_stats`, default "per_view" for all three): one
pass per view in both branches, as solo-learn's per-crop forward and its
momentum branch, deepmind BYOL's separate calls on view1 and view2, and
MoCo v3's separate `base_encoder(x1)`, `base_encoder(x2)` calls do.
"""

from __future__ import annotations

import jax

from mdssl_jax.losses import byol_loss, mocov3_loss, msbreg_loss
from mdssl_jax.methods import base


def online_and_target(method: base.Method, inputs: base.StepInputs):
  """Online predictions and target projections of all large views.

  Returns:
    (online outputs [V, B, ...], target projections [V, B, d] with
    stop-gradient, online batch_stats, target batch_stats).
  """
  views = inputs.batch["large"]
  online, bs = method.encode_views(inputs.params, inputs.batch_stats, views)
  target, tbs = method.encode_views(inputs.target_params,
                                    inputs.target_batch_stats, views,
                                    target=True)
  # The target gets no gradient: its parameters are an EMA, not optimised.
  return online, jax.lax.stop_gradient(target["proj"]), bs, tbs


class BYOL(base.Method):
  """BYOL (Grill et al. 2020): symmetrised normalised regression to an EMA."""

  name = "byol"
  has_target = True
  has_predictor = True

  def loss(self, inputs):
    online, target, bs, tbs = online_and_target(self, inputs)
    loss, metrics = byol_loss(online["pred"], target)
    metrics.update(self.monitor(online["proj"][0], online["proj"][1]))
    return loss, base.StepAux(metrics, bs, tbs, inputs.buffers)


class MoCoV3(base.Method):
  """MoCo v3 (Chen et al. 2021): in-batch InfoNCE against momentum keys.

  `method_args.temperature` τ (1.0 for ResNet in the MoCo v3 code; 0.2 in
  solo-learn and for ViT). The loss carries the 2τ factor of the code.
  Use `projector.last_norm="batch_noaffine"` as MoCo v3 does.
  """

  name = "mocov3"
  has_target = True
  has_predictor = True

  def loss(self, inputs):
    online, target, bs, tbs = online_and_target(self, inputs)
    loss, metrics = mocov3_loss(online["pred"], target,
                                temperature=self.args.temperature)
    metrics.update(self.monitor(online["proj"][0], online["proj"][1]))
    return loss, base.StepAux(metrics, bs, tbs, inputs.buffers)


class MSBReg(base.Method):
  """MSBReg (seed 002): multi-view centroid + singular-value + Brownian terms.

  K = `views.large.count` views (K = 2 with λ_s = λ_b = 0 is BYOL). The main
  paper's equations could not be checked; the loss implements the readings of
  METHODS.md §4 behind the flags in `method_args` (centroid_mode,
  renormalize_centroid, singular_mode, center_singular, brownian_per). The
  peak learning rate is multiplied by K, as in the paper.
  """

  name = "msbreg"
  has_target = True
  has_predictor = True
  large_views = None

  @classmethod
  def validate(cls, config):
    errors = super().validate(config)
    if config.views.large.count < 2:
      errors.append("MSBReg needs views.large.count = K ≥ 2 (default 4).")
    if config.method_args.lambda_s < 0 or config.method_args.lambda_b < 0:
      errors.append("method_args.lambda_s and lambda_b must be ≥ 0.")
    return errors

  def lr_multiplier(self) -> float:
    return float(self.config.views.large.count)

  def loss(self, inputs):
    online, target, bs, tbs = online_and_target(self, inputs)
    a = self.args
    loss, metrics = msbreg_loss(
        online["pred"], target, jax.random.fold_in(inputs.rng, 1),
        lambda_s=a.lambda_s, lambda_b=a.lambda_b,
        centroid_mode=a.centroid_mode,
        renormalize_centroid=a.renormalize_centroid,
        singular_mode=a.singular_mode, center_singular=a.center_singular,
        brownian_per=a.brownian_per)
    metrics.update(self.monitor(online["proj"][0], online["proj"][1]))
    return loss, base.StepAux(metrics, bs, tbs, inputs.buffers)
