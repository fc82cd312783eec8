"""Device mesh and shardings: data parallel, or data + FSDP.

Synopsis::

  mesh = sharding.mesh_from_config(config)       # ("data",) or ("data", "fsdp")
  batch = sharding.batch_sharding(mesh)          # rows split over every device
  tree = sharding.state_shardings(abstract_state, mesh, config.mesh)

With ``config.mesh.fsdp == 1`` the mesh is 1-D over ``data`` and the whole
train state is replicated (pure data parallelism). With ``fsdp = k > 1``
the devices form a [n/k, k] mesh; the batch is split over all n devices
and every state leaf (parameters, optimiser moments, the EMA target, which
share the parameters' paths and shapes) is placed by the rules below, in
this one place:

* ``config.mesh.rules``: ``(regex, dim)`` pairs tried in order against the
  leaf's path (``params/backbone/stage4_block1/conv1/kernel``,
  ``opt_state/0/mu/...``); the first match decides: ``dim`` ≥ 0 shards
  that axis over ``fsdp``, -1 picks the largest axis ``fsdp`` divides,
  None replicates.
* otherwise leaves of at least ``config.mesh.fsdp_min_size`` elements are
  sharded on their largest divisible axis, smaller ones (biases,
  BatchNorm, scalars) replicated.

XLA inserts the all-gathers and reduce-scatters; the losses, being pure
functions of global arrays, do not change.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"


def make_mesh(num_devices: int = -1, fsdp: int = 1) -> Mesh:
  """The first `num_devices` devices (-1: all) as a data (× fsdp) mesh.

  Args:
    num_devices: devices used (config.mesh_shape); -1: every device.
    fsdp: size of the ``fsdp`` axis; 1: a 1-D ``data`` mesh.

  Raises:
    ValueError: more devices than visible, or fsdp not dividing them.
  """
  devices = jax.devices()
  if num_devices not in (-1, None):
    if not 0 < num_devices <= len(devices):
      raise ValueError(f"mesh_shape={num_devices} but only {len(devices)} "
                       "devices are visible; use -1 for all of them.")
    devices = devices[:num_devices]
  if fsdp == 1:
    return Mesh(np.asarray(devices), (DATA_AXIS,))
  if fsdp < 1 or len(devices) % fsdp:
    raise ValueError(f"mesh.fsdp={fsdp} must divide the {len(devices)} "
                     "devices of the mesh; set --config.mesh.fsdp to a "
                     "divisor (1: pure data parallel).")
  return Mesh(np.asarray(devices).reshape(-1, fsdp), (DATA_AXIS, FSDP_AXIS))


def mesh_from_config(config: Any) -> Mesh:
  """`make_mesh(config.mesh_shape, config.mesh.fsdp)`."""
  return make_mesh(config.mesh_shape, int(config.mesh.fsdp))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device of `mesh` holds the whole array (metrics, small state)."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over every device of `mesh`."""
  if len(mesh.axis_names) == 1:
    return NamedSharding(mesh, P(mesh.axis_names[0]))
  return NamedSharding(mesh, P(tuple(mesh.axis_names)))


def path_name(path: Sequence[Any]) -> str:
  """A key path as "a/b/0/c" (dict keys, attributes, sequence indices)."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def _largest_divisible(shape: Sequence[int], k: int) -> int | None:
  dims = [d for d in range(len(shape)) if shape[d] % k == 0]
  return max(dims, key=lambda d: (shape[d], d)) if dims else None


def leaf_spec(name: str, shape: Sequence[int], fsdp: int,
              rules: Sequence[tuple[str, int | None]] = (),
              min_size: int = 1) -> P:
  """The PartitionSpec of one state leaf (see the module docstring).

  Args:
    name: the leaf's path (`path_name`).
    shape: its shape.
    fsdp: size of the fsdp axis (1: everything replicated).
    rules: (regex, dim) pairs; first `re.search` match wins.
    min_size: leaves with fewer elements stay replicated (default rule).

  Raises:
    ValueError: a rule names an axis the leaf lacks or fsdp cannot divide.
  """
  if fsdp == 1 or not shape:
    return P()
  dim: int | None = -1 if int(np.prod(shape)) >= min_size else None
  for pattern, rule_dim in rules:
    if re.search(pattern, name):
      dim = rule_dim
      break
  if dim is None:
    return P()
  if dim == -1:
    dim = _largest_divisible(shape, fsdp)
    if dim is None:
      return P()
  elif not 0 <= dim < len(shape) or shape[dim] % fsdp:
    raise ValueError(f"mesh.rules shards {name} {tuple(shape)} on axis "
                     f"{dim}, which mesh.fsdp={fsdp} does not divide; "
                     "use -1 (auto) or None (replicate) for it.")
  spec = [None] * len(shape)
  spec[dim] = FSDP_AXIS
  return P(*spec)


def state_shardings(tree: Any, mesh: Mesh, mesh_cfg: Any) -> Any:
  """A NamedSharding per leaf of `tree` (arrays or ShapeDtypeStructs).

  Args:
    tree: the (abstract) train state or any pytree of arrays.
    mesh: from `make_mesh`.
    mesh_cfg: ``config.mesh`` (``fsdp``, ``fsdp_min_size``, ``rules``).
  """
  fsdp = int(mesh.shape[FSDP_AXIS]) if FSDP_AXIS in mesh.axis_names else 1
  rules = [tuple(r) for r in mesh_cfg.rules]
  min_size = int(mesh_cfg.fsdp_min_size)
  return jax.tree_util.tree_map_with_path(
      lambda path, x: NamedSharding(mesh, leaf_spec(
          path_name(path), x.shape, fsdp, rules, min_size)), tree)


def summary(tree: Any, shardings: Any) -> str:
  """"k of n leaves (x % of the bytes) sharded over fsdp" for the log."""
  leaves = jax.tree.leaves(tree)
  specs = jax.tree.leaves(shardings,
                          is_leaf=lambda s: isinstance(s, NamedSharding))
  sizes = [int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
           for x in leaves]
  sharded = [FSDP_AXIS in tuple(s.spec) for s in specs]
  total = max(sum(sizes), 1)
  part = sum(b for b, s in zip(sizes, sharded) if s)
  return (f"{sum(sharded)} of {len(leaves)} state leaves "
          f"({100 * part / total:.1f} % of {total / 2**20:.1f} MiB) sharded "
          f"over {FSDP_AXIS}")


def process_row_counts(n: int) -> np.ndarray:
  """[process_count] int64: every process's `n`, in process order."""
  return np.asarray(multihost_utils.process_allgather(
      np.asarray([n], np.int64))).reshape(-1)


def allgather_rows(x: np.ndarray) -> np.ndarray:
  """Every process's `x` [n_p, ...] concatenated in process order.

  Rows may differ in number between processes (padded for the exchange).
  One process: `x` itself.
  """
  x = np.asarray(x)
  if jax.process_count() == 1:
    return x
  counts = process_row_counts(len(x))
  padded = np.zeros((int(counts.max()),) + x.shape[1:], x.dtype)
  padded[:len(x)] = x
  every = np.asarray(multihost_utils.process_allgather(padded))
  return np.concatenate([every[p, :c] for p, c in enumerate(counts)])
