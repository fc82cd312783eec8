"""Registry of evaluator types: `config.evals.<name>.type` -> module.

Each module named here declares, at import time and without importing
TensorFlow, JAX or Flax (the config schema reads it while loading config
files):

* ``DEFAULTS``: the evaluator's keys and their defaults (its part of the
  config schema; ``type`` is added here);
* ``validate(cfg) -> list[str]``: cheap checks of one ``config.evals`` entry;

and the code that runs it (heavy imports inside its functions). Adding an
evaluator is one module in ``mdssl_jax/evaluation/evaluators/`` plus one
line in :data:`EVALUATORS`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import ml_collections

EVALUATORS: dict[str, str] = {
    "finetune": "mdssl_jax.evaluation.evaluators.finetune",
    "knn": "mdssl_jax.evaluation.evaluators.knn",
    "linear_probe": "mdssl_jax.evaluation.evaluators.linear_probe",
}


def available() -> list[str]:
  """Registered evaluator type names."""
  return sorted(EVALUATORS)


def get(type_name: str) -> ModuleType:
  """The module implementing evaluator type `type_name`."""
  if type_name not in EVALUATORS:
    raise ValueError(f"Unknown evaluator type {type_name!r}; available: "
                     f"{available()}.")
  return importlib.import_module(EVALUATORS[type_name])


def default_config(type_name: str) -> ml_collections.ConfigDict:
  """`{"type": type_name, **DEFAULTS}` of one evaluator type."""
  return ml_collections.ConfigDict(
      {"type": type_name, **get(type_name).DEFAULTS})
