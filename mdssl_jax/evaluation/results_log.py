"""The evaluation log of a workdir: `eval/results.jsonl` and `results.csv`.

Synopsis::

  results = suite.run_suite(config, extractor, params, batch_stats, arrays)
  results_log.append(workdir, results, step=60, suite_name="default",
                     suite_hash=suite_config.suite_hash(suite))   # -> rows
  rows = results_log.read(workdir)   # every row ever appended, in order

Each evaluation appends one JSON row per evaluator × domain (× checkpoint
step, one call per step) to `<workdir>/eval/results.jsonl`: time, step,
suite, suite_hash, evaluator, evaluator_type, evaluator_config, domain,
unseen, the data description (source, n_train, n_test, num_classes,
image_size, feature_dim, chance, and the full `data` description when the
suite had one) and the evaluator's metrics by their own names (top1,
top5, ...). `results.csv` is then regenerated from the whole log,
atomically, with the union of every row's columns (nested values as JSON
text), so rows with new metrics stay readable.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
from collections.abc import Mapping
from typing import Any

from absl import logging

from mdssl_jax import atomic_file
from mdssl_jax.evaluation import report

JSONL = os.path.join("eval", "results.jsonl")
CSV = os.path.join("eval", "results.csv")
_INFO = ("n_train", "n_test", "num_classes", "feature_dim", "chance")


def _metrics(row: Mapping[str, Any], name: str,
             names: list[str]) -> dict[str, Any]:
  """`name`'s metrics in a domain row: its `<name>_<metric>` keys (a key
  belongs to the longest evaluator name it starts with)."""
  out = {}
  for key, value in row.items():
    owners = [n for n in names if key.startswith(n + "_")]
    if owners and max(owners, key=len) == name:
      out[key[len(name) + 1:]] = value
  return out


def rows_of(results: Mapping[str, Any], *, step: int, suite_name: str,
            suite_hash: str) -> list[dict[str, Any]]:
  """The log rows of one `run_suite` result (see the module doc)."""
  evals = results["eval_config"]["evals"]
  names = list(evals)
  now = datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec="seconds")
  rows = []
  for domain, row in results["domains"].items():
    data = results.get("data", {}).get(domain)
    for name, entry in evals.items():
      out = {"time": now, "step": int(step), "suite": suite_name,
             "suite_hash": suite_hash, "evaluator": name,
             "evaluator_type": entry["type"],
             "evaluator_config": {k: v for k, v in entry.items()
                                  if k != "type"},
             "domain": domain, "unseen": bool(row.get("unseen", False))}
      if data is not None:
        out["source"] = data["domain"]["source"]
        out["image_size"] = data["eval_size"]
      out.update({k: row[k] for k in _INFO if k in row})
      out.update(_metrics(row, name, names))
      if data is not None:
        out["data"] = data
      rows.append(report.to_jsonable(out))
  return rows


def read(workdir: str) -> list[dict[str, Any]]:
  """Every row of `<workdir>/eval/results.jsonl` (empty when absent).

  A last line cut short (an interrupted append) is skipped with a warning.

  Raises:
    ValueError: a line other than the last is not JSON.
  """
  path = os.path.join(workdir, JSONL)
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  rows = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      rows.append(json.loads(line))
    except ValueError as e:
      if i == len(lines) - 1:
        logging.warning("%s: skipping a truncated last line.", path)
        break
      raise ValueError(f"{path} line {i + 1} is not JSON ({e}); remove or "
                       "fix that line.") from None
  return rows


def _cell(value: Any) -> Any:
  if isinstance(value, (dict, list)):
    return json.dumps(value, sort_keys=True)
  return "" if value is None else value


def write_csv(workdir: str) -> str:
  """Regenerates `<workdir>/eval/results.csv` from the jsonl, atomically.

  Returns:
    The csv path.
  """
  rows = read(workdir)
  columns = list(dict.fromkeys(k for row in rows for k in row))
  text = io.StringIO()
  writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
  writer.writeheader()
  for row in rows:
    writer.writerow({k: _cell(row.get(k)) for k in columns})
  path = os.path.join(workdir, CSV)
  with atomic_file.atomic_open(path) as f:
    f.write(text.getvalue())
  return path


def append(workdir: str, results: Mapping[str, Any], *, step: int,
           suite_name: str, suite_hash: str) -> int:
  """Appends one evaluation's rows to the log and regenerates the csv.

  Args:
    workdir: the run's workdir (`eval/` is created inside it).
    results: `suite.run_suite`'s results for one checkpoint.
    step: that checkpoint's step.
    suite_name: recorded in every row (e.g. "default", "training").
    suite_hash: the settings' hash (`suite_config.suite_hash`).

  Returns:
    Rows written: evaluators × domains.
  """
  rows = rows_of(results, step=step, suite_name=suite_name,
                 suite_hash=suite_hash)
  text = "".join(json.dumps(r, allow_nan=False) + "\n"
                 for r in rows)
  path = os.path.join(workdir, JSONL)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "a", encoding="utf-8") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  write_csv(workdir)
  return len(rows)
