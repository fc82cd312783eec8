"""Frozen-encoder evaluation: feature extraction, kNN, linear probe, report.

Synopsis::

  from mdssl_jax import evaluation
  results = evaluation.evaluate_domains(per_domain, embed_fn, cfg.eval)
  print(evaluation.format_table(results))
  evaluation.write_results(results, os.path.join(workdir, "eval.json"))
"""

from mdssl_jax.evaluation.features import extract_features
from mdssl_jax.evaluation.knn import knn_accuracy
from mdssl_jax.evaluation.knn import knn_predict
from mdssl_jax.evaluation.knn import topk_accuracy
from mdssl_jax.evaluation.linear_probe import standardize_features
from mdssl_jax.evaluation.linear_probe import train_linear_probe
from mdssl_jax.evaluation.report import EVAL_DEFAULTS
from mdssl_jax.evaluation.report import evaluate_domains
from mdssl_jax.evaluation.report import format_table
from mdssl_jax.evaluation.report import write_results

__all__ = [
    "EVAL_DEFAULTS",
    "evaluate_domains",
    "extract_features",
    "format_table",
    "knn_accuracy",
    "knn_predict",
    "standardize_features",
    "topk_accuracy",
    "train_linear_probe",
    "write_results",
]
