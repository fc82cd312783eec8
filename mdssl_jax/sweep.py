r"""Sweeps: a grid of training runs, one process per cell, resumable.

  python -m mdssl_jax.sweep --config=configs/sweeps/diversity.py \
      --workdir=runs/diversity [--dry_run] [--cells=NAME,...] \
      [--images_per_sec=120]

A sweep file's `get_config(arg)` returns a ConfigDict with

* `name`: the sweep's name;
* `cells`: a list of dicts `{name, config, overrides, tags, init,
  eval_suite}`: `config` is a training config spec (`configs/x.py:arg`),
  `overrides` dotted config keys and JSON values applied after it
  (`{"seed": 1, "budget.images_seen": 64000, "data.domains": [...]}`;
  `config_lib.apply_overrides`, passed as `--overrides_json`), `tags` the
  cell's coordinates for tables and plots (`method`, `fraction`, `seed`,
  …; cells that differ only in `seed` are averaged), `init=True`
  evaluates the encoder at initialisation instead of training
  (`python -m mdssl_jax.main --init_only`), `eval_suite` replaces the
  sweep's for this cell;
* `eval_suite`: an eval suite spec run on every finished cell
  (`python -m mdssl_jax.evaluate --config=...`, e.g. unseen domains), or
  "" for none;
* `metrics`: the evaluators tabulated (their top-1, e.g. ("probe",
  "knn"));
* `plots`: dicts `{x, y, series}`: metric `y` (an evaluator's mean top-1)
  against `x` (a tag or a budget key: images_seen, epochs, diversity),
  one line per value of tag `series`; or `{kind: "bars", y}`: `y`'s
  top-1 per domain, one bar per group (mean over seeds, std as error).

Each cell is a normal workdir `<workdir>/cells/<name>` trained by its own
`python -m mdssl_jax.main` process (output in `<workdir>/logs/<name>.log`).
A cell with `sweep_cell.json` is finished and skipped; an interrupted one
is rerun and resumes from its checkpoint; a failing one is recorded with
its error in `sweep_status.json` and the sweep goes on (it is retried on
the next call). After every cell the sweep rewrites `sweep.csv` (one row
per cell: tags, status, every evaluator × domain top-1 and means, budget
C/E/D, resources), `sweep.md` (mean ± std over seeds per group) and
`plots/*.png`. `--dry_run` lists the cells with their steps, images seen
and (given `--images_per_sec`) estimated time, and runs nothing.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import subprocess
import sys
import time
from typing import Any, Sequence

from absl import app
from absl import flags
import numpy as np

from mdssl_jax import atomic_file
from mdssl_jax import config_lib
from mdssl_jax import progress
from mdssl_jax import workdir as workdir_lib

CELL_DONE = "sweep_cell.json"
STATUS_FILE = "sweep_status.json"
BUDGET_KEYS = ("images_seen", "epochs", "diversity")
RESOURCE_KEYS = ("wall_clock_seconds", "images_per_second",
                 "peak_host_memory_mb", "checkpoint_mb", "devices")


class SweepError(ValueError):
  """The sweep file is invalid."""


@dataclasses.dataclass(frozen=True)
class Cell:
  """One run of the grid."""
  name: str
  config: str
  overrides: dict[str, Any]
  tags: dict[str, Any]
  init: bool = False
  eval_suite: str | None = None

  def group(self) -> tuple[tuple[str, Any], ...]:
    """The cell's tags without `seed` (seeds of one group are averaged)."""
    return tuple(sorted((k, v) for k, v in self.tags.items() if k != "seed"))


def _check_name(name: str) -> None:
  if not name or not all(ch.isalnum() or ch in "-_.=" for ch in name):
    raise SweepError(f"Cell name {name!r}: use letters, digits and -_.= "
                     "only (it is a directory name).")


def load_sweep(spec: str) -> tuple[Any, list[Cell]]:
  """(sweep config, cells) of a sweep file spec `path.py[:arg]`.

  Raises:
    SweepError: duplicate or unsafe cell names, non-scalar overrides,
      missing keys.
  """
  sweep = config_lib.load_config(spec)
  for key in ("name", "cells", "eval_suite", "metrics", "plots"):
    if key not in sweep:
      raise SweepError(f"Sweep {spec!r} lacks {key!r}; see "
                       "mdssl_jax/sweep.py for the keys.")
  cells = []
  for raw in sweep.cells:
    raw = dict(raw)
    unknown = set(raw) - {"name", "config", "overrides", "tags", "init",
                          "eval_suite"}
    if unknown:
      raise SweepError(f"Cell {raw.get('name')!r}: unknown keys "
                       f"{sorted(unknown)}.")
    cell = Cell(name=raw["name"], config=raw["config"],
                overrides=dict(raw.get("overrides") or {}),
                tags=dict(raw.get("tags") or {}),
                init=bool(raw.get("init", False)),
                eval_suite=raw.get("eval_suite"))
    _check_name(cell.name)
    try:
      json.dumps(cell.overrides)
    except TypeError as e:
      raise SweepError(f"Cell {cell.name!r}: overrides must be JSON "
                       f"values: {e}") from None
    cells.append(cell)
  names = [c.name for c in cells]
  dupes = sorted({n for n in names if names.count(n) > 1})
  if dupes:
    raise SweepError(f"Duplicate cell names {dupes}.")
  return sweep, cells


def cell_config(cell: Cell) -> Any:
  """The cell's training config (file, then overrides), validated."""
  config = config_lib.load_config(cell.config)
  try:
    config_lib.apply_overrides(config, cell.overrides)
  except config_lib.ConfigError as e:
    raise SweepError(f"Cell {cell.name!r}: {e}") from None
  config_lib.validate(config, check_devices=False)
  return config


def cell_commands(cell: Cell, cell_dir: str, eval_suite: str,
                  overrides_path: str) -> list[list[str]]:
  """The processes that run a cell: train (or init-evaluate), then the
  optional eval suite (the cell's own, else `eval_suite`)."""
  train = [sys.executable, "-m", "mdssl_jax.main", f"--config={cell.config}",
           f"--workdir={cell_dir}", f"--overrides_json={overrides_path}"]
  if cell.init:
    train.append("--init_only")
  commands = [train]
  if cell.eval_suite is not None:
    eval_suite = cell.eval_suite
  if eval_suite:
    commands.append([sys.executable, "-m", "mdssl_jax.evaluate",
                     f"--workdir={cell_dir}", f"--config={eval_suite}"])
  return commands


def estimate(cell: Cell) -> dict[str, Any]:
  """Steps, images seen and encoder passes of a cell, from its config."""
  config = cell_config(cell)
  batch = config_lib.global_batch(config)
  views = config.views.large.count + config.views.small.count
  if cell.init:
    steps, note = 0, "initialisation"
  elif config.budget.images_seen > 0:
    steps, note = math.ceil(config.budget.images_seen / batch), "budget"
  elif config.total_steps >= 0:
    steps, note = config.total_steps, "steps"
  else:
    steps, note = None, f"{config.total_epochs} epochs (N from the data)"
  images = None if steps is None else steps * batch
  return {"cell": cell.name, "method": config.method, "steps": steps,
          "global_batch": batch, "images_seen": images, "views": views,
          "encoder_images": None if images is None else images * views,
          "length_from": note}


# ---- Results -----------------------------------------------------------------


def _read_json(path: str) -> dict[str, Any] | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _latest_rows(cell_dir: str) -> list[dict[str, Any]]:
  """eval/results.jsonl rows of the latest step, one per (evaluator,
  domain) — the newest when several suites scored it."""
  path = os.path.join(cell_dir, "eval", "results.jsonl")
  rows = [r for r in progress.JsonlWriter(path).read() if "top1" in r]
  if not rows:
    return []
  last = max(r["step"] for r in rows)
  latest = {}
  for r in rows:
    if r["step"] == last:
      latest[(r["evaluator"], r["domain"])] = r
  return list(latest.values())


def cell_row(cell: Cell, cell_dir: str, status: str) -> dict[str, Any]:
  """One sweep.csv row: tags, status, metrics, budget and resources."""
  row = {"cell": cell.name, "status": status, **cell.tags}
  results = _read_json(os.path.join(cell_dir, "results.json")) or {}
  train = results.get("train", {})
  row["steps"] = train.get("steps")
  row["feature_dim"] = None
  for key in BUDGET_KEYS:
    row[key] = train.get("budget", {}).get(key)
  for key in RESOURCE_KEYS:
    row[key] = train.get("resources", {}).get(key)
  by_eval: dict[str, dict[str, list[float]]] = {}
  for r in _latest_rows(cell_dir):
    row[f"{r['evaluator']}/{r['domain']}"] = r["top1"]
    row["feature_dim"] = r.get("feature_dim")
    kind = "unseen" if r["unseen"] else "seen"
    by_eval.setdefault(r["evaluator"], {}).setdefault(kind, []).append(
        r["top1"])
  for name, kinds in by_eval.items():
    for kind, values in kinds.items():
      suffix = "mean" if kind == "seen" else "mean_unseen"
      row[f"{name}/{suffix}"] = float(np.mean(values))
  return row


def write_csv(rows: Sequence[dict[str, Any]], path: str) -> None:
  columns: list[str] = []
  for r in rows:
    columns += [k for k in r if k not in columns]
  out = io.StringIO()
  writer = csv.DictWriter(out, fieldnames=columns)
  writer.writeheader()
  # Ten significant digits: 40.05, not float noise like 40.050000000000004.
  writer.writerows([{k: f"{v:.10g}" if isinstance(v, float) else v
                     for k, v in r.items()} for r in rows])
  with atomic_file.atomic_open(path) as f:
    f.write(out.getvalue())


def _fmt(value: float) -> str:
  """Integers as such, |x| ≥ 1 with 2 decimals, smaller with 3 digits."""
  if float(value).is_integer() and abs(value) >= 1:
    return str(int(value))
  return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"


def _mean_std(values: Sequence[float]) -> str:
  values = [v for v in values if v is not None and not math.isnan(v)]
  if not values:
    return "—"
  if len(values) == 1:
    return _fmt(values[0])
  return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def summary_table(cells: Sequence[Cell], rows: Sequence[dict[str, Any]],
                  metrics: Sequence[str]) -> str:
  """Markdown: one line per group, mean ± std (ddof 1) over its seeds."""
  done = {r["cell"]: r for r in rows if r["status"] == "done"}
  groups: dict[tuple, list[dict[str, Any]]] = {}
  for cell in cells:
    if cell.name in done:
      groups.setdefault(cell.group(), []).append(done[cell.name])
  if not groups:
    return "No finished cells yet.\n"
  tag_keys = sorted({k for g in groups for k, _ in g})
  metric_cols = []
  for r in done.values():
    metric_cols += [k for k in r if "/" in k and k.split("/")[0] in metrics
                    and k not in metric_cols]
  metric_cols.sort(key=lambda k: (k.split("/")[0],
                                  "mean" in k, k))
  extra = ["feature_dim", "images_seen", "diversity", "wall_clock_seconds",
           "images_per_second", "peak_host_memory_mb", "checkpoint_mb",
           "devices"]
  header = tag_keys + ["n"] + metric_cols + extra
  lines = ["| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
  for group, members in groups.items():
    tags = dict(group)
    cells_ = [str(tags.get(k, "")) for k in tag_keys] + [str(len(members))]
    cells_ += [_mean_std([m.get(k) for m in members]) for k in metric_cols]
    for k in extra:
      values = [m.get(k) for m in members if m.get(k) is not None]
      cells_.append(_mean_std(values) if k != "devices" and k != "feature_dim"
                    else (str(values[0]) if values else "—"))
    lines.append("| " + " | ".join(cells_) + " |")
  return "\n".join(lines) + "\n"


def save_plots(sweep: Any, cells: Sequence[Cell],
               rows: Sequence[dict[str, Any]], directory: str) -> list[str]:
  """One PNG per `sweep.plots` entry: y against x, a line per series."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  done = {r["cell"]: r for r in rows if r["status"] == "done"}
  paths = []
  os.makedirs(directory, exist_ok=True)
  for spec in sweep.plots:
    if spec.get("kind") == "bars":
      path = _bar_plot(sweep, cells, done, spec["y"], directory, plt)
      if path:
        paths.append(path)
      continue
    x_key, y_key, series = spec["x"], spec["y"], spec["series"]
    column = f"{y_key}/mean"
    lines: dict[Any, dict[float, list[float]]] = {}
    for cell in cells:
      r = done.get(cell.name)
      if r is None or r.get(column) is None or cell.init:
        continue
      x = r.get(x_key, cell.tags.get(x_key))
      if x is None:
        continue
      lines.setdefault(cell.tags.get(series), {}).setdefault(
          float(x), []).append(r[column])
    if not lines:
      continue
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, points in sorted(lines.items(), key=lambda kv: str(kv[0])):
      xs = sorted(points)
      ys = [np.mean(points[x]) for x in xs]
      err = [np.std(points[x], ddof=1) if len(points[x]) > 1 else 0.0
             for x in xs]
      ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=str(label))
    init = [done[c.name][column] for c in cells
            if c.init and done.get(c.name, {}).get(column) is not None]
    if init:  # What training must beat: the same encoder untrained.
      ax.axhline(float(np.mean(init)), color="grey", linestyle="--",
                 label="initialisation")
    if x_key in ("diversity", "images_seen", "epochs"):
      ax.set_xscale("log")
      # Label the swept values themselves, not log-scale minor ticks.
      ticks = sorted({x for points in lines.values() for x in points})
      ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
      ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set(xlabel=x_key, ylabel=f"{y_key} top-1 (mean over domains, %)",
           title=sweep.name)
    ax.legend(title=series, fontsize=8)
    fig.tight_layout()
    path = os.path.join(directory, f"{y_key}_vs_{x_key}_by_{series}.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)
  return paths


def _group_label(group: tuple[tuple[str, Any], ...]) -> str:
  return ", ".join(f"{k}={v}" for k, v in group)


def _bar_plot(sweep: Any, cells: Sequence[Cell], done: dict[str, Any],
              y_key: str, directory: str, plt: Any) -> str | None:
  """Per-domain top-1 of evaluator `y_key`, one bar per group."""
  groups: dict[tuple, list[dict[str, Any]]] = {}
  for cell in cells:
    if cell.name in done:
      groups.setdefault(cell.group(), []).append(done[cell.name])
  domains = []
  for members in groups.values():
    for r in members:
      domains += [k.split("/", 1)[1] for k in r
                  if k.startswith(f"{y_key}/") and not
                  k.split("/", 1)[1].startswith("mean")
                  and k.split("/", 1)[1] not in domains]
  if not groups or not domains:
    return None
  width = 0.8 / len(groups)
  fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(domains) * 1.5), 4))
  for i, (group, members) in enumerate(groups.items()):
    means, errs = [], []
    for d in domains:
      values = [m[f"{y_key}/{d}"] for m in members
                if m.get(f"{y_key}/{d}") is not None]
      means.append(np.mean(values) if values else np.nan)
      errs.append(np.std(values, ddof=1) if len(values) > 1 else 0.0)
    ax.bar(np.arange(len(domains)) + i * width, means, width, yerr=errs,
           capsize=2, label=_group_label(group))
  ax.set_xticks(np.arange(len(domains)) + 0.4 - width / 2, domains,
                rotation=20)
  ax.set(ylabel=f"{y_key} top-1 (%)", title=sweep.name)
  ax.legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(directory, f"{y_key}_per_domain.png")
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


# ---- Running -----------------------------------------------------------------


def _tail(path: str, lines: int = 15) -> str:
  try:
    with open(path, errors="replace") as f:
      return "".join(f.readlines()[-lines:])
  except OSError:
    return ""


def run_cell(cell: Cell, workdir: str, eval_suite: str,
             timeout: float | None = None) -> dict[str, Any]:
  """Runs one cell's processes; returns its status entry."""
  cell_dir = os.path.join(workdir, "cells", cell.name)
  log_path = os.path.join(workdir, "logs", f"{cell.name}.log")
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  overrides_path = os.path.join(workdir, "logs", f"{cell.name}.json")
  with atomic_file.atomic_open(overrides_path) as f:
    json.dump(cell.overrides, f, indent=1)
  t0 = time.time()
  with open(log_path, "a") as log:
    for command in cell_commands(cell, cell_dir, eval_suite,
                                 overrides_path):
      log.write(f"$ {' '.join(command)}\n")
      log.flush()
      try:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False).returncode
      except subprocess.TimeoutExpired:
        code = "timeout"
      if code != 0:
        return {"status": "failed", "returncode": code,
                "seconds": round(time.time() - t0, 1),
                "error": _tail(log_path), "log": log_path}
  entry = {"status": "done", "seconds": round(time.time() - t0, 1)}
  with atomic_file.atomic_open(os.path.join(cell_dir, CELL_DONE)) as f:
    json.dump(entry, f)
  return entry


def is_done(workdir: str, cell: Cell) -> bool:
  return os.path.exists(os.path.join(workdir, "cells", cell.name, CELL_DONE))


def write_reports(sweep: Any, cells: Sequence[Cell], workdir: str,
                  status: dict[str, Any]) -> list[dict[str, Any]]:
  """sweep.csv, sweep.md and plots/ from the cells' workdirs."""
  rows = []
  for cell in cells:
    state = ("done" if is_done(workdir, cell)
             else status.get(cell.name, {}).get("status", "pending"))
    rows.append(cell_row(cell, os.path.join(workdir, "cells", cell.name),
                         state))
  write_csv(rows, os.path.join(workdir, "sweep.csv"))
  failed = [f"- `{n}`: {s.get('returncode')} (see {s.get('log')})"
            for n, s in status.items() if s.get("status") == "failed"]
  text = (f"# Sweep {sweep.name}\n\n"
          + summary_table(cells, rows, tuple(sweep.metrics))
          + ("\nFailed cells:\n" + "\n".join(failed) + "\n" if failed
             else ""))
  with atomic_file.atomic_open(os.path.join(workdir, "sweep.md")) as f:
    f.write(text)
  save_plots(sweep, cells, rows, os.path.join(workdir, "plots"))
  return rows


def run_sweep(spec: str, workdir: str, *, only: Sequence[str] = (),
              timeout: float | None = None) -> dict[str, Any]:
  """Runs every unfinished cell of sweep `spec` in `workdir`, in order.

  Returns:
    The status of every cell run now ({name: {"status", ...}}).
  """
  sweep, cells = load_sweep(spec)
  if only:
    unknown = sorted(set(only) - {c.name for c in cells})
    if unknown:
      raise SweepError(f"--cells names unknown cells {unknown}.")
    cells_to_run = [c for c in cells if c.name in only]
  else:
    cells_to_run = cells
  for cell in cells_to_run:
    cell_config(cell)  # Every cell's config is valid before anything runs.
  os.makedirs(workdir, exist_ok=True)
  status_path = os.path.join(workdir, STATUS_FILE)
  with workdir_lib.Lock(workdir):
    status = _read_json(status_path) or {}
    todo = [c for c in cells_to_run if not is_done(workdir, c)]
    print(f"sweep {sweep.name}: {len(cells)} cells, "
          f"{len(cells) - len(todo)} finished, {len(todo)} to run",
          flush=True)
    t_start = time.time()
    ran = {}
    for i, cell in enumerate(todo, 1):
      print(f"[{i}/{len(todo)}] {cell.name} ...", flush=True)
      entry = run_cell(cell, workdir, sweep.eval_suite, timeout)
      status[cell.name] = ran[cell.name] = entry
      with atomic_file.atomic_open(status_path) as f:
        json.dump(status, f, indent=1)
      rows = write_reports(sweep, cells, workdir, status)
      elapsed = time.time() - t_start
      eta = elapsed / i * (len(todo) - i)
      metric = next((r.get(f"{m}/mean") for r in rows if r["cell"] ==
                     cell.name for m in sweep.metrics
                     if r.get(f"{m}/mean") is not None), None)
      shown = "" if metric is None else f" ({sweep.metrics[0]} {metric:.2f})"
      print(f"[{i}/{len(todo)}] {cell.name}: {entry['status']} in "
            f"{progress.format_duration(entry['seconds'])}{shown}; ETA "
            f"{progress.format_duration(eta)}", flush=True)
    if not todo:
      write_reports(sweep, cells, workdir, status)
  return ran


def dry_run(spec: str, images_per_sec: float | None) -> list[dict[str, Any]]:
  """Prints (and returns) each cell's estimated cost."""
  _, cells = load_sweep(spec)
  rows = [estimate(c) for c in cells]
  total = 0.0
  print(f"{'cell':40s} {'method':12s} {'steps':>8s} {'images':>10s} "
        f"{'views':>5s} {'time':>9s}")
  for r in rows:
    seconds = None
    if images_per_sec and r["images_seen"] is not None:
      seconds = r["images_seen"] / images_per_sec
      total += seconds
    r["estimated_seconds"] = seconds
    shown = "-" if seconds is None else progress.format_duration(seconds)
    print(f"{r['cell']:40s} {r['method']:12s} {str(r['steps']):>8s} "
          f"{str(r['images_seen']):>10s} {r['views']:>5d} {shown:>9s}")
  if images_per_sec:
    print(f"total ≈ {progress.format_duration(total)} at {images_per_sec} "
          "images/s (training only; evaluation adds per cell)")
  return rows


_FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string("config", None, "Sweep file, configs/sweeps/x.py[:arg].")
  flags.DEFINE_string("workdir", None, "The sweep's directory.")
  flags.DEFINE_bool("dry_run", False, "List the cells and their cost only.")
  flags.DEFINE_list("cells", [], "Run only these cells (names).")
  flags.DEFINE_float("images_per_sec", None,
                     "Training speed for --dry_run's time estimate.")
  flags.DEFINE_float("cell_timeout", None, "Seconds per cell process.")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _FLAGS.config:
    raise app.UsageError("--config=configs/sweeps/<name>.py is required.")
  try:
    if _FLAGS.dry_run:
      dry_run(_FLAGS.config, _FLAGS.images_per_sec)
      return
    if not _FLAGS.workdir:
      raise app.UsageError("--workdir is required (unless --dry_run).")
    status = run_sweep(_FLAGS.config, _FLAGS.workdir, only=_FLAGS.cells,
                       timeout=_FLAGS.cell_timeout)
  except (SweepError, config_lib.ConfigError,
          workdir_lib.WorkdirError) as e:
    sys.exit(f"error: {e}")
  failed = [n for n, s in status.items() if s["status"] != "done"]
  if failed:
    print(f"{len(failed)} cell(s) failed: {failed}; see sweep_status.json",
          flush=True)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
