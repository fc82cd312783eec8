"""RELICv2 (seed 004; METHODS.md §3): L large + S small views, EMA target.

Online = encoder + projector + predictor; target = EMA of encoder +
projector. Large views go through both networks; small views go through
the online network only (a second forward pass at their own size) and are
never targets. The loss sums every (large → large) pair, including same-view
pairs, and every (small → large) pair, normalised by L·(L+S).

BatchNorm (`model.view_batch_stats`, default "per_view"): one pass per view
in both branches, as BYOL's code that RELICv2 builds on.
"""

from __future__ import annotations

import jax

from mdssl_jax import config_lib
from mdssl_jax.losses import relic_multiview_loss
from mdssl_jax.methods import base


class RELICv2(base.Method):
  """RELICv2 with sub-sampled negatives and the KL invariance term.

  `method_args`: temperature τ (0.2), beta β (invariance scale, 1.0),
  num_negatives n_e (10), kl_mode_large ("reverse": RELIC v1's reverse pair)
  and kl_mode_small ("transpose": small views have no target embedding),
  contrast_scale (multiplier of −log p, 1.0).
  """

  name = "relicv2"
  has_target = True
  has_predictor = True
  large_views = None
  small_views = None

  @classmethod
  def validate(cls, config):
    errors = super().validate(config)
    a = config.method_args
    if config.views.large.count < 1:
      errors.append("RELICv2 needs views.large.count ≥ 1 (default 4).")
    batch = config_lib.global_batch(config)
    if not 0 < a.num_negatives < batch:
      errors.append(f"method_args.num_negatives={a.num_negatives} must be in "
                    f"[1, global batch − 1 = {batch - 1}].")
    if a.temperature <= 0:
      errors.append("method_args.temperature must be > 0.")
    if a.beta < 0:
      errors.append("method_args.beta must be ≥ 0.")
    if a.contrast_scale < 0:
      errors.append("method_args.contrast_scale must be ≥ 0 (1.0 by "
                    "default).")
    if a.kl_mode_large not in ("reverse", "transpose"):
      errors.append(f"method_args.kl_mode_large={a.kl_mode_large!r}; use "
                    "'reverse' (RELIC v1's reverse pair) or 'transpose'.")
    if a.kl_mode_small != "transpose":
      errors.append(f"method_args.kl_mode_small={a.kl_mode_small!r}; only "
                    "'transpose' is possible: small views have no target "
                    "embedding, so their reverse pair does not exist.")
    return errors

  def loss(self, inputs):
    a = self.args
    large = inputs.batch["large"]
    groups = [large] + ([inputs.batch["small"]] if "small" in inputs.batch
                        else [])
    outs, bs = self.encode_multicrop(inputs.params, inputs.batch_stats,
                                     groups)
    online = outs[0]
    online_small = outs[1]["pred"] if len(outs) > 1 else None
    # Only large views enter the target branch.
    target, tbs = self.encode_views(inputs.target_params,
                                    inputs.target_batch_stats, large,
                                    target=True)
    target_large = jax.lax.stop_gradient(target["proj"])
    loss, metrics = relic_multiview_loss(
        online["pred"], online_small, target_large,
        jax.random.fold_in(inputs.rng, 2), temperature=a.temperature,
        beta=a.beta, num_negatives=a.num_negatives,
        kl_mode_large=a.kl_mode_large, kl_mode_small=a.kl_mode_small,
        contrast_scale=a.contrast_scale)
    metrics.update(self.monitor(online["proj"][0], online["proj"][-1]))
    return loss, base.StepAux(metrics, bs, tbs, inputs.buffers)
