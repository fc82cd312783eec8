"""The SSL network every method trains, and its builders from the config.

Synopsis::

  dtype = network.compute_dtype(config.compute_dtype)
  net = network.SSLNetwork(
      encoder=network.build_encoder(config.model, dtype),
      projector=network.build_mlp(config.projector, dtype))
  variables = net.init(rng, images, train=True)   # images: [B, H, W, 3]
  out = net.apply(variables, images, train=False)  # {"features", "proj"}
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mdssl_jax.models import fast_conv
from mdssl_jax.models.common import check_choice
from mdssl_jax.models.heads import MLP
from mdssl_jax.models.resnet import resnet
from mdssl_jax.models.vit import vit

ENCODERS = ("resnet", "vit")

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str) -> Any:
  """The jnp dtype of `config.compute_dtype` ("float32" or "bfloat16")."""
  check_choice("compute_dtype", name, sorted(_DTYPES))
  return _DTYPES[name]


class SSLNetwork(nn.Module):
  """Encoder → projector → head → predictor; all but the encoder optional.

  Attributes:
    encoder: module mapping images [B, H, W, 3] to (features [B, F], dict).
    projector: MLP on the features, or None.
    head: extra module on the projection (or on the features when there is
      no projector), called as head(x, train=...): SwAV prototypes, the DINO
      head. Its output is "head".
    predictor: MLP on the projection (online branch only), or None.
  """
  encoder: nn.Module
  projector: nn.Module | None = None
  head: nn.Module | None = None
  predictor: nn.Module | None = None

  def __call__(self, x: jax.Array, train: bool = True,
               use_predictor: bool = True) -> dict[str, jax.Array]:
    """Returns {"features", "proj"?, "head"?, "pred"?}.

    The EMA target branch calls this with use_predictor=False, so it needs
    (and mirrors) every parameter except the predictor's.
    """
    feats, _ = self.encoder(x, train=train)
    return self.heads(feats, train=train, use_predictor=use_predictor)

  def heads(self, feats: jax.Array, train: bool = True,
            use_predictor: bool = True) -> dict[str, jax.Array]:
    """Everything after the encoder, on features [B, F]: __call__'s dict.

    Multi-crop methods encode each resolution group on its own and run the
    heads once on all groups' features (DINO's / SwAV's MultiCropWrapper).
    """
    out = {"features": feats}
    if self.projector is not None:
      out["proj"] = self.projector(feats, train=train)
    if self.head is not None:
      out["head"] = self.head(out.get("proj", feats), train=train)
    if self.predictor is not None and use_predictor:
      out["pred"] = self.predictor(out["proj"], train=train)
    return out

  def features(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Backbone features [B, F] (what the frozen-encoder evaluation uses)."""
    return self.encoder(x, train=train)[0]

  def intermediates(self, x: jax.Array, train: bool = False):
    """(features, dict of block outputs) for CKA and dense heads."""
    return self.encoder(x, train=train)


def build_mlp(cfg: ml_collections.ConfigDict, dtype: Any) -> nn.Module:
  """An MLP head from `config.projector` or `config.predictor`.

  Args:
    cfg: {hidden_dims, out_dim, norm, last_norm, activation}.
    dtype: compute dtype (parameters stay float32).
  """
  return MLP(hidden_dims=tuple(cfg.hidden_dims), out_dim=cfg.out_dim,
             norm=cfg.norm, last_norm=cfg.last_norm,
             activation=cfg.activation, dtype=dtype)


def build_encoder(model_cfg: ml_collections.ConfigDict,
                  dtype: Any) -> nn.Module:
  """The backbone described by `config.model` (`model.name`).

  Args:
    model_cfg: `config.model`. name "resnet" reads {depth,
      width_multiplier, stem, norm, conv_impl, zero_init_residual} (conv_impl
      as in `fast_conv.get_conv`); name "vit" reads model.vit {size,
      patch_size, image_size, pos_embed, pooling, frozen_patch_embed}.
    dtype: compute dtype.

  Returns:
    An unbound encoder mapping images [B, H, W, 3] to (features [B, F],
    dict of block outputs [B, h, w, C]).
  """
  check_choice("model.name", model_cfg.name, ENCODERS)
  if model_cfg.name == "vit":
    v = model_cfg.vit
    return vit(v.size, patch_size=v.patch_size, image_size=v.image_size,
               pos_embed=v.pos_embed, pooling=v.pooling,
               frozen_patch_embed=v.frozen_patch_embed,
               drop_path_rate=v.drop_path_rate, dtype=dtype)
  conv = fast_conv.get_conv(model_cfg.conv_impl)
  return resnet(model_cfg.depth, width_multiplier=model_cfg.width_multiplier,
                stem=model_cfg.stem, dtype=dtype, norm=model_cfg.norm,
                conv=conv, zero_init_residual=model_cfg.zero_init_residual)
