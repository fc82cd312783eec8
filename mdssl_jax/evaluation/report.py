"""Evaluation results: the per-domain table and the JSON file.

Synopsis::

  results = suite.run_suite(config, extractor, params, batch_stats, per_domain)
  print(format_table(results))
  write_results(results, workdir / "eval_results.json")

Results hold one row per domain (`<evaluator name>_<metric>` keys plus the
domain's sizes and chance level), the mean over domains (MDSSL reports the
average top-1 over domains, METHODS.md §2.9) and the settings used.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from mdssl_jax import atomic_file
from mdssl_jax.evaluation import registry

# Results written before `config.evals` existed hold a flat "eval_config";
# their metric keys are those of this suite.
_LEGACY_EVALS = {"knn": {"type": "knn"}, "probe": {"type": "linear_probe"}}
_COL_W = 8


def metric_columns(evals: Mapping[str, Mapping[str, Any]]
                   ) -> list[tuple[str, str]]:
  """(title, results key) of the metric columns of a suite's table.

  Each evaluator contributes its type's `COLUMNS`; titles are the type's
  `LABEL` plus the column suffix ("kNN@1"), or the evaluator's name plus the
  suffix when the suite holds several evaluators of that type.

  Args:
    evals: `config.evals`-like mapping, name -> {"type": ..., ...}.
  """
  types = [entry["type"] for entry in evals.values()]
  columns = []
  for name, entry in evals.items():
    module = registry.get(entry["type"])
    label = module.LABEL if types.count(entry["type"]) == 1 else name
    columns += [(label + suffix, f"{name}_{metric}")
                for metric, suffix in module.COLUMNS]
  return columns


def fmt(value: Any) -> str:
  """A metric as printed in tables and logs: 2 decimals, "-" for None."""
  return "-" if value is None else f"{value:.2f}"


def format_table(results: Mapping[str, Any]) -> str:
  """Renders suite results as a fixed-width text table.

  Args:
    results: dict with "domains", "mean" and "eval_config" as returned by
      `suite.run_suite` (or loaded back from `write_results`' JSON), and
      optionally "mean_unseen".

  Returns:
    Multi-line string: a header, one row per domain, a rule and a mean row;
    one column per metric column of each evaluator (`metric_columns`).
    When some domains are unseen (not trained on), their names end in "*"
    and the mean rows are "mean (seen)" (training domains) and "mean
    (unseen)", followed by a footnote. Missing values (e.g. top-5 with < 5
    classes) print as "-".
  """
  evals = results.get("eval_config", {}).get("evals", _LEGACY_EVALS)
  columns = [("classes", "num_classes", "d"), ("n_train", "n_train", "d"),
             ("n_test", "n_test", "d"), ("chance", "chance", "f")]
  columns += [(title, key, "f") for title, key in metric_columns(evals)]
  widths = [max(_COL_W, len(title)) for title, _, _ in columns]
  domains = results["domains"]
  any_unseen = any(r.get("unseen") for r in domains.values())
  names = {n: n + "*" if r.get("unseen") else n for n, r in domains.items()}
  means = ([("mean (seen)", results["mean"]),
            ("mean (unseen)", results["mean_unseen"])] if any_unseen
           else [("mean", results["mean"])])
  name_w = max([len("domain")] + [len(t) for t, _ in means] +
               [len(n) for n in names.values()])

  def row(name: str, values: Mapping[str, Any]) -> str:
    cells = []
    for _, key, kind in columns:
      v = values.get(key)
      cells.append("-" if v is None else (str(v) if kind == "d" else fmt(v)))
    return (f"{name:<{name_w}}  " +
            "  ".join(f"{c:>{w}}" for c, w in zip(cells, widths))).rstrip()

  header = (f"{'domain':<{name_w}}  " + "  ".join(
      f"{title:>{w}}" for (title, _, _), w in zip(columns, widths)))
  lines = [header, "-" * len(header)]
  # Training domains first, then the unseen ones.
  order = sorted(domains, key=lambda n: bool(domains[n].get("unseen")))
  lines += [row(names[n], domains[n]) for n in order]
  lines.append("-" * len(header))
  for title, values in means:
    lines.append(row(title, values) if values else
                 f"{title:<{name_w}}  (no training domain evaluated)")
  if any_unseen:
    lines.append("* unseen: not a training domain of this run.")
  return "\n".join(lines)


def to_jsonable(obj: Any) -> Any:
  """NumPy/JAX scalars and arrays to Python; non-finite floats to None."""
  if isinstance(obj, Mapping):
    return {str(k): to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_jsonable(v) for v in obj]
  if isinstance(obj, (np.ndarray, jax.Array)):
    return to_jsonable(np.asarray(obj).tolist())
  if isinstance(obj, np.generic):
    obj = obj.item()
  if isinstance(obj, float) and not math.isfinite(obj):
    return None  # Strict JSON has no NaN/inf.
  return obj


def write_results(results: Mapping[str, Any], path: str | os.PathLike) -> None:
  """Writes `results` as JSON, atomically.

  The JSON text is fully built first (so an unserialisable value raises
  before the disk is touched), written to a temporary file in the same
  directory, fsync'ed and moved over `path` with `os.replace`: readers see
  either the old complete file or the new complete file, never a partial
  one. Non-finite floats are written as null.

  Args:
    results: JSON-like nested dict (NumPy scalars/arrays are converted).
    path: destination file on a local filesystem; parent dirs are created.

  Raises:
    TypeError: if a value cannot be represented in JSON.
  """
  text = json.dumps(to_jsonable(results), indent=2, allow_nan=False) + "\n"
  with atomic_file.atomic_open(path) as f:
    f.write(text)
