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

import contextlib
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
# Separates the stochastic-depth keys from the step's other randomness.
_DROPOUT_TAG = 0xD809


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
    # Online features offered during `loss_with_features` (None: not asked).
    self._offered: list[jax.Array] | None = None
    # Stochastic-depth key of the step being traced (`dropout_from`).
    self._dropout_key: jax.Array | None = None
    self._dropout_passes = 0

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
    mode = config.model.view_batch_stats
    if mode not in config_lib.VIEW_BATCH_STATS_MODES:
      errors.append(f"model.view_batch_stats={mode!r}; use one of "
                    f"{config_lib.VIEW_BATCH_STATS_MODES} (default for "
                    f"{cls.name!r}: "
                    f"{config_lib.VIEW_BATCH_STATS.get(cls.name, 'joint')!r}).")
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
    # The params draw from `rng` alone, so stochastic depth (whose init
    # pass needs a "dropout" key) leaves the initialisation unchanged.
    rngs = rng
    if self.uses_dropout():
      rngs = {"params": rng, "dropout": jax.random.fold_in(rng, _DROPOUT_TAG)}
    variables = self.network.init(rngs, images, train=True)
    return variables["params"], variables.get("batch_stats", {})

  def target_subset(self, tree: PyTree) -> PyTree:
    """The part of an online tree that the EMA target mirrors (no predictor)."""
    return {k: v for k, v in tree.items() if k != "predictor"}

  def forward(self, params, batch_stats, inputs, *, train: bool = True,
              target: bool = False, stage: str = "all"):
    """Applies the network; `target=True` skips the predictor.

    BatchNorm runs in training mode (batch statistics) for both branches,
    as in BYOL; each branch updates its own running averages.

    Args:
      params, batch_stats: the branch's variables.
      inputs: images [B, H, W, C], or features [B, F] for stage "heads".
      train: BatchNorm mode.
      target: the EMA target branch (no predictor).
      stage: "all" (encoder and heads), "encoder" (outputs {"features"})
        or "heads" (everything after the encoder, on features).

    Returns:
      (outputs dict, updated batch_stats).
    """
    variables = {"params": params, "batch_stats": batch_stats}
    kw = dict(train=train)
    if train and not target and self._dropout_key is not None:
      # A fresh key per online pass traced (stochastic depth).
      self._dropout_passes += 1
      kw["rngs"] = {"dropout": jax.random.fold_in(self._dropout_key,
                                                  self._dropout_passes)}
    if stage == "encoder":
      kw["method"] = network_lib.SSLNetwork.features
    else:
      kw["use_predictor"] = not target
      if stage == "heads":
        kw["method"] = network_lib.SSLNetwork.heads
    if not train:
      out = self.network.apply(variables, inputs, **kw)
    else:
      out, updates = self.network.apply(variables, inputs,
                                        mutable=["batch_stats"], **kw)
      batch_stats = updates.get("batch_stats", batch_stats)
    return ({"features": out} if stage == "encoder" else out), batch_stats

  def encode_views(self, params, batch_stats, views: jax.Array, *,
                   target: bool = False):
    """Encodes one resolution group of [B, V, H, W, C] views.

    BatchNorm batch statistics follow `config.model.view_batch_stats`:
      * "joint" and "per_group": one pass over the V·B rows, statistics
        joint over the views (SimCLR's TF code concatenates the views; DINO
        and SwAV pass each resolution group to the backbone at once). See
        `encode_multicrop` for how the two differ across groups.
      * "per_view": one pass per view (solo-learn's per-crop forward,
        deepmind BYOL's separate calls on view1 and view2): statistics over
        the B rows of one view.

    The EMA target branch calls this too (`target=True`), so it follows the
    same mode. Running averages are updated once per pass, sequentially
    (view 1's pass, then view 2's, ...), as PyTorch's and Haiku's BatchNorm
    do when the network is called once per view.

    Returns:
      (dict of outputs reshaped to [V, B, ...], updated batch_stats).
    """
    if self.config.model.view_batch_stats == "per_view":
      out, batch_stats = self.encode_groups(
          params, batch_stats,
          einops.rearrange(views, "b v h w c -> v b h w c"), target=target)
    else:
      out, batch_stats = self.forward(params, batch_stats,
                                      self.stack_views(views), target=target)
      out = {k: self.split_views(v, views.shape[1]) for k, v in out.items()}
    if not target:
      self.offer_features(out["features"][0])
    return out, batch_stats

  def encode_multicrop(self, params, batch_stats, groups: list[jax.Array],
                       *, target: bool = False):
    """Encodes resolution groups (large views, small views, ...).

    Each group is [B, V_g, H_g, W_g, C]. Under "per_group" this is DINO's
    and SwAV's MultiCropWrapper: the encoder runs once per resolution group
    (BatchNorm statistics over that group's V_g·B rows) and the heads
    (projector, prototypes, DINO head) once over every group's features,
    so head BatchNorm statistics are joint over all crops. Under "joint"
    and "per_view" each group goes through `encode_views` on its own (the
    whole network once per group, or once per view).

    Returns:
      (list of per-group output dicts [V_g, B, ...], updated batch_stats).
    """
    if self.config.model.view_batch_stats != "per_group" or len(groups) < 2:
      outs = []
      for views in groups:
        out, batch_stats = self.encode_views(params, batch_stats, views,
                                             target=target)
        outs.append(out)
      return outs, batch_stats
    feats = []
    for views in groups:
      out, batch_stats = self.forward(params, batch_stats,
                                      self.stack_views(views), target=target,
                                      stage="encoder")
      feats.append(out["features"])
    out, batch_stats = self.forward(params, batch_stats,
                                    jnp.concatenate(feats), target=target,
                                    stage="heads")
    start, outs = 0, []
    for views, f in zip(groups, feats):
      rows = slice(start, start + f.shape[0])
      outs.append({k: self.split_views(v[rows], views.shape[1])
                   for k, v in out.items()})
      start += f.shape[0]
    if not target:
      self.offer_features(outs[0]["features"][0])
    return outs, batch_stats

  def encode_groups(self, params, batch_stats, groups: jax.Array, *,
                    target: bool = False, remat: bool = False):
    """Encodes [G, n, H, W, C] images in G passes (BN statistics per group).

    The passes run in group order and BatchNorm running averages are
    updated once per pass, sequentially. Values and gradients do not depend
    on `remat`:
      * remat=False: an unrolled loop of G passes (every group's
        activations are kept for the backward pass, as in one big pass).
      * remat=True: a `lax.scan` whose body (one pass) runs under
        `jax.checkpoint`: only each group's inputs are kept and the backward
        pass recomputes one group at a time, so peak activation memory is
        about one group's. The scan is what enforces that order: unrolled,
        XLA schedules every recomputation at once and saves nothing. (On
        XLA:CPU a scanned ResNet pass runs ~20x slower than unrolled.)

    Returns:
      (dict of outputs [G, n, ...], updated batch_stats).
    """
    def one_pass(stats, images):
      out, stats = self.forward(params, stats, images, target=target)
      return stats, out
    if remat:
      batch_stats, out = jax.lax.scan(jax.checkpoint(one_pass), batch_stats,
                                      groups)
      return out, batch_stats
    outs = []
    for images in groups:
      batch_stats, out = one_pass(batch_stats, images)
      outs.append(out)
    return jax.tree.map(lambda *x: jnp.stack(x), *outs), batch_stats

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

  def offer_features(self, features: jax.Array) -> None:
    """Records online backbone features [B, F] of view 1 for the monitors.

    `encode_views` and `encode_multicrop` call it on their online branch;
    a method that encodes otherwise calls it itself. Only the first offer
    of a `loss_with_features` call is kept (view 1 of the large views).
    """
    if self._offered is not None:
      self._offered.append(features)

  def uses_dropout(self) -> bool:
    """Whether training needs a "dropout" rng (ViT stochastic depth)."""
    model = self.config.model
    return model.name == "vit" and model.vit.drop_path_rate > 0

  @contextlib.contextmanager
  def dropout_from(self, rng: jax.Array):
    """While tracing a step: online training passes draw stochastic-depth
    masks from keys folded from `rng` (one per pass; none when the model
    does not use dropout, so other programs are unchanged)."""
    if not self.uses_dropout():
      yield
      return
    self._dropout_key = jax.random.fold_in(rng, _DROPOUT_TAG)
    self._dropout_passes = 0
    try:
      yield
    finally:
      self._dropout_key = None

  def loss_with_features(self, inputs: StepInputs
                         ) -> tuple[jax.Array, tuple[StepAux, jax.Array]]:
    """`loss`, plus the backbone features [B, F] it computed for view 1.

    The features are the online encoder's, in the batch's row order, under
    stop-gradient (the online monitors' input: no extra encoder pass).

    Raises:
      ValueError: the method's loss offered no features.
    """
    self._offered = []
    try:
      loss, aux = self.loss(inputs)
      offered = self._offered
    finally:
      self._offered = None
    if not offered:
      raise ValueError(
          f"method {self.name!r} computed no online features for the "
          "monitors: its loss must encode through encode_views / "
          "encode_multicrop or call offer_features.")
    features = jax.lax.stop_gradient(offered[0]).astype(jnp.float32)
    return loss, (aux, features)
