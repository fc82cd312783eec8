"""Console progress (steps/s, images/s, ETA), metric files, loss plot."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

from absl import logging

from mdssl_jax import atomic_file


def format_duration(seconds: float) -> str:
  seconds = max(0, int(round(seconds)))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
  """Measures throughput between reports and formats one progress line.

  The clock is injectable so tests can check exact lines.
  """

  def __init__(self, *, total_steps: int, start_step: int,
               images_per_step: int, clock: Callable[[], float] = time.time):
    self.total_steps = total_steps
    self.images_per_step = images_per_step
    self._clock = clock
    self._last_step = start_step
    self._last_time = clock()
    self.steps_per_sec = float("nan")

  def line(self, step: int, scalars: dict[str, float]) -> str:
    """Returns 'step s/T | loss … | x steps/s | y img/s | ETA …'."""
    now = self._clock()
    dt = now - self._last_time
    if step > self._last_step and dt > 0:
      self.steps_per_sec = (step - self._last_step) / dt
    self._last_step, self._last_time = step, now
    eta = ((self.total_steps - step) / self.steps_per_sec
           if self.steps_per_sec > 0 else float("nan"))
    parts = [f"step {step}/{self.total_steps}"]
    for key in ("loss", "lr"):
      if key in scalars:
        parts.append(f"{key} {scalars[key]:.4g}")
    parts.append(f"{self.steps_per_sec:.3g} steps/s")
    parts.append(f"{self.steps_per_sec * self.images_per_step:.1f} img/s")
    parts.append("ETA " + (format_duration(eta) if eta == eta else "?"))
    return " | ".join(parts)


def read_jsonl(path: str, required: tuple[str, ...] = ()
               ) -> list[dict[str, Any]]:
  """The JSON objects of a .jsonl file ([] when absent).

  Damaged lines (and objects lacking a `required` key) are skipped with a
  warning: a kill in the middle of a write leaves a truncated last line,
  and one bad line must not cost the whole log.
  """
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except ValueError:
        record = None
      if not isinstance(record, dict) or any(k not in record
                                             for k in required):
        logging.warning("Skipping damaged line %d of %s: %.60r", number,
                        path, line)
        continue
      records.append(record)
  return records


class JsonlWriter:
  """Appends one JSON object per line; used for `metrics.jsonl`."""

  def __init__(self, path: str):
    self.path = path
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)

  def write(self, record: dict[str, Any]) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")

  def read(self) -> list[dict[str, Any]]:
    """The file's records (each with "step"); see `read_jsonl`."""
    return read_jsonl(self.path, required=("step",))

  def keep_until(self, step: int) -> None:
    """Drops records past `step` (and damaged lines), rewriting atomically.

    A resume from the checkpoint at `step` logs the later steps again, so
    their old rows would make the file (and loss.png) jump back in time.
    """
    self.keep(lambda r: r["step"] <= step)

  def keep(self, predicate: Callable[[dict[str, Any]], bool]) -> None:
    """Keeps the records where `predicate` holds, rewriting atomically."""
    if not os.path.exists(self.path):
      return
    kept = [r for r in self.read() if predicate(r)]
    with atomic_file.atomic_open(self.path) as f:
      f.writelines(json.dumps(r) + "\n" for r in kept)


def save_loss_plot(records: list[dict[str, Any]], path: str) -> None:
  """Loss and learning-rate curves as a PNG (skipped without matplotlib).

  Args:
    records: metrics.jsonl rows; those with "step", "loss" and "lr" are
      plotted.
    path: output .png file.
  """
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  records = [r for r in records if "loss" in r]  # Not clustering rows.
  steps = [r["step"] for r in records]
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
  axes[0].plot(steps, [r["loss"] for r in records])
  axes[0].set(xlabel="step", ylabel="train loss")
  axes[1].plot(steps, [r["lr"] for r in records])
  axes[1].set(xlabel="step", ylabel="learning rate")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
