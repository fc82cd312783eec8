"""Device mesh and shardings: the batch is split on a 1-D `data` axis."""

from __future__ import annotations

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections
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
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`, the rest replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))


def global_batch_size(config: ml_collections.ConfigDict) -> int:
  return len(config.data.domains) * config.data.per_domain_batch


def check_batch_divisible(config: ml_collections.ConfigDict,
                          num_devices: int | Mesh) -> None:
  """Raises ValueError unless the global batch splits evenly over devices."""
  n = num_devices.size if isinstance(num_devices, Mesh) else num_devices
  d = len(config.data.domains)
  per = config.data.per_domain_batch
  if (d * per) % n:
    step = n // np.gcd(n, d)
    raise ValueError(
        f"The global batch {d * per} ({d} domains × data.per_domain_batch="
        f"{per}) is not divisible by the {n} devices. Set "
        f"--config.data.per_domain_batch to a multiple of {step} (e.g. "
        f"{max(step, per - per % step)}) or limit devices with "
        "--config.mesh_shape.")
