"""Resource accounting of a training run (seed 000 Table 2's columns).

Every call of `train.train_and_evaluate` appends one line to
`<workdir>/runs.jsonl` (steps, seconds, peak memory, devices), so the
totals of a run that was interrupted and resumed add up; `summary` folds
them, with the checkpoint size on disk, into results.json's
`train.resources`.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from typing import Any

import jax

from mdssl_jax import progress

RUNS_FILE = "runs.jsonl"


def peak_host_memory_mb() -> float:
  """This process's peak resident memory (MiB)."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  # Linux reports KiB, macOS bytes.
  return peak / (2 ** 20 if sys.platform == "darwin" else 2 ** 10)


def peak_device_memory_mb() -> float | None:
  """Peak bytes in use on the first local device (MiB), where the backend
  reports it (GPU, TPU); None on CPU."""
  stats = jax.local_devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else peak / 2 ** 20


def directory_mb(path: str) -> float:
  """Size of the files under `path` (MiB; 0 when absent)."""
  total = 0
  for root, _, files in os.walk(path):
    for name in files:
      try:
        total += os.path.getsize(os.path.join(root, name))
      except OSError:
        pass  # Removed meanwhile (checkpoint rotation).
  return total / 2 ** 20


def record_run(workdir: str, *, start_step: int, end_step: int,
               seconds: float, images_per_step: int, devices: int) -> None:
  """Appends this call's numbers to `<workdir>/runs.jsonl`."""
  row = {"start_step": start_step, "end_step": end_step,
         "seconds": round(seconds, 3),
         "images": (end_step - start_step) * images_per_step,
         "peak_host_memory_mb": round(peak_host_memory_mb(), 1),
         "peak_device_memory_mb": peak_device_memory_mb(),
         "devices": devices, "device_kind": jax.devices()[0].device_kind}
  with open(os.path.join(workdir, RUNS_FILE), "a") as f:
    f.write(json.dumps(row) + "\n")


def read_runs(workdir: str) -> list[dict[str, Any]]:
  """The rows of `<workdir>/runs.jsonl` (damaged lines skipped)."""
  return progress.read_jsonl(os.path.join(workdir, RUNS_FILE),
                             required=("seconds", "images"))


def summary(workdir: str) -> dict[str, Any]:
  """Totals over every call that trained this workdir.

  Returns:
    {"wall_clock_seconds", "train_images", "images_per_second",
    "peak_host_memory_mb", "peak_device_memory_mb" (None on CPU),
    "checkpoint_mb", "devices", "device_kind", "sessions"}.
  """
  rows = read_runs(workdir)
  seconds = sum(r["seconds"] for r in rows)
  images = sum(r["images"] for r in rows)
  device_peaks = [r["peak_device_memory_mb"] for r in rows
                  if r["peak_device_memory_mb"] is not None]
  return {
      "wall_clock_seconds": round(seconds, 2),
      "train_images": images,
      "images_per_second": round(images / seconds, 2) if seconds else None,
      "peak_host_memory_mb": max((r["peak_host_memory_mb"] for r in rows),
                                 default=None),
      "peak_device_memory_mb": max(device_peaks, default=None),
      "checkpoint_mb": round(directory_mb(
          os.path.join(workdir, "checkpoints")), 2),
      "devices": rows[-1]["devices"] if rows else None,
      "device_kind": rows[-1]["device_kind"] if rows else None,
      "sessions": len(rows),
  }
