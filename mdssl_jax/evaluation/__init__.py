"""Frozen-encoder evaluation: feature extraction, evaluator suite, report.

Synopsis::

  from mdssl_jax import evaluation
  extractor = evaluation.FeatureExtractor(method.features, batch_size=256)
  results = evaluation.run_suite(config, extractor, params, batch_stats,
                                 per_domain)
  print(evaluation.format_table(results))
  evaluation.write_results(results, os.path.join(workdir, "eval.json"))
  evaluation.linear_cka(x, y), evaluation.frechet_distance(x, y)
  evaluation.rankme(z), evaluation.alignment(z1, z2), evaluation.uniformity(z)

Evaluators (`config.evals.<name>.type`) are modules named in
`mdssl_jax.evaluation.registry`. Attributes load on first use, so
`mdssl_jax.evaluation.registry` (read by the config schema) imports without
JAX.
"""

import importlib

_EXPORTS = {
    "BlockExtractor": "blocks",
    "EvalContext": "suite",
    "FeatureExtractor": "features",
    "alignment": "analysis",
    "balanced_indices": "analysis",
    "cka_matrix": "analysis",
    "class_cosine_matrix": "analysis",
    "class_distance_ratio": "analysis",
    "class_distance_ratios": "analysis",
    "format_table": "report",
    "frechet_distance": "analysis",
    "knn_accuracy": "knn",
    "knn_predict": "knn",
    "linear_cka": "analysis",
    "nested_subsets": "label_fractions",
    "metric_columns": "report",
    "rankme": "analysis",
    "run_suite": "suite",
    "standardize_features": "linear_probe",
    "topk_accuracy": "knn",
    "train_augmented_probe": "linear_probe",
    "train_linear_probe": "linear_probe",
    "tsne_embedding": "analysis",
    "uniformity": "analysis",
    "write_results": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return getattr(module, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
