"""JAX's multi-controller runtime: one process per host, one program.

Synopsis::

  distributed.initialize(auto=True)                    # TPU pod, SLURM, MPI
  distributed.initialize(coordinator_address="10.0.0.1:1234",
                         num_processes=4, process_id=rank)

Every process runs the same command. After `jax.distributed.initialize`,
``jax.devices()`` lists every host's devices and the mesh spans them;
each process reads only its input shards (``data.input_shards``), feeds
its rows of the global batch (``jax.make_array_from_process_local_data``),
writes its part of each Orbax checkpoint, and process 0 alone writes the
workdir's logs, metrics and results.
"""

from __future__ import annotations

from typing import Sequence

from absl import logging
import jax


def initialize(*, auto: bool = False, coordinator_address: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None,
               local_device_ids: Sequence[int | str] | None = None) -> bool:
  """Starts `jax.distributed` when asked to; returns whether it did.

  Args:
    auto: initialise with whatever the cluster environment provides
      (Cloud TPU, SLURM, Open MPI auto-detection).
    coordinator_address: "host:port" of process 0; with num_processes
      and process_id, an explicit start (implies `auto`'s initialisation).
    num_processes: number of processes.
    process_id: this process's index.
    local_device_ids: this process's devices (None: all visible).

  Raises:
    ValueError: an explicit start missing one of its three values, or a
      process id outside [0, num_processes).
  """
  explicit = (coordinator_address, num_processes, process_id)
  if not auto and all(v is None for v in explicit):
    return False
  if any(v is not None for v in explicit):
    missing = [name for name, v in zip(
        ("--coordinator_address", "--num_processes", "--process_id"),
        explicit) if v is None]
    if missing:
      raise ValueError(f"An explicit multi-host start needs {missing} too "
                       "(or use --distributed alone on TPU pods / SLURM).")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"--process_id={process_id} must lie in [0, "
                       f"--num_processes={num_processes}).")
  kwargs = dict(coordinator_address=coordinator_address,
                num_processes=num_processes, process_id=process_id)
  if local_device_ids:
    kwargs["local_device_ids"] = [int(i) for i in local_device_ids]
  jax.distributed.initialize(**kwargs)
  logging.info("jax.distributed: process %d of %d, %d local / %d global "
               "devices.", jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  return True
