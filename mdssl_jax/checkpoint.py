"""Orbax checkpoints of the train state, with keep-last-k and safe resume.

The data pipeline is a pure function of (seed, step), and the train state
carries the step and the base RNG key, so restoring the state restores the
data position too: a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import logging as pylogging
import os
from collections.abc import Sequence
from typing import Any

from absl import logging
from etils import epath
import jax
import orbax.checkpoint as ocp
import tensorstore as ts


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be restored."""


class _DropThreadTracebacks(pylogging.Filter):
  """Drops Orbax's log of an exception in a save thread.

  Orbax logs it with a traceback per thread, then re-raises the same
  exception in the caller, where it gets one clear message (e.g. "disk
  full"); without this the user first sees several copies of it.
  """

  def filter(self, record: pylogging.LogRecord) -> bool:
    return "_SignalingThread.run() raised" not in str(record.msg)


_THREAD_FILTER = _DropThreadTracebacks()


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` for one workdir.

  Checkpoints live in `<workdir>/checkpoints/<step>/`. Saving is atomic
  (Orbax writes to a temporary directory and renames), so a crash during a
  save never damages an earlier checkpoint.
  """

  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    absl_logger = pylogging.getLogger("absl")
    if _THREAD_FILTER not in absl_logger.filters:
      absl_logger.addFilter(_THREAD_FILTER)
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
      _verify_readable(path)
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state),
          meta=ocp.args.JsonRestore()))
    except Exception as e:  # Orbax raises many types; re-raise one clear one.
      others = [s for s in self.all_steps() if s != step]
      hint = (f" Earlier checkpoints: {others}; move {path} aside to resume "
              "from the newest of them." if others else "")
      raise CheckpointError(
          f"Cannot restore checkpoint {path}: {type(e).__name__}: "
          f"{_first_line(e)}. "
          "It is corrupt or was written by a different config (model, "
          "method or optimizer changed). Nothing was deleted." + hint
          + " To start afresh, use a new --workdir.") from e
    logging.info("Restored checkpoint %s", path)
    return restored["state"], restored["meta"]

  def saved_subtree(self, step: int, keys: Sequence[str],
                    sharding: jax.sharding.Sharding) -> Any | None:
    """Abstract arrays of the saved state's subtree `state[k1][k2]...`.

    Reads the checkpoint's metadata only (no array data). Lets a caller
    restore a checkpoint holding state its config no longer builds (e.g.
    monitor state) and then drop it.

    Args:
      step: the checkpoint.
      keys: dict keys from the state's root to the subtree.
      sharding: the sharding the abstract arrays get.

    Returns:
      A pytree of `jax.ShapeDtypeStruct`, or None when the checkpoint has
      no such subtree (or its metadata cannot be read).
    """
    path = os.path.join(self.directory, str(step))
    try:
      _verify_readable(path)  # Orbax on a damaged one floods stderr.
      handler = ocp.StandardCheckpointHandler()
      try:
        tree = handler.metadata(epath.Path(path) / "state").tree
      finally:
        handler.close()
      for key in keys:
        tree = tree[key]
    except (KeyError, TypeError, ValueError, OSError):
      return None
    return jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
        tree)

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves, then stops Orbax's background threads."""
    if self._manager is None:
      return
    try:
      self._manager.wait_until_finished()
    finally:
      self._manager.close()
      self._manager = None

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def finished_step(workdir: str) -> int | None:
  """The newest finished checkpoint step of `workdir`, read from disk.

  Orbax writes each checkpoint under a temporary name and renames it to its
  step when complete, so this is right even after a failed save.
  """
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return None
  steps = [int(n) for n in os.listdir(directory) if n.isdigit()]
  return max(steps) if steps else None


# TensorStore appends its specs (kilobytes of JSON) to its messages.
_MAX_MESSAGE = 300


def _first_line(error: BaseException) -> str:
  """`error`'s message without TensorStore's spec dump, at most 300 chars."""
  text = str(error).split("\n")[0]
  for marker in (" [tensorstore_spec", " [source locations"):
    text = text.split(marker)[0]
  return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "..."


def _verify_readable(path: str) -> None:
  """Reads every stored record of the OCDBT array stores under `path`.

  Synchronous and cheap next to a restore (the bytes land in the page cache
  the restore reads from). It finds a damaged manifest, index or data file
  before Orbax's concurrent restore does: when that restore fails midway,
  its in-flight reads keep completing on TensorStore threads against a
  closed event loop and flood stderr long after the error was raised.

  Raises:
    ValueError: a store's manifest is missing, or (from TensorStore) a
      store is unreadable.
  """
  for item in sorted(os.listdir(path)):
    item_dir = os.path.join(path, item)
    if not os.path.isdir(item_dir):
      continue
    if not os.path.isfile(os.path.join(item_dir, "manifest.ocdbt")):
      if any(n.startswith("ocdbt.process_") for n in os.listdir(item_dir)):
        raise ValueError(f"{item_dir}/manifest.ocdbt is missing")
      continue
    store = ts.KvStore.open(
        {"driver": "ocdbt", "base": f"file://{item_dir}/"}).result()
    for key in store.list().result():
      store.read(key).result()


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (keeping shardings) for a concrete pytree."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                     sharding=getattr(x, "sharding", None)),
      tree)
