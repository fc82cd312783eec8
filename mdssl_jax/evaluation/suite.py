"""The evaluation suite: every `config.evals` entry on every domain.

Synopsis::

  extractor = FeatureExtractor(method.features, batch_size=256)  # per run
  per_domain = pipeline.make_eval_arrays(config, domains, max_train=...,
                                         max_test=...)
  results = run_suite(config, extractor, params, batch_stats, per_domain)
  results["domains"]["digits"]["knn_top1"], results["mean"]["probe_top1"]

Features are extracted once per domain and split (or loaded from a
`feature_cache.FeatureCache`); each evaluator (resolved by
`config.evals.<name>.type` through `registry`) then gets an
:class:`EvalContext` and returns its metrics, stored as
`<name>_<metric>`. Domains marked `"unseen": True` (not trained on) are
averaged separately from the training domains.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging
import ml_collections
import numpy as np

from mdssl_jax.evaluation import registry
from mdssl_jax.evaluation import report
from mdssl_jax.evaluation.feature_cache import FeatureCache
from mdssl_jax.evaluation.features import FeatureExtractor

_DOMAIN_KEYS = ("name", "train_images", "train_labels", "test_images",
                "test_labels", "num_classes")
# Per-domain keys the suite adds besides the evaluators' metrics.
_INFO_KEYS = ("n_train", "n_test", "feature_dim", "num_classes", "chance",
              "unseen")


@dataclasses.dataclass(frozen=True, eq=False)
class EvalContext:
  """One domain as an evaluator's `run(cfg, data)` sees it.

  Frozen-feature evaluators read the features and labels; evaluators that
  re-encode images (augmented probes, fine-tuning) use the images, `encode`
  or `extractor.features_fn` with `params` / `batch_stats`.

  Attributes:
    name: domain name.
    num_classes: C (labels lie in [0, C)).
    train_features: [n, F] float32 features of `train_images`.
    train_labels: [n] int labels.
    test_features: [m, F] float32 features of `test_images`.
    test_labels: [m] int labels.
    train_images: [n, H, W, 3] float32 eval-transformed images.
    test_images: [m, H, W, 3] float32.
    extractor: the run's feature extractor.
    params: the evaluated encoder parameters.
    batch_stats: their BatchNorm statistics.
    subsets_dir: directory where label-fraction subsets are written once
      and read back (`label_fractions`); None: computed, not stored.
  """
  name: str
  num_classes: int
  train_features: np.ndarray
  train_labels: np.ndarray
  test_features: np.ndarray
  test_labels: np.ndarray
  train_images: np.ndarray
  test_images: np.ndarray
  extractor: FeatureExtractor
  params: Any
  batch_stats: Any
  subsets_dir: str | None = None

  def encode(self, images: np.ndarray) -> np.ndarray:
    """Features [k, F] of `images` [k, H, W, 3] under the evaluated params."""
    return self.extractor(self.params, self.batch_stats, images)


def _check_domains(per_domain: Sequence[Mapping[str, Any]]) -> None:
  if not per_domain:
    raise ValueError("per_domain is empty; pass at least one domain.")
  for i, domain in enumerate(per_domain):
    missing = [k for k in _DOMAIN_KEYS if k not in domain]
    if missing:
      raise ValueError(f"per_domain[{i}] lacks keys {missing}; each item "
                       f"needs {list(_DOMAIN_KEYS)}.")
    if "unseen" in domain and not isinstance(domain["unseen"], bool):
      raise ValueError(f"Domain {domain['name']!r}: 'unseen' must be True "
                       f"or False, got {domain['unseen']!r}.")
    if int(domain["num_classes"]) < 2:
      raise ValueError(f"Domain {domain['name']!r}: num_classes must be >= "
                       f"2, got {domain['num_classes']}.")
  names = [d["name"] for d in per_domain]
  if len(set(names)) != len(names):
    raise ValueError(f"Domain names must be unique, got {names}.")


def _features(domain, split, extractor, params, batch_stats,
              cache: FeatureCache | None) -> np.ndarray:
  images = domain[f"{split}_images"]
  if cache is None:
    return extractor(params, batch_stats, images)
  return cache.get(domain["description"], split,
                   lambda: extractor(params, batch_stats, images),
                   num_rows=len(images))


def _evaluate_domain(domain: Mapping[str, Any], evaluators, extractor,
                     params, batch_stats, cache: FeatureCache | None,
                     subsets_dir: str | None
                     ) -> tuple[dict[str, Any], dict[str, float]]:
  """Extracts one domain's features and runs every evaluator on them.

  Returns:
    (results row, seconds per phase: "features" and each evaluator name).
  """
  num_classes = int(domain["num_classes"])
  start = time.perf_counter()
  train_f = _features(domain, "train", extractor, params, batch_stats, cache)
  test_f = _features(domain, "test", extractor, params, batch_stats, cache)
  seconds = {"features": time.perf_counter() - start}
  data = EvalContext(
      name=str(domain["name"]), num_classes=num_classes,
      train_features=train_f, train_labels=domain["train_labels"],
      test_features=test_f, test_labels=domain["test_labels"],
      train_images=domain["train_images"], test_images=domain["test_images"],
      extractor=extractor, params=params, batch_stats=batch_stats,
      subsets_dir=subsets_dir)
  row = {}
  for name, cfg, module in evaluators:
    t0 = time.perf_counter()
    for metric, value in module.run(cfg, data).items():
      key = f"{name}_{metric}"
      if key in row or key in _INFO_KEYS:
        raise ValueError(f"Evaluator {name!r}: metric key {key!r} clashes "
                         "with another result; rename the evaluator.")
      row[key] = value
    seconds[name] = time.perf_counter() - t0
  row.update(n_train=int(train_f.shape[0]), n_test=int(test_f.shape[0]),
             feature_dim=int(train_f.shape[1]), num_classes=num_classes,
             chance=100.0 / num_classes,
             unseen=bool(domain.get("unseen", False)))
  firsts = [f"{name}_{module.COLUMNS[0][0]}" for name, _, module in evaluators]
  logging.info("eval %s: features %.1fs, total %.1fs, %s", data.name,
               seconds["features"], time.perf_counter() - start,
               ", ".join(f"{k} {report.fmt(row[k])}" for k in firsts))
  return row, seconds


def _mean(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]
          ) -> dict[str, float]:
  """Per key, the mean over `rows` (keys some row lacks are left out)."""
  mean = {}
  for key in keys:
    values = [r.get(key) for r in rows]
    if rows and all(v is not None for v in values):
      mean[key] = float(np.mean(values))
  return mean


def run_suite(config: ml_collections.ConfigDict, extractor: FeatureExtractor,
              params: Any, batch_stats: Any,
              per_domain: Sequence[Mapping[str, Any]], *,
              feature_cache: FeatureCache | None = None,
              subsets_dir: str | None = None) -> dict[str, Any]:
  """Evaluates frozen features of every domain with every `config.evals`.

  Args:
    config: validated config; reads `config.evals` (name -> {type, keys of
      the type}; they run in name order, a ConfigDict's key order) and
      records `config.eval` and `config.evals`.
    extractor: the run's `FeatureExtractor` (compiled once per run).
    params: encoder parameters passed to the extractor.
    batch_stats: their BatchNorm statistics.
    per_domain: what `pipeline.make_eval_arrays` returns: dicts {"name",
      "train_images" [n, H, W, 3], "train_labels" [n], "test_images" [m,
      H, W, 3], "test_labels" [m], "num_classes"}, images eval-transformed;
      optionally "unseen" (bool, default False: a training domain) and
      "description" (`feature_cache.describe_domain`'s dict; required with
      `feature_cache`).
    feature_cache: load / store each domain's features there (keyed by its
      step, "description" and split); None: always extract.
    subsets_dir: `EvalContext.subsets_dir` of every domain.

  Returns:
    {"domains": {name: {"<evaluator>_<metric>" for each evaluator's
     metrics, "n_train", "n_test", "feature_dim", "num_classes",
     "chance", "unseen"}},
     "mean": {"<evaluator>_<metric>" for each table column (evaluator
     `COLUMNS`) that every training domain has, "chance"} over the
     training (not unseen) domains, {} when none was evaluated,
     "mean_unseen": the same over the unseen domains ({} when none),
     "data": {name: the domain's "description"} (domains that have one),
     "seconds": {name: {"features": s, "<evaluator>": s}},
     "eval_config": {"eval": config.eval, "evals": config.evals} as dicts}.
    For the default suite the domain keys are knn_top1, knn_top5,
    probe_top1, probe_top5, probe_train_top1, probe_final_loss (top-5 None
    for domains with < 5 classes). Accuracies are percentages.

  Raises:
    ValueError: on an empty or malformed `per_domain`, duplicate names, an
      unknown evaluator type, clashing metric keys, a `feature_cache`
      without domain descriptions (and whatever the evaluators raise).
  """
  _check_domains(per_domain)
  if feature_cache is not None:
    lacking = [d["name"] for d in per_domain if "description" not in d]
    if lacking:
      raise ValueError(f"Domains {lacking} have no 'description'; a feature "
                       "cache needs one per domain (feature_cache."
                       "describe_domain).")
  evaluators = [(name, cfg, registry.get(cfg.type))
                for name, cfg in config.evals.items()]
  domains, seconds = {}, {}
  for d in per_domain:
    domains[str(d["name"])], seconds[str(d["name"])] = _evaluate_domain(
        d, evaluators, extractor, params, batch_stats, feature_cache,
        subsets_dir)
  evals = config.evals.to_dict()
  keys = [k for _, k in report.metric_columns(evals)] + ["chance"]
  seen = [r for r in domains.values() if not r["unseen"]]
  unseen = [r for r in domains.values() if r["unseen"]]
  return {"domains": domains, "mean": _mean(seen, keys),
          "mean_unseen": _mean(unseen, keys),
          "data": {str(d["name"]): d["description"] for d in per_domain
                   if "description" in d},
          "seconds": seconds,
          "eval_config": {"eval": config.eval.to_dict(), "evals": evals}}
