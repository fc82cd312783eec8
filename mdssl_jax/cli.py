"""Small helpers shared by the command-line programs."""

from __future__ import annotations

import logging as pylogging

from absl import logging


def hide_gpus_from_tf() -> None:
  """Keeps TensorFlow (used only for tf.data) off the accelerators."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:
    pass


class _QuietLibraries(pylogging.Filter):
  """Drops INFO chatter of orbax/clu/tfds from the console (warnings stay)."""

  _NOISY = ("orbax", "clu/", "tensorflow_datasets", "etils")

  def filter(self, record: pylogging.LogRecord) -> bool:
    if record.levelno >= pylogging.WARNING:
      return True
    return not any(n in record.pathname for n in self._NOISY)


def quiet_library_logs() -> None:
  """Keeps the console to our own progress lines and results."""
  for handler in pylogging.getLogger().handlers + [
      logging.get_absl_handler()]:
    handler.addFilter(_QuietLibraries())
