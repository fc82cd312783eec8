"""Per-domain frozen-encoder evaluation (kNN + linear probe) and its report.

Synopsis::

  results = evaluate_domains(
      [{"name": "cifar10", "train_images": xtr, "train_labels": ytr,
        "test_images": xte, "test_labels": yte, "num_classes": 10}, ...],
      embed_fn, {"probe_steps": 5000})
  print(format_table(results))
  write_results(results, workdir / "eval_results.json")

MDSSL reports one probe per domain and the average top-1 over domains
(METHODS.md §2.9); the kNN classifier follows §6.2.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any, Callable

from absl import logging
import jax
import numpy as np

from mdssl_jax.evaluation.features import extract_features
from mdssl_jax.evaluation.knn import knn_accuracy
from mdssl_jax.evaluation.linear_probe import train_linear_probe

# Accepted `eval_cfg` keys and their defaults (probe: MDSSL Table 7).
EVAL_DEFAULTS: dict[str, Any] = {
    "knn_k": 20,
    "knn_temperature": 0.07,
    "knn_chunk_size": None,
    "probe_steps": 30_000,
    "probe_batch_size": 1024,
    "probe_lr": 0.1,
    "probe_momentum": 0.9,
    "probe_nesterov": False,
    "probe_weight_decay": 0.0,
    "probe_schedule": "constant",
    "probe_standardize": True,
    "probe_seed": 0,
    "feature_batch_size": 256,
}
_DOMAIN_KEYS = ("name", "train_images", "train_labels", "test_images",
                "test_labels", "num_classes")


def _resolve_config(eval_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
  """Merges `eval_cfg` (dict or ConfigDict) over EVAL_DEFAULTS."""
  if eval_cfg is None:
    given = {}
  elif hasattr(eval_cfg, "to_dict"):  # ml_collections.ConfigDict
    given = eval_cfg.to_dict()
  else:
    given = dict(eval_cfg)
  unknown = sorted(set(given) - set(EVAL_DEFAULTS))
  if unknown:
    raise ValueError(
        f"Unknown eval_cfg keys {unknown}; accepted keys are "
        f"{sorted(EVAL_DEFAULTS)}. Pass only the evaluation sub-config.")
  return {**EVAL_DEFAULTS, **given}


def _check_domain(i: int, domain: Mapping[str, Any]) -> None:
  missing = [k for k in _DOMAIN_KEYS if k not in domain]
  if missing:
    raise ValueError(f"per_domain[{i}] lacks keys {missing}; each item needs "
                     f"{list(_DOMAIN_KEYS)}.")
  if int(domain["num_classes"]) < 2:
    raise ValueError(f"Domain {domain['name']!r}: num_classes must be >= 2, "
                     f"got {domain['num_classes']}.")


def _evaluate_one(domain: Mapping[str, Any], embed_fn, cfg: dict[str, Any],
                  sharding) -> dict[str, Any]:
  """kNN and linear-probe metrics for one domain."""
  num_classes = int(domain["num_classes"])
  start = time.perf_counter()

  def extract(images):
    return extract_features(embed_fn, images,
                            batch_size=cfg["feature_batch_size"],
                            sharding=sharding)

  train_f = extract(domain["train_images"])
  test_f = extract(domain["test_images"])
  t_features = time.perf_counter() - start
  knn = knn_accuracy(
      train_f, domain["train_labels"], test_f, domain["test_labels"],
      num_classes=num_classes, k=cfg["knn_k"],
      temperature=cfg["knn_temperature"], chunk_size=cfg["knn_chunk_size"])
  probe = train_linear_probe(
      train_f, domain["train_labels"], test_f, domain["test_labels"],
      num_classes=num_classes, steps=cfg["probe_steps"],
      batch_size=cfg["probe_batch_size"], lr=cfg["probe_lr"],
      momentum=cfg["probe_momentum"], nesterov=cfg["probe_nesterov"],
      weight_decay=cfg["probe_weight_decay"], schedule=cfg["probe_schedule"],
      standardize=cfg["probe_standardize"], seed=cfg["probe_seed"])
  logging.info("eval %s: features %.1fs, total %.1fs, knn@1 %.2f, probe@1 "
               "%.2f", domain["name"], t_features,
               time.perf_counter() - start, knn["top1"], probe["top1"])
  return {
      "knn_top1": knn["top1"],
      "knn_top5": knn.get("top5"),
      "probe_top1": probe["top1"],
      "probe_top5": probe.get("top5"),
      "probe_train_top1": probe["train_top1"],
      "probe_final_loss": probe["final_loss"],
      "n_train": int(train_f.shape[0]),
      "n_test": int(test_f.shape[0]),
      "feature_dim": int(train_f.shape[1]),
      "num_classes": num_classes,
      "chance": 100.0 / num_classes,
  }


def evaluate_domains(
    per_domain: Sequence[Mapping[str, Any]],
    embed_fn: Callable[[jax.Array], jax.Array],
    eval_cfg: Mapping[str, Any] | None = None,
    *,
    sharding: jax.sharding.NamedSharding | None = None,
) -> dict[str, Any]:
  """Evaluates a frozen encoder on every domain with kNN and a linear probe.

  Args:
    per_domain: dicts {"name", "train_images" [n, H, W, 3], "train_labels"
      [n], "test_images" [m, H, W, 3], "test_labels" [m], "num_classes"},
      images already eval-transformed float32.
    embed_fn: frozen encoder in eval mode, images [b, H, W, 3] -> [b, F].
    eval_cfg: dict or ConfigDict with any of the keys of `EVAL_DEFAULTS`
      (knn_k, knn_temperature, knn_chunk_size, probe_steps,
      probe_batch_size, probe_lr, probe_momentum, probe_nesterov,
      probe_weight_decay, probe_schedule, probe_standardize, probe_seed,
      feature_batch_size); missing keys take the defaults.
    sharding: optional batch sharding passed to `extract_features`.

  Returns:
    {"domains": {name: {"knn_top1", "knn_top5", "probe_top1", "probe_top5",
     "probe_train_top1", "probe_final_loss", "n_train", "n_test",
     "feature_dim", "num_classes", "chance"}},
     "mean": {"knn_top1", "probe_top1", "chance"} (+ "knn_top5",
     "probe_top5" when every domain has >= 5 classes),
     "eval_config": the resolved settings}.
    Accuracies are percentages; top-5 is None for domains with < 5 classes.

  Raises:
    ValueError: on an empty or malformed `per_domain`, duplicate names or
      unknown config keys (and whatever the evaluators raise).
  """
  cfg = _resolve_config(eval_cfg)
  if not per_domain:
    raise ValueError("per_domain is empty; pass at least one domain.")
  names = [d.get("name") for d in per_domain]
  if len(set(names)) != len(names):
    raise ValueError(f"Domain names must be unique, got {names}.")
  for i, domain in enumerate(per_domain):
    _check_domain(i, domain)

  domains = {
      str(d["name"]): _evaluate_one(d, embed_fn, cfg, sharding)
      for d in per_domain
  }
  mean_keys = ["knn_top1", "probe_top1", "chance"]
  if all(r["knn_top5"] is not None for r in domains.values()):
    mean_keys += ["knn_top5", "probe_top5"]
  mean = {k: float(np.mean([r[k] for r in domains.values()]))
          for k in mean_keys}
  return {"domains": domains, "mean": mean, "eval_config": cfg}


def _fmt(value: Any) -> str:
  return "-" if value is None else f"{value:.2f}"


def format_table(results: Mapping[str, Any]) -> str:
  """Renders `evaluate_domains` results as a fixed-width text table.

  Args:
    results: dict with "domains" and "mean" as returned by
      `evaluate_domains` (or loaded back from `write_results`' JSON).

  Returns:
    Multi-line string: a header, one row per domain, a rule and a mean row.
    Missing values (e.g. top-5 with < 5 classes) print as "-".
  """
  columns = [("classes", "num_classes", "d"), ("n_train", "n_train", "d"),
             ("n_test", "n_test", "d"), ("chance", "chance", "f"),
             ("kNN@1", "knn_top1", "f"), ("kNN@5", "knn_top5", "f"),
             ("probe@1", "probe_top1", "f"), ("probe@5", "probe_top5", "f")]
  domains = results["domains"]
  name_w = max([len("domain"), len("mean")] + [len(n) for n in domains])
  col_w = 8

  def row(name: str, values: Mapping[str, Any]) -> str:
    cells = []
    for _, key, kind in columns:
      v = values.get(key)
      cells.append("-" if v is None else (str(v) if kind == "d" else _fmt(v)))
    return (f"{name:<{name_w}}  " +
            "  ".join(f"{c:>{col_w}}" for c in cells)).rstrip()

  header = (f"{'domain':<{name_w}}  " +
            "  ".join(f"{title:>{col_w}}" for title, _, _ in columns))
  lines = [header, "-" * len(header)]
  lines += [row(name, r) for name, r in domains.items()]
  lines += ["-" * len(header), row("mean", results["mean"])]
  return "\n".join(lines)


def _to_jsonable(obj: Any) -> Any:
  """NumPy/JAX scalars and arrays to Python; non-finite floats to None."""
  if isinstance(obj, Mapping):
    return {str(k): _to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_to_jsonable(v) for v in obj]
  if isinstance(obj, (np.ndarray, jax.Array)):
    return _to_jsonable(np.asarray(obj).tolist())
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
  text = json.dumps(_to_jsonable(results), indent=2, allow_nan=False) + "\n"
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory,
                             prefix=f".{os.path.basename(path)}.",
                             suffix=".tmp")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)  # mkstemp creates 0600.
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
