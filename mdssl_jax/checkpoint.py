"""Orbax checkpoints of the train state, with keep-last-k and safe resume.

The data pipeline is a pure function of (seed, step), and the train state
carries the step and the base RNG key, so restoring the state restores the
data position too: a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be restored."""


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` for one workdir.

  Checkpoints live in `<workdir>/checkpoints/<step>/`. Saving is atomic
  (Orbax writes to a temporary directory and renames), so a crash during a
  save never damages an earlier checkpoint.
  """

  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True,
        enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Saves `state` (a pytree of arrays) and JSON metadata at `step`."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

  def restore(self, abstract_state: Any, step: int | None = None
              ) -> tuple[Any, dict[str, Any]]:
    """Restores (state, meta) at `step` (default: latest).

    Args:
      abstract_state: pytree of `jax.ShapeDtypeStruct` (with shardings)
        describing the state to restore into.
      step: which checkpoint; None for the latest.

    Raises:
      CheckpointError: naming the directory and how to recover when the
        checkpoint is unreadable or does not match the current config.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"No checkpoint in {self.directory}.")
    path = os.path.join(self.directory, str(step))
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state),
          meta=ocp.args.JsonRestore()))
    except Exception as e:  # Orbax raises many types; re-raise one clear one.
      others = [s for s in self.all_steps() if s != step]
      hint = (f" Earlier checkpoints: {others}; move {path} aside to resume "
              "from the newest of them." if others else "")
      raise CheckpointError(
          f"Cannot restore checkpoint {path}: {type(e).__name__}: {e}. "
          "It is corrupt or was written by a different config (model, "
          "method or optimizer changed). Nothing was deleted." + hint
          + " To start afresh, use a new --workdir.") from e
    logging.info("Restored checkpoint %s", path)
    return restored["state"], restored["meta"]

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (keeping shardings) for a concrete pytree."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                     sharding=getattr(x, "sharding", None)),
      tree)
