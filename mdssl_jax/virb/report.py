"""The battery's outputs: results.json, results.csv, summary.md and PNGs.

Synopsis::

  paths = report.write_report(results, "./virb")

`results` is `battery.run_battery`'s dict. Written into the output
directory: results.json (everything), results.csv (one row per task ×
encoder: raw and normalised score), summary.md (raw scores with the chance
baseline, normalised scores, per-category means, the Spearman matrix),
scores.png (per-task bars per encoder) and spearman.png (the correlation
heatmap).
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

# pylint: disable=g-import-not-at-top
from mdssl_jax.atomic_file import atomic_open
from mdssl_jax.evaluation import plots
# pylint: enable=g-import-not-at-top

_DPI = 100


def _fmt(value: float) -> str:
  return "nan" if value is None or not np.isfinite(value) else f"{value:.3f}"


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def summary_markdown(results: dict[str, Any]) -> str:
  """The Markdown summary of a battery run (see the module docstring)."""
  encs = results["encoders"]
  tasks = results["tasks"]
  raw = [[t["name"], t["category"], t["metric"], _fmt(t["chance"])]
         + [_fmt(t["scores"][e]) for e in encs] for t in tasks]
  norm = [[t["name"]] + [_fmt(t["normalised"][e]) for e in encs]
          for t in tasks]
  cats = [[c] + [_fmt(v[e]) for e in encs]
          for c, v in results["category_means"].items()]
  names = [t["name"] for t in tasks]
  spear = [[a] + [_fmt(v) for v in row]
           for a, row in zip(names, results["spearman"])]
  parts = [
      "# ViRB end-task battery",
      f"Encoders: {', '.join(encs)} (baseline: {results['baseline']}). "
      f"Wall clock: {results['seconds']:.0f} s.",
      "## Scores (higher is better: top-1, mIoU, -L1)",
      _markdown_table(["task", "category", "metric", "chance"] + encs, raw),
      "## Normalised scores ((score - baseline) / std across encoders)",
      _markdown_table(["task"] + encs, norm),
      "## Per-category mean normalised score",
      _markdown_table(["category"] + encs, cats),
      "## Spearman correlation between tasks (across encoders)",
      _markdown_table(["task"] + names, spear),
  ]
  return "\n\n".join(parts) + "\n"


def score_bars(results: dict[str, Any], path: str) -> str:
  """One panel per task: a bar per encoder, the chance level dashed."""
  encs, tasks = results["encoders"], results["tasks"]
  cols = min(4, len(tasks))
  rows = -(-len(tasks) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows),
                           squeeze=False)
  for ax, task in zip(axes.ravel(), tasks):
    values = [task["scores"][e] for e in encs]
    ax.bar(range(len(encs)), values, color=plt.cm.tab10.colors[:len(encs)])
    ax.axhline(task["chance"], color="black", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(encs)), encs, rotation=30, ha="right",
                  fontsize=7)
    ax.set_title(f"{task['name']} ({task['metric']})", fontsize=9)
    if task["metric"] != "neg_l1":
      ax.set_ylim(0, 1)
  for ax in axes.ravel()[len(tasks):]:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=_DPI)
  plt.close(fig)
  return path


def write_csv(results: dict[str, Any], path: str) -> str:
  """One row per task × encoder (task, category, head, metric, chance,
  encoder, score, normalised, final_train_loss)."""
  header = ["task", "category", "head", "metric", "chance", "encoder",
            "score", "normalised", "final_train_loss"]
  with atomic_open(path) as f:
    writer = csv.writer(f)
    writer.writerow(header)
    for t in results["tasks"]:
      for e in results["encoders"]:
        writer.writerow([t["name"], t["category"], t["head"], t["metric"],
                         t["chance"], e, t["scores"][e], t["normalised"][e],
                         t["train_loss"][e]])
  return path


def write_report(results: dict[str, Any], output_dir: str) -> dict[str, str]:
  """Writes every output of a battery run into `output_dir`.

  Args:
    results: `battery.run_battery`'s dict.
    output_dir: created if missing.

  Returns:
    {"json", "csv", "markdown", "bars", "spearman"}: the written paths.
  """
  os.makedirs(output_dir, exist_ok=True)
  paths = {key: os.path.join(output_dir, name) for key, name in (
      ("json", "results.json"), ("csv", "results.csv"),
      ("markdown", "summary.md"), ("bars", "scores.png"),
      ("spearman", "spearman.png"))}
  with atomic_open(paths["json"]) as f:
    json.dump(results, f, indent=1, allow_nan=True)
  write_csv(results, paths["csv"])
  with atomic_open(paths["markdown"]) as f:
    f.write(summary_markdown(results))
  score_bars(results, paths["bars"])
  names = [t["name"] for t in results["tasks"]]
  plots.heatmap(np.asarray(results["spearman"], np.float64),
                paths["spearman"], rows=names, cols=names,
                title="Spearman correlation of task scores across encoders",
                vmin=-1.0, vmax=1.0, cmap="coolwarm")
  return paths
