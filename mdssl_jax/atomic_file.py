"""Atomic file writes: readers see the old complete file or the new one.

Synopsis::

  with atomic_file.atomic_open(path) as f:      # "wb" for binary
    f.write(text)

Light (standard library only), so config-time and data-side modules can
use it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
  """Opens a temporary file next to `path`; on success it replaces `path`.

  The temporary file is fsync'ed, made world-readable (mkstemp creates
  0600) and moved over `path` with `os.replace`. On any error, including
  an interrupt, it is removed and `path` is left as it was. Parent
  directories are created.

  Args:
    path: destination on a local filesystem.
    mode: "w" (UTF-8 text) or "wb".

  Yields:
    The open temporary file.
  """
  if mode not in ("w", "wb"):
    raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}.")
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory,
                             prefix=f".{os.path.basename(path)}.",
                             suffix=".tmp")
  encoding = None if "b" in mode else "utf-8"
  try:
    with os.fdopen(fd, mode, encoding=encoding) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
