"""The method interface every SSL method implements.

A method declares
  * its networks: an online :class:`~mdssl_jax.models.network.SSLNetwork`
    (encoder, projector, optional predictor and extra heads) and, when
    ``has_target`` is set, an EMA target made of the online encoder and
    projector;
  * its views (how many large/small crops it needs, checked at start-up);
  * its pure loss, called from :meth:`Method.loss` on the network outputs;
  * its per-step state updates: the EMA is applied by the shared trainer,
    anything else (DINO centre, SwAV queue) lives in ``buffers`` and is
    returned updated by :meth:`Method.loss`.

The trainer (:mod:`mdssl_jax.train`) is the same for every method. Adding a
method is one module under ``mdssl_jax/methods/`` registered in
``mdssl_jax/methods/__init__.py``, its ``method_args`` defaults in
``config_lib.METHOD_ARGS``, one loss in ``mdssl_jax/losses/`` and one config
(see README, "Add a method").
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import einops
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mdssl_jax import config_lib
from mdssl_jax.losses import monitor as monitor_lib
from mdssl_jax.models import network as network_lib

PyTree = Any


@dataclasses.dataclass
class StepInputs:
  """Everything a method's loss sees in one training step."""
  params: PyTree
  batch_stats: PyTree
  target_params: PyTree
  target_batch_stats: PyTree
  buffers: dict[str, jax.Array]
  batch: dict[str, jax.Array]
  rng: jax.Array
  step: jax.Array


@flax.struct.dataclass
class StepAux:
  """What a method's loss returns besides the scalar loss."""
  metrics: dict[str, jax.Array]
  batch_stats: PyTree
  target_batch_stats: PyTree
  buffers: dict[str, jax.Array]


class Method:
  """Base class: a named SSL method over the shared trainer."""

  name: ClassVar[str] = ""
  has_target: ClassVar[bool] = False
  has_predictor: ClassVar[bool] = False
  # Allowed (large, small) view counts; None means any.
  large_views: ClassVar[tuple[int, ...] | None] = (2,)
  small_views: ClassVar[tuple[int, ...] | None] = (0,)

  def __init__(self, config: ml_collections.ConfigDict, *, total_steps: int):
    self.config = config
    self.args = config.method_args
    self.total_steps = total_steps
    self.dtype = network_lib.compute_dtype(config.compute_dtype)
    self.network = self.build_network()

  # ---- declarations ---------------------------------------------------------

  @classmethod
  def default_args(cls) -> ml_collections.ConfigDict:
    """Defaults of `config.method_args` (declared in config_lib.METHOD_ARGS)."""
    return config_lib.method_args(cls.name)

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> list[str]:
    """Cheap start-up checks; returns a list of error messages."""
    errors = []
    large = config.views.large.count
    small = config.views.small.count
    if cls.large_views is not None and large not in cls.large_views:
      errors.append(f"method {cls.name!r} needs views.large.count in "
                    f"{cls.large_views}, got {large}: set "
                    f"--config.views.large.count={cls.large_views[0]}.")
    if cls.has_predictor and (config.predictor.out_dim
                              != config.projector.out_dim):
      errors.append(
          f"method {cls.name!r} regresses predictions onto target "
          f"projections: predictor.out_dim={config.predictor.out_dim} must "
          f"equal projector.out_dim={config.projector.out_dim}.")
    if cls.small_views is not None and small not in cls.small_views:
      errors.append(f"method {cls.name!r} supports views.small.count in "
                    f"{cls.small_views}, got {small}.")
    return errors

  def lr_multiplier(self) -> float:
    """Method-specific factor on the peak learning rate."""
    return 1.0

  def build_network(self) -> network_lib.SSLNetwork:
    """Encoder, projector, optional head and (has_predictor) predictor."""
    cfg = self.config
    predictor = (network_lib.build_mlp(cfg.predictor, self.dtype)
                 if self.has_predictor else None)
    return network_lib.SSLNetwork(
        encoder=network_lib.build_encoder(cfg.model, self.dtype),
        projector=network_lib.build_mlp(cfg.projector, self.dtype),
        head=self.build_head(), predictor=predictor)

  def build_head(self) -> nn.Module | None:
    """An extra head after the projector (prototypes, DINO head); None."""
    return None

  def transform_grads(self, grads: PyTree, step: jax.Array) -> PyTree:
    """Hook to edit gradients before the optimiser (e.g. freeze a layer)."""
    del step
    return grads

  def init_buffers(self) -> dict[str, jax.Array]:
    """Non-trainable per-step state (e.g. DINO centre); {} by default."""
    return {}

  # ---- shared helpers -------------------------------------------------------

  def init(self, rng: jax.Array, images: jax.Array) -> tuple[PyTree, PyTree]:
    """Returns (params, batch_stats) for a sample batch of images."""
    variables = self.network.init(rng, images, train=True)
    return variables["params"], variables.get("batch_stats", {})

  def target_subset(self, tree: PyTree) -> PyTree:
    """The part of an online tree that the EMA target mirrors (no predictor)."""
    return {k: v for k, v in tree.items() if k != "predictor"}

  def forward(self, params, batch_stats, images, *, train: bool = True,
              target: bool = False):
    """Applies the network; `target=True` skips the predictor.

    BatchNorm runs in training mode (batch statistics) for both branches,
    as in BYOL; each branch updates its own running averages.

    Returns:
      (outputs dict, updated batch_stats).
    """
    variables = {"params": params, "batch_stats": batch_stats}
    kw = dict(train=train, use_predictor=not target)
    if not train:
      return self.network.apply(variables, images, **kw), batch_stats
    out, updates = self.network.apply(variables, images,
                                      mutable=["batch_stats"], **kw)
    return out, updates.get("batch_stats", batch_stats)

  def encode_views(self, params, batch_stats, views: jax.Array, *,
                   target: bool = False):
    """Encodes [B, V, H, W, C] views in one pass.

    Returns:
      (dict of outputs reshaped to [V, B, ...], updated batch_stats).
    """
    num_views = views.shape[1]
    out, batch_stats = self.forward(params, batch_stats,
                                    self.stack_views(views), target=target)
    return ({k: self.split_views(v, num_views) for k, v in out.items()},
            batch_stats)

  @staticmethod
  def zero_grads_where(grads: PyTree, path_prefix: tuple[str, ...],
                       condition: jax.Array) -> PyTree:
    """Zeroes the gradient subtree at `path_prefix` when `condition` holds."""
    def visit(path, g):
      keys = tuple(getattr(k, "key", str(k)) for k in path)
      if keys[:len(path_prefix)] == path_prefix:
        return jnp.where(condition, jnp.zeros_like(g), g)
      return g
    return jax.tree_util.tree_map_with_path(visit, grads)

  @staticmethod
  def stack_views(views: jax.Array) -> jax.Array:
    """[B, V, H, W, C] → view-major rows [V·B, H, W, C] (row v·B + i)."""
    return einops.rearrange(views, "b v h w c -> (v b) h w c")

  @staticmethod
  def split_views(rows: jax.Array, num_views: int) -> jax.Array:
    """[V·B, ...] → [V, B, ...]."""
    return rows.reshape((num_views, -1) + rows.shape[1:])

  @staticmethod
  def monitor(z: jax.Array, z2: jax.Array | None = None) -> dict:
    """Collapse diagnostics on projections, prefixed "monitor/"."""
    stats = monitor_lib.collapse_monitor(jax.lax.stop_gradient(z),
                                         None if z2 is None
                                         else jax.lax.stop_gradient(z2))
    return {f"monitor/{k}": v for k, v in stats.items()}

  def features(self, params, batch_stats, images) -> jax.Array:
    """Frozen backbone features [B, F] in eval mode (projector discarded)."""
    return self.network.apply({"params": params, "batch_stats": batch_stats},
                              images, train=False,
                              method=network_lib.SSLNetwork.features)

  # ---- the loss -------------------------------------------------------------

  def loss(self, inputs: StepInputs) -> tuple[jax.Array, StepAux]:
    """Forward passes + pure loss; must be differentiable in params."""
    raise NotImplementedError
