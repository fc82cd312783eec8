"""Small helpers shared by the command-line programs.

Synopsis::

  cli.quiet_library_logs()   # console: the project's own lines + warnings
  cli.hide_gpus_from_tf()    # tf.data stays off the accelerators
  sys.exit(cli.error_line(e))
"""

from __future__ import annotations

import contextlib
import difflib
import logging as pylogging
import os
import sys
import tempfile
from typing import Sequence

from absl import flags
from absl import logging

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_hidden = False


def hide_gpus_from_tf() -> None:
  """Keeps TensorFlow (used only for tf.data) off the accelerators.

  The one place that configures this; safe to call more than once.
  """
  global _hidden
  if _hidden:
    return
  if "tensorflow" not in sys.modules and not _verbosity_given():
    with _drop_native_startup_noise():
      import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], "GPU")
  except (RuntimeError, ValueError):  # Already initialised, or no GPU API.
    pass
  _hidden = True


# What TensorFlow's native code prints on stderr while it loads, whatever
# TF_CPP_MIN_LOG_LEVEL says (its absl logging is not initialised yet).
_NATIVE_NOISE = ("All log messages before absl::InitializeLog()",
                 "oneDNN custom operations are on",
                 "cpu_feature_guard.cc", "To enable the following instructions",
                 "rebuild TensorFlow with the appropriate compiler flags")


@contextlib.contextmanager
def _drop_native_startup_noise():
  """Captures file descriptor 2 during the block and re-emits every line
  that is not known start-up noise (errors and warnings still show)."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode="w+b") as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      capture.seek(0)
      for line in capture.read().decode(errors="replace").splitlines():
        if line.strip() and not any(n in line for n in _NATIVE_NOISE):
          print(line, file=sys.stderr)


class _OwnLinesOnly(pylogging.Filter):
  """Keeps INFO records of mdssl_jax itself; other libraries' INFO chatter
  (JAX's backend probing, orbax, clu, tfds, etils) is dropped. Warnings and
  errors of every library stay."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    return (record.levelno >= pylogging.WARNING
            or record.pathname.startswith(_PACKAGE_DIR))


def _verbosity_given() -> bool:
  try:
    return bool(flags.FLAGS["verbosity"].present)
  except (KeyError, flags.UnparsedFlagAccessError):
    return False


def quiet_library_logs() -> None:
  """Keeps the console to the project's own lines, unless --verbosity is
  passed (then every library's log lines show)."""
  if _verbosity_given():
    return
  for handler in pylogging.getLogger().handlers + [
      logging.get_absl_handler()]:
    handler.addFilter(_OwnLinesOnly())
  # JAX logs its backend probing ("Unable to initialize backend 'tpu'")
  # at INFO before any handler filter could be consulted by absl's C++ side.
  pylogging.getLogger("jax._src.xla_bridge").setLevel(pylogging.WARNING)


def error_line(error: BaseException) -> str:
  """One `error: ...` line (plus the message's own lines) for sys.exit."""
  return f"error: {error}"


def _config_spec_and_overrides(argv: Sequence[str], name: str
                               ) -> tuple[str | None, list[str]]:
  spec, paths = None, []
  args = list(argv[1:])
  for i, arg in enumerate(args):
    if arg.startswith(f"--{name}="):
      spec = arg.split("=", 1)[1]
    elif arg == f"--{name}" and i + 1 < len(args):
      spec = args[i + 1]
    elif arg.startswith(f"--{name}."):
      paths.append(arg[len(name) + 3:].split("=", 1)[0])
  return spec, paths


def unknown_override_errors(argv: Sequence[str], name: str = "config"
                            ) -> list[str]:
  """Checks `--config.a.b=...` overrides against the config file's keys.

  ml_collections rejects an unknown key during flag parsing with chained
  tracebacks; this runs first and names the key with a close match.

  Args:
    argv: the command line (sys.argv).
    name: the config flag's name.

  Returns:
    One message per unknown override path (empty when all exist, or when
    the config file itself cannot be loaded: flag parsing then reports it).
  """
  from mdssl_jax import config_lib  # pylint: disable=g-import-not-at-top
  spec, paths = _config_spec_and_overrides(argv, name)
  if spec is None or not paths:
    return []
  try:
    config = config_lib.load_config(spec)
  except Exception:  # pylint: disable=broad-except
    return []
  errors = []
  for path in paths:
    node, done = config, []
    for part in path.split("."):
      if not hasattr(node, "keys") or part not in node:
        keys = sorted(node.keys()) if hasattr(node, "keys") else []
        close = difflib.get_close_matches(part, keys, n=1)
        hint = (f" Did you mean --{name}.{'.'.join(done + close)}?"
                if close else "")
        where = ".".join(done) or "the top level"
        errors.append(f"Unknown config key {path!r} in --{name}.{path}."
                      f"{hint} Valid keys at {where}: {keys}.")
        break
      node, done = node[part], done + [part]
  return errors
