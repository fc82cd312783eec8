"""Frozen-encoder evaluation: feature extraction, kNN, linear probe, report.

Synopsis::

  from mdssl_jax import evaluation
  results = evaluation.evaluate_domains(per_domain, embed_fn, cfg.eval)
  print(evaluation.format_table(results))
  evaluation.write_results(results, os.path.join(workdir, "eval.json"))

Attributes load on first use, so `mdssl_jax.evaluation.registry` (read by
the config schema) imports without JAX.
"""

import importlib

_EXPORTS = {
    "EVAL_DEFAULTS": "report",
    "evaluate_domains": "report",
    "extract_features": "features",
    "format_table": "report",
    "knn_accuracy": "knn",
    "knn_predict": "knn",
    "standardize_features": "linear_probe",
    "topk_accuracy": "knn",
    "train_linear_probe": "linear_probe",
    "write_results": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return getattr(module, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
