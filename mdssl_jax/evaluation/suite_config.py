"""Eval-suite configs: which evaluators run on which domains.

Synopsis (a `configs/eval/<suite>.py` file)::

  from mdssl_jax.evaluation import suite_config

  def get_config():
    suite = suite_config.base_suite("default")
    suite.evals.knn20 = suite_config.evaluator("knn", k=20)
    suite.unseen_domains = [dict(name="mnist", source="npz",
                                 path="../shared/data/mnist")]
    return suite

  errors = suite_config.validate(suite)   # cheap: no JAX, TF or data read
  suite_config.suite_hash(suite)          # e.g. "3f9c0a1b2d4e"

A suite is evaluated on a trained workdir by `python -m mdssl_jax.evaluate
--workdir=RUN --config=configs/eval/<suite>.py`. Keys:

* ``name``: recorded in every results row;
* ``evals``: name -> evaluator entry, exactly like `config.evals` (built
  with :func:`evaluator`); empty: the workdir's own `config.evals`;
* ``eval``: ``feature_batch_size``, ``max_train_per_domain``,
  ``max_test_per_domain``; None: the workdir's `config.eval` value;
* ``training_domains``: evaluate on the run's training domains;
* ``unseen_domains``: extra domain entries (the schema of
  `config.data.domains` entries), loaded and eval-transformed with the
  training config's image size, resize mode, mean and std, and reported as
  unseen;
* ``cache_features``: cache extracted features under `RUN/eval/features/`;
* ``label_subsets_dir``: where label-fraction subsets are written once;
  "": `RUN/eval/label_subsets`.

Light: imports no TensorFlow, JAX or Flax.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import ml_collections
from ml_collections import config_dict

from mdssl_jax.evaluation import registry

# Keys of `suite.eval`; each overrides the workdir's `config.eval` value.
EVAL_KEYS = ("feature_batch_size", "max_train_per_domain",
             "max_test_per_domain")


def base_suite(name: str) -> ml_collections.ConfigDict:
  """A suite with every key: no evaluators of its own, training domains.

  Args:
    name: the suite's name (recorded in every results row).

  Returns:
    ConfigDict with the keys listed in the module doc; `eval` values are
    typed placeholders (None), so `--config.eval.max_test_per_domain=500`
    parses as an integer.
  """
  return ml_collections.ConfigDict({
      "name": name,
      "evals": ml_collections.ConfigDict(),
      "eval": ml_collections.ConfigDict(
          {key: config_dict.placeholder(int) for key in EVAL_KEYS}),
      "training_domains": True,
      "unseen_domains": [],
      "cache_features": True,
      "label_subsets_dir": "",
  })


def evaluator(type_name: str, **overrides: Any) -> ml_collections.ConfigDict:
  """One `evals` entry: the type's defaults with `overrides` applied.

  Same as `config_lib.evaluator` (re-exported so suite files import one
  module).

  Raises:
    ValueError: unknown type or keys.
  """
  from mdssl_jax import config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.evaluator(type_name, **overrides)


def _evaluator_errors(evals: Any) -> list[str]:
  if not isinstance(evals, ml_collections.ConfigDict):
    return ["evals must be a dict of named evaluators, e.g. "
            "suite.evals.knn20 = suite_config.evaluator('knn', k=20)."]
  errors = []
  for name, entry in evals.items():
    etype = entry.get("type") if hasattr(entry, "get") else None
    if etype not in registry.available():
      errors.append(f"evals.{name}.type={etype!r}; use one of "
                    f"{registry.available()}.")
      continue
    keys = set(registry.get(etype).DEFAULTS) | {"type"}
    missing = sorted(keys - set(entry))
    unknown = sorted(set(entry) - keys)
    if missing or unknown:
      errors.append(f"evals.{name}: missing keys {missing}, unknown keys "
                    f"{unknown}; build it with suite_config.evaluator("
                    f"{etype!r}, ...).")
      continue
    errors += [f"evals.{name}: {e}"
               for e in registry.get(etype).validate(entry)]
  return errors


def _domain_errors(suite: ml_collections.ConfigDict) -> list[str]:
  # Here, not at the top: the data package is heavier than the schema.
  from mdssl_jax.data import sources  # pylint: disable=g-import-not-at-top
  domains = list(suite.unseen_domains)
  errors = []
  for i, domain in enumerate(domains):
    found = sources.domain_config_errors(domain)
    errors += [f"unseen_domains[{i}]: {e}" for e in found]
    if not found:
      module = sources.get(domain["source"])
      resolved = sources.resolve_domain(domain)
      errors += [f"unseen_domains[{i}] {domain['name']!r}: {e}"
                 for e in module.check_exists(resolved)]
  names = [d.get("name") for d in domains if hasattr(d, "get")]
  duplicates = sorted({n for n in names if n and names.count(n) > 1})
  if duplicates:
    errors.append(f"unseen_domains has duplicate names {duplicates}; give "
                  "every domain a distinct 'name'.")
  if not suite.training_domains and not domains:
    errors.append("training_domains=False and no unseen_domains: the suite "
                  "evaluates nothing; set training_domains=True or list "
                  "unseen_domains.")
  return errors


def validate(suite: ml_collections.ConfigDict) -> list[str]:
  """Cheap checks of a suite (no JAX / TF; files only listed, not read).

  Args:
    suite: a suite built from :func:`base_suite`.

  Returns:
    Problems found (empty if none), each naming the key and the fix:
    unknown keys, bad evaluator entries (via the evaluator registry), bad
    `eval` values, invalid unseen-domain entries and missing data (an npz
    directory without train.npz, an unknown TFDS name).
  """
  ref = base_suite("ref")
  unknown = sorted(set(suite.keys()) - set(ref.keys()))
  if unknown:
    return [f"Unknown suite keys {unknown}; valid keys: "
            f"{sorted(ref.keys())}."]
  errors = []
  if not isinstance(suite.name, str) or not suite.name:
    errors.append(f"name must be a non-empty string, got {suite.name!r}.")
  unknown = sorted(set(suite.eval.keys()) - set(EVAL_KEYS))
  if unknown:
    errors.append(f"Unknown keys eval.{unknown}; valid: {list(EVAL_KEYS)}.")
  for key in EVAL_KEYS:
    value = suite.eval.get(key)
    if value is not None and (not isinstance(value, int) or value < 1):
      errors.append(f"eval.{key}={value!r}: must be an integer >= 1, or "
                    "None (the workdir's value).")
  for key in ("training_domains", "cache_features"):
    if not isinstance(suite[key], bool):
      errors.append(f"{key} must be True or False, got {suite[key]!r}.")
  if not isinstance(suite.label_subsets_dir, str):
    errors.append("label_subsets_dir must be a path string (\"\": "
                  "<workdir>/eval/label_subsets).")
  if isinstance(suite.unseen_domains, (str, bytes)) or not hasattr(
      suite.unseen_domains, "__iter__"):
    errors.append("unseen_domains must be a list of domain dicts.")
  else:
    errors += _domain_errors(suite)
  return errors + _evaluator_errors(suite.evals)


def suite_hash(suite: ml_collections.ConfigDict) -> str:
  """Short stable hash (12 hex digits) of the suite's settings."""
  text = json.dumps(suite.to_dict(), sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:12]
