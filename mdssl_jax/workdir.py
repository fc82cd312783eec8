"""One writer per workdir, config compatibility on resume, clear I/O errors.

`train.train_and_evaluate` uses these in order::

  created = workdir.create(path)          # WorkdirError: cannot be written
  with workdir.Lock(path):                # WorkdirError: another run holds it
    changes = workdir.resume_changes(config, path, step)  # refused changes
    ...restore the checkpoint...
    workdir.record_config(config, path, step, changes)

The lock is an `fcntl.flock` on `<workdir>/workdir.lock`, a file that holds
the holder's host, pid and start time: the kernel releases the lock when
its process dies, so a lock file left behind by a killed run is taken over
(with a warning naming that run) instead of blocking the workdir forever.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import shutil
import socket
from typing import Any

from absl import logging
import ml_collections

from mdssl_jax import atomic_file

LOCK_FILE = "workdir.lock"
CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"

# Keys that may change when a run resumes: they change how long the run is,
# how it is evaluated, logged, checkpointed or placed on devices, not what
# is trained so far. Every other key (method, method_args, model, projector,
# predictor, seed, data domains and batch, views, augment, optim, ema,
# compute_dtype, ...) is refused unless checkpoint.allow_changes names it.
FREE_KEYS = ("total_steps", "total_epochs", "budget", "eval", "evals",
             "log_every", "checkpoint", "mesh_shape", "mesh",
             "keep_host_memory",
             "data.prefetch", "data.num_parallel_calls", "data.data_dir",
             "data.download", "model.conv_impl")

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_ABSENT = "<absent>"


class WorkdirError(ValueError):
  """The workdir cannot be used: not writable, locked, full or incompatible."""


def _now() -> str:
  return datetime.datetime.now().isoformat(timespec="seconds")


def write_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` via a temporary file and a rename."""
  with atomic_file.atomic_open(path) as f:
    f.write(text)


# ---- Creating and cleaning up ------------------------------------------------


def create(path: str) -> list[str]:
  """Creates the workdir `path` (and its missing parents) if needed.

  Args:
    path: the workdir.

  Returns:
    The directories this call created, outermost first (empty when `path`
    existed); `remove_if_unused` takes them.

  Raises:
    WorkdirError: `path` cannot be created (naming it and the fix).
  """
  path = os.path.abspath(path)
  missing = []
  head = path
  while not os.path.isdir(head):
    missing.append(head)
    parent = os.path.dirname(head)
    if parent == head:
      break
    head = parent
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise WorkdirError(
        f"Cannot create the workdir {path}: {e.strerror}. Pass a "
        "--workdir in a writable location.") from None
  return missing[::-1]


def remove_if_unused(path: str, created: list[str]) -> None:
  """Removes the dirs `create` made, unless a run wrote results into them.

  A run that failed at start-up leaves at most an empty checkpoint folder,
  a TensorBoard file or config.json: nothing worth a directory in `runs/`.

  Args:
    path: the workdir.
    created: `create`'s return value.
  """
  if not created or os.path.exists(os.path.join(path, "metrics.jsonl")):
    return
  checkpoints = os.path.join(path, "checkpoints")
  if os.path.isdir(checkpoints) and any(
      name.isdigit() for name in os.listdir(checkpoints)):
    return
  shutil.rmtree(created[0], ignore_errors=True)


# ---- The lock ----------------------------------------------------------------


def _describe(holder: dict[str, Any]) -> str:
  return (f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, "
          f"since {holder.get('since', '?')}")


def _parse(text: str) -> dict[str, Any]:
  try:
    holder = json.loads(text)
  except ValueError:
    return {}
  return holder if isinstance(holder, dict) else {}


class Lock:
  """An exclusive lock on a workdir; a context manager.

  Entering takes the lock or raises; exiting (on success, error or
  KeyboardInterrupt) deletes the lock file and releases the lock.
  """

  def __init__(self, path: str):
    self.path = os.path.join(os.path.abspath(path), LOCK_FILE)
    self._fd = None

  def _open_locked(self) -> int:
    """The lock file's descriptor, flock-ed; retries if it was replaced."""
    while True:
      try:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      except OSError as e:
        raise WorkdirError(
            f"The workdir {os.path.dirname(self.path)} is not writable "
            f"({e.strerror}). Fix its permissions, free space there, or "
            "pass another --workdir.") from None
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = _parse(os.pread(fd, 4096, 0).decode(errors="replace"))
        os.close(fd)
        raise WorkdirError(
            f"The workdir {os.path.dirname(self.path)} is in use by another "
            f"run ({_describe(holder)}). Pass another --workdir, or stop "
            "that run first.") from None
      try:
        same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
      except FileNotFoundError:
        same = False
      if same:
        return fd
      os.close(fd)  # Its holder deleted the file as we opened it.

  def __enter__(self) -> "Lock":
    fd = self._open_locked()
    old = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    if old:
      logging.warning(
          "Taking over the lock %s left by a run that is no longer running "
          "(%s).", self.path, _describe(_parse(old)))
    holder = {"host": socket.gethostname(), "pid": os.getpid(),
              "since": _now()}
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, json.dumps(holder).encode(), 0)
    except OSError as e:
      os.close(fd)
      raise WorkdirError(
          f"Cannot write the lock file {self.path} ({e.strerror}). Free "
          "space there, or pass another --workdir.") from None
    self._fd = fd
    return self

  def __exit__(self, *exc_info) -> None:
    if self._fd is None:
      return
    # Delete while still holding the lock, so no one takes over a file
    # that is about to vanish (`_open_locked` checks the inode).
    try:
      os.unlink(self.path)
    except FileNotFoundError:
      pass
    os.close(self._fd)
    self._fd = None


# ---- Config compatibility on resume ------------------------------------------


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{dotted key: value} of nested dicts; lists are leaves."""
  if not isinstance(tree, dict):
    return {prefix[:-1]: tree}
  out = {}
  for key, value in tree.items():
    out.update(_flatten(value, f"{prefix}{key}."))
  return out


def _as_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def config_changes(old: dict[str, Any], new: dict[str, Any],
                   defaults: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
  """The keys whose values differ between two JSON configs.

  A key absent from `old` (added to the schema after `old` was written)
  counts as unchanged when `new` holds its default.

  Args:
    old: the saved config (parsed config.json).
    new: the new config, as JSON.
    defaults: the schema's defaults for the new config's method, as JSON.

  Returns:
    {dotted key: (old value or "<absent>", new value or "<absent>")},
    sorted by key.
  """
  old, new, defaults = _flatten(old), _flatten(new), _flatten(defaults)
  changes = {}
  for key in sorted(set(old) | set(new)):
    before, after = old.get(key, _ABSENT), new.get(key, _ABSENT)
    if before == after:
      continue
    if key not in old and key in defaults and defaults[key] == after:
      continue
    changes[key] = (before, after)
  return changes


def _matches(key: str, prefixes) -> bool:
  return any(key == p or key.startswith(p + ".") for p in prefixes)


def allowed_prefixes(config: ml_collections.ConfigDict) -> list[str]:
  """checkpoint.allow_changes as key prefixes (items may hold commas)."""
  return [p.strip() for item in config.checkpoint.allow_changes
          for p in item.split(",") if p.strip()]


def _short(value: Any) -> str:
  text = json.dumps(value)
  return text if len(text) <= 100 else text[:97] + "..."


def resume_changes(config: ml_collections.ConfigDict, path: str,
                   step: int) -> dict[str, tuple[Any, Any]]:
  """Checks that `config` may resume the checkpoint of `path` at `step`.

  Reads only: nothing is written, so a refused resume leaves the workdir
  as it was.

  Args:
    config: the validated new config.
    path: the workdir.
    step: the step of the checkpoint about to be restored.

  Returns:
    The accepted changes against the saved config.json (see
    `config_changes`); empty when there is no config.json to compare.

  Raises:
    WorkdirError: config.json is unreadable, or `config` changes keys that
      checkpoint.resume_policy / allow_changes do not accept (listing each
      old -> new and the two ways out).
  """
  from mdssl_jax import config_lib  # pylint: disable=g-import-not-at-top
  saved = os.path.join(path, CONFIG_FILE)
  if not os.path.exists(saved):
    logging.warning("%s has checkpoints but no %s; resuming from step %d "
                    "without checking the config.", path, CONFIG_FILE, step)
    return {}
  try:
    with open(saved) as f:
      old = json.load(f)
  except ValueError as e:
    raise WorkdirError(
        f"{saved} is not valid JSON ({e}), so this resume cannot be "
        "checked. Restore that file, delete it to resume unchecked, or "
        "pass a new --workdir.") from None
  defaults = _as_json(config_lib.get_default_config(config.method))
  changes = config_changes(old, _as_json(config), defaults)
  if config.checkpoint.resume_policy == "allow":
    return changes
  accepted = FREE_KEYS + tuple(allowed_prefixes(config))
  refused = [k for k in changes if not _matches(k, accepted)]
  if refused:
    lines = "\n".join(f"  {k}: {_short(changes[k][0])} -> "
                      f"{_short(changes[k][1])}" for k in refused)
    raise WorkdirError(
        f"Cannot resume {path} from step {step}: this config changes what "
        f"is trained there (saved in {CONFIG_FILE}: old -> new):\n{lines}\n"
        "Nothing in the workdir was changed. Either start a separate run "
        "with a new --workdir, or accept the changes with "
        f"--config.checkpoint.allow_changes={','.join(refused)} (or "
        "--config.checkpoint.resume_policy=allow for any change).")
  return changes


def record_config(config: ml_collections.ConfigDict, path: str,
                  step: int, changes: dict[str, tuple[Any, Any]]) -> None:
  """Writes config.json; appends `changes` to config_history.jsonl.

  Args:
    config: the run's config.
    path: the workdir.
    step: the step the run starts from (0: a new run).
    changes: `resume_changes`'s result; nothing is appended when empty.
  """
  write_atomic(os.path.join(path, CONFIG_FILE),
               config.to_json_best_effort(indent=2))
  if changes:
    row = {"time": _now(), "resumed_from_step": step,
           "changes": {k: list(v) for k, v in changes.items()}}
    with open(os.path.join(path, HISTORY_FILE), "a") as f:
      f.write(json.dumps(row) + "\n")
    logging.warning("Resuming %s from step %d with changed keys %s "
                    "(recorded in %s).", path, step, sorted(changes),
                    HISTORY_FILE)


# ---- A full disk -------------------------------------------------------------


def is_disk_full(error: BaseException) -> bool:
  """Whether `error` (or an exception it came from) is a full disk/quota."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _DISK_FULL:
      return True
    if "No space left on device" in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


def disk_full_error(path: str, last_step: int | None) -> WorkdirError:
  """The "disk full" error for workdir `path`, naming its last checkpoint."""
  kept = (f"The last good checkpoint (step {last_step}) is kept; rerun the "
          "same command to resume from it." if last_step is not None else
          "No checkpoint had been written yet.")
  return WorkdirError(
      f"Disk full while writing the workdir {os.path.abspath(path)}: "
      f"training stopped. {kept} Free space there (or pass a --workdir on "
      "another disk) first.")
