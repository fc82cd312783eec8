"""MDSSL (seed 000): a hierarchical contrastive loss over a multi-domain batch.

The network and views are SimCLR's (one network, two views); the loss weighs
repulsion within a domain and across domains separately
(`mdssl_jax.losses.mdssl_loss`, METHODS.md §2). BatchNorm statistics are
taken over the whole batch or per domain, and the domains can be encoded in
separate checkpointed passes to save memory (METHODS.md §2.6, paper A.5).
"""

from __future__ import annotations

import warnings

import einops
import jax
import jax.numpy as jnp

from mdssl_jax import config_lib
from mdssl_jax.losses import mdssl_loss
from mdssl_jax.losses.common import l2_normalize
from mdssl_jax.methods import base
from mdssl_jax.methods import simclr


BN_GROUPS = ("auto", "global", "per_domain")


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
    bn_groups: "global" (BatchNorm statistics over the whole batch, as
      `model.view_batch_stats` groups the views), "per_domain" (over each
      domain's rows only: its 2N rows under "joint" views, its N rows per
      view under "per_view") or "auto" (per_domain when
      encode_domains_separately, else global).
    encode_domains_separately: one forward pass per domain under
      `jax.checkpoint` (paper A.5's large-D route): only one domain's
      activations are live at a time. Needs per_domain BN, so that
      switching memory modes does not change the model; the loss, its
      gradients and the running averages equal the one-batch route's under
      per_domain BN.

  Running averages under per_domain BN are updated once per domain pass, in
  domain order (then per view under "per_view"), as sequential forward
  passes of the reference do.

  Without domain labels (`config.data.domain_labels` "kmeans" or
  "robust_kmeans", METHODS §2.8) the batch's domains are pseudo-domains:
  for the first `pseudo_domains.warmup_steps` steps the loss is plain
  SimCLR on mixed batches (λ1 = 1, λ2 = 0, one domain), and rows the
  robust filter ignored under `pseudo_domains.ignored="mask"` (batch
  "valid" = 0) are left out of every term.
  """

  name = "mdssl"

  @classmethod
  def validate(cls, config):
    errors = super().validate(config)
    args = config.method_args
    if args.temperature <= 0:
      errors.append(f"method_args.temperature must be > 0, got "
                    f"{args.temperature}.")
    if args.bn_groups not in BN_GROUPS:
      errors.append(f"method_args.bn_groups={args.bn_groups!r}; use one of "
                    f"{BN_GROUPS}.")
    elif args.encode_domains_separately and args.bn_groups == "global":
      errors.append(
          "method_args.encode_domains_separately=True needs per-domain "
          "BatchNorm statistics (one pass per domain cannot see the whole "
          "batch): set --config.method_args.bn_groups=per_domain (or auto).")
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

  def bn_per_domain(self) -> bool:
    """Whether BatchNorm statistics are per domain ("auto" resolved)."""
    groups = self.args.bn_groups
    if groups == "auto":
      return self.args.encode_domains_separately
    return groups == "per_domain"

  def projections(self, inputs: base.StepInputs):
    """Both views' projections under `bn_groups`.

    Returns:
      (z1 [D·N, d], z2 [D·N, d], updated batch_stats), rows as in the
      batch.
    """
    if not self.bn_per_domain():
      return simclr.two_view_projections(self, inputs)
    num_domains = config_lib.batch_domains(self.config)
    shards = config_lib.input_shards(self.config)
    # Rows are (input shard, domain, n) (`data.input_shards`; one shard:
    # domain-major). One group per domain (its 2N rows, view-major) or per
    # (domain, view).
    per_view = self.config.model.view_batch_stats == "per_view"
    groups = einops.rearrange(
        inputs.batch["large"],
        "(s d n) v h w c -> " + ("(d v) (s n)" if per_view else "d (v s n)")
        + " h w c", d=num_domains, s=shards)
    out, batch_stats = self.encode_groups(
        inputs.params, inputs.batch_stats, groups,
        remat=self.args.encode_domains_separately)
    # Either grouping lists domain d's rows as [(v s n)], view-major.
    def by_view(x):  # [G, n, ...] in domain groups -> [2, D·N, ...].
      x = x.reshape((num_domains, -1) + x.shape[2:])
      return einops.rearrange(x, "d (v s n) ... -> v (s d n) ...", v=2,
                              s=shards)
    z = by_view(out["proj"])
    self.offer_features(by_view(out["features"])[0])
    return z[0], z[1], batch_stats

  def lambdas(self, step: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(λ1, λ2) at `step`: (1, 0) during the pseudo-domain warm-up."""
    lam1 = jnp.float32(self.equation_lambda1(self.args))
    lam2 = jnp.float32(self.args.lambda2)
    if not config_lib.uses_pseudo_domains(self.config):
      return lam1, lam2
    warm = step < self.config.pseudo_domains.warmup_steps
    return jnp.where(warm, 1.0, lam1), jnp.where(warm, 0.0, lam2)

  def cluster_embeddings(self, params, batch_stats, images) -> jax.Array:
    """What pseudo-domain k-means clusters, in eval mode: [B, d] ℓ2-unit
    projector outputs z ("projection") or backbone features ("features",
    `config.pseudo_domains.embedding`)."""
    out = self.network.apply({"params": params, "batch_stats": batch_stats},
                             images, train=False)
    key = ("proj" if self.config.pseudo_domains.embedding == "projection"
           else "features")
    return l2_normalize(out[key].astype(jnp.float32))

  def loss(self, inputs):
    z1, z2, batch_stats = self.projections(inputs)
    lam1, lam2 = self.lambdas(inputs.step)
    loss, metrics = mdssl_loss(
        z1, z2, inputs.batch["domain"], temperature=self.args.temperature,
        lambda1=lam1, lambda2=lam2, valid=inputs.batch.get("valid"))
    metrics.update(self.monitor(z1, z2))
    return loss, base.StepAux(metrics, batch_stats, inputs.target_batch_stats,
                              inputs.buffers)
