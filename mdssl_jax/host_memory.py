"""Keeps freed host memory in the process instead of returning it to the OS.

XLA:CPU allocates an executable's buffers with the C library's malloc on
every call. glibc serves large blocks with fresh `mmap`s and unmaps them on
free, and trims the top of its heap once more than a threshold is free, so
each training step page-faults and zero-fills its whole working set again.
On the 2-vCPU KVM host of benchmarks/RESULTS.md a ResNet-18 SimCLR step at
2×256 views took 1.6 million page faults and 11-17 s of kernel time per
step (of ~32 s); with the settings below it takes ~none and runs in ~24.6 s.

`keep_freed_host_memory` is what a GPU allocator does by default: the
process keeps its peak working set mapped and reuses it (resident memory
stays at the step's peak instead of rising and falling). It must not import
jax (benchmarks/peer_lightly.py loads it by path into a PyTorch venv).
"""

from __future__ import annotations

import ctypes
import sys

# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

# None until keep_freed_host_memory first runs, then its result.
_result: bool | None = None


def keep_freed_host_memory() -> bool:
  """Stops glibc from unmapping freed blocks or trimming its heap.

  Sets one malloc arena (so large blocks come from the main heap, which can
  grow without mmap), no mmap-served blocks, and no heap trimming (-1
  disables it; any finite threshold below a step's working set still lets
  the heap shrink and re-fault between steps). Process-wide and not
  reversible; it is applied at most once per process, and later calls
  return the first call's result.

  Returns:
    True if the settings are in effect (glibc on Linux), False where they
    cannot be applied (another C library or OS), which changes nothing.
  """
  global _result
  if _result is None:
    _result = _apply()
  return _result


def tried() -> bool:
  """Whether `keep_freed_host_memory` has run in this process."""
  return _result is not None


def _apply() -> bool:
  if not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL("libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  mallopt.restype = ctypes.c_int
  return all(mallopt(param, value) == 1 for param, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
