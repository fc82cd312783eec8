"""Frozen encoders for the battery: trained workdirs and a random baseline.

Synopsis::

  encoders = encoders.load_encoders(["/tmp/run1", "/tmp/run2"])
  # [random_init, run1, run2]: the baseline has run1's architecture
  pooled, levels = encoders.encode(encoders[1], images, batch_size=100,
                                   with_levels=True)

Encoders run in eval mode (BatchNorm running averages) and are never
updated: the heads train on their outputs, computed once per task.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mdssl_jax import evaluate
from mdssl_jax import train
from mdssl_jax.models import network as network_lib

BASELINE = "random_init"
_STAGE = re.compile(r"stage\d+")
_BLOCK = re.compile(r"stage1_block(\d+)")
_MAX_VIT_LEVELS = 4  # Token grids sampled from a ViT's blocks.


@dataclasses.dataclass
class Encoder:
  """A frozen encoder and how its inputs are normalised.

  Attributes:
    name: "random_init" or the workdir's base name.
    network: the method's network (its encoder is used).
    params, batch_stats: the network's variables.
    config: the workdir's training config.
  """
  name: str
  network: network_lib.SSLNetwork
  params: Any
  batch_stats: Any
  config: ml_collections.ConfigDict

  def normalise(self, images: np.ndarray) -> np.ndarray:
    """[..., 3] RGB in [0, 1] -> the encoder's input space (data.mean/std)."""
    mean = np.asarray(self.config.data.mean, np.float32)
    std = np.asarray(self.config.data.std, np.float32)
    return ((images - mean) / std).astype(np.float32)


def select_levels(names: list[str]) -> list[str]:
  """The block outputs the dense heads read, fine to coarse.

  ResNet: "stage1", ..., "stageN" (the stem output has stage1's
  resolution, so it adds cost and little else). ViT (all one resolution):
  "stem" and up to four evenly spaced "stage1_block{j}" grids.

  Args:
    names: keys of the encoder's intermediates dict.

  Returns:
    The selected keys, in order.
  """
  stages = sorted((n for n in names if _STAGE.fullmatch(n)),
                  key=lambda n: int(n[5:]))
  if stages:
    return stages
  blocks = sorted((n for n in names if _BLOCK.fullmatch(n)),
                  key=lambda n: int(_BLOCK.fullmatch(n).group(1)))
  if not blocks:
    raise ValueError(f"the encoder's intermediates {sorted(names)} have "
                     "neither ResNet stages nor ViT block grids.")
  picks = np.linspace(0, len(blocks) - 1,
                      min(_MAX_VIT_LEVELS, len(blocks))).round().astype(int)
  return ["stem"] + [blocks[i] for i in sorted(set(picks))]


_FORWARD: dict[Any, Any] = {}


def _forward(network: network_lib.SSLNetwork):
  """The jitted eval-mode forward of `network` (one per architecture)."""
  if network not in _FORWARD:
    def forward(params, batch_stats, images):
      pooled, inter = network.apply(
          {"params": params, "batch_stats": batch_stats}, images,
          train=False, method=network_lib.SSLNetwork.intermediates)
      levels = [inter[n].astype(jnp.float32)
                for n in select_levels(list(inter))]
      return pooled, levels
    _FORWARD[network] = jax.jit(forward)
  return _FORWARD[network]


def encode(encoder: Encoder, images: np.ndarray, *, batch_size: int,
           with_levels: bool) -> tuple[np.ndarray, list[np.ndarray] | None]:
  """Pooled features and (optionally) block outputs of `images`.

  Args:
    encoder: the frozen encoder.
    images: [n, S, S, 3] float32 in the encoder's input space.
    batch_size: images per call; the last batch is zero-padded.
    with_levels: also return the block outputs (`select_levels`).

  Returns:
    (pooled [n, F] float32, [n, h_i, w_i, C_i] float32 arrays fine to
    coarse, or None).
  """
  forward = _forward(encoder.network)
  n = images.shape[0]
  batch = min(batch_size, n)
  pooled, levels = [], []
  for start in range(0, n, batch):
    chunk = images[start:start + batch]
    rows = chunk.shape[0]
    if rows < batch:
      pad = np.zeros((batch - rows,) + chunk.shape[1:], np.float32)
      chunk = np.concatenate([chunk, pad])
    p, lv = forward(encoder.params, encoder.batch_stats, chunk)
    pooled.append(np.asarray(p)[:rows])
    if with_levels:
      levels.append([np.asarray(x)[:rows] for x in lv])
  if not with_levels:
    return np.concatenate(pooled), None
  return np.concatenate(pooled), [np.concatenate(parts)
                                  for parts in zip(*levels)]


def _same_architecture(a: ml_collections.ConfigDict,
                       b: ml_collections.ConfigDict) -> bool:
  return (a.model.to_dict() == b.model.to_dict()
          and tuple(a.data.mean) == tuple(b.data.mean)
          and tuple(a.data.std) == tuple(b.data.std))


def load_encoders(workdirs: list[str], step: int | None = None
                  ) -> list[Encoder]:
  """The random-initialisation baseline and every workdir's encoder.

  The baseline is `train.create_state` of the first workdir's config (its
  architecture and seed, no training).

  Args:
    workdirs: trained workdirs (`python -m mdssl_jax.main`), all of one
      architecture (config.model) and input normalisation.
    step: checkpoint step; None: each workdir's latest.

  Returns:
    [baseline, encoder of workdirs[0], ...].

  Raises:
    ValueError: no workdirs, a repeated name, or architectures differ.
    FileNotFoundError: a workdir has no config.json.
  """
  if not workdirs:
    raise ValueError("give at least one workdir: --workdirs=RUN1,RUN2.")
  names = [os.path.basename(os.path.normpath(w)) for w in workdirs]
  if len(set(names + [BASELINE])) != len(names) + 1:
    raise ValueError(f"workdir names {names} repeat (or use {BASELINE!r}); "
                     "results are keyed by name, so rename the workdirs.")
  configs = [evaluate.load_config(w) for w in workdirs]
  for name, config in zip(names[1:], configs[1:]):
    if not _same_architecture(configs[0], config):
      raise ValueError(
          f"{name} has another architecture or input normalisation than "
          f"{names[0]}; the random baseline and the normalised scores need "
          "one architecture: run the battery once per architecture.")
  out = []
  for i, (name, workdir, config) in enumerate(zip(names, workdirs, configs)):
    setup, state, _ = train.load_for_eval(config, workdir, step)
    if i == 0:
      init = train.create_state(setup, config)
      out.append(Encoder(BASELINE, setup.method.network, init.params,
                         init.batch_stats, config))
    out.append(Encoder(name, setup.method.network, state.params,
                       state.batch_stats, config))
  return out
