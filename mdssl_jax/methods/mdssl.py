"""MDSSL (seed 000): a hierarchical contrastive loss over a multi-domain batch.

The network and views are SimCLR's (one network, two views encoded in one
pass); the loss weighs repulsion within a domain and across domains
separately (`mdssl_jax.losses.mdssl_loss`, METHODS.md §2).
"""

from __future__ import annotations

import warnings

from mdssl_jax.losses import mdssl_loss
from mdssl_jax.methods import base
from mdssl_jax.methods import simclr


class MDSSL(base.Method):
  """MDSSL (seed 000): hierarchical loss over views, domains and datasets.

  `method_args`:
    temperature: τ of the cosine similarities (0.1 in the paper).
    lambda1: weight of within-domain repulsion, in (0, 1] (equation form:
      SimCLR per domain is λ1 = 1, λ2 = 0).
    lambda2: weight of cross-domain repulsion, ≥ 0 (paper: 0.05–0.15).
    sign_convention: "equation" (default) or "figure". The paper's figures
      write λ1 with the opposite sign (their −0.9 is our 0.9); "figure"
      takes λ1 in that convention and negates it, to replay those sweeps.
  """

  name = "mdssl"

  @classmethod
  def validate(cls, config):
    errors = super().validate(config)
    args = config.method_args
    if args.temperature <= 0:
      errors.append(f"method_args.temperature must be > 0, got "
                    f"{args.temperature}.")
    if args.sign_convention not in ("equation", "figure"):
      errors.append("method_args.sign_convention must be 'equation' or "
                    f"'figure', got {args.sign_convention!r}.")
      return errors
    lam1 = cls.equation_lambda1(args)
    if not 0.0 < lam1 <= 1.0:
      warnings.warn(
          f"MDSSL λ1={lam1} (equation convention) is outside (0, 1]: λ1 ≤ 0 "
          "removes within-domain repulsion and a domain can collapse. If you "
          "copied a value from the paper's figures (SimCLR = −1 there), use "
          "its negation or --config.method_args.sign_convention=figure.",
          stacklevel=2)
    if args.lambda2 < 0:
      warnings.warn(f"MDSSL λ2={args.lambda2} < 0 attracts other domains; "
                    "the paper uses λ2 in (0, 0.2).", stacklevel=2)
    return errors

  @staticmethod
  def equation_lambda1(args) -> float:
    return -args.lambda1 if args.sign_convention == "figure" else args.lambda1

  def loss(self, inputs):
    z1, z2, batch_stats = simclr.two_view_projections(self, inputs)
    loss, metrics = mdssl_loss(
        z1, z2, inputs.batch["domain"], temperature=self.args.temperature,
        lambda1=self.equation_lambda1(self.args), lambda2=self.args.lambda2)
    metrics.update(self.monitor(z1, z2))
    return loss, base.StepAux(metrics, batch_stats, inputs.target_batch_stats,
                              inputs.buffers)
