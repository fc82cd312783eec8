"""Small helpers shared by the command-line programs.

Synopsis::

  cli.quiet_library_logs()   # console: the project's own lines + warnings
  cli.hide_gpus_from_tf()    # tf.data stays off the accelerators
  sys.exit(cli.error_line(e))
"""

from __future__ import annotations

import logging as pylogging
import os

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
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], "GPU")
  except (RuntimeError, ValueError):  # Already initialised, or no GPU API.
    pass
  _hidden = True


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
