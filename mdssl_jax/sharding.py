"""Device mesh and shardings: the batch is split on a 1-D `data` axis."""

from __future__ import annotations

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

DATA_AXIS = "data"


def make_mesh(num_devices: int = -1) -> Mesh:
  """A 1-D mesh over the first `num_devices` devices (-1: all of them)."""
  devices = jax.devices()
  if num_devices not in (-1, None):
    if not 0 < num_devices <= len(devices):
      raise ValueError(f"mesh_shape={num_devices} but only {len(devices)} "
                       "devices are visible; use -1 for all of them.")
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device of `mesh` holds the whole array (state, metrics)."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`, the rest replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))
