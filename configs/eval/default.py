"""Default eval suite: kNN at k = 20 and k = 200, and the linear probe.

  python -m mdssl_jax.evaluate --workdir=RUN --config=configs/eval/default.py
  python -m mdssl_jax.evaluate --workdir=RUN --config=configs/eval/default.py \
      --config.evals.probe.steps=4000 --config.eval.max_test_per_domain=500

Runs on the workdir's training domains (METHODS.md §6.2 kNN, §6.1 probe).
"""

from mdssl_jax.evaluation import suite_config


def get_config():
  """The default suite."""
  suite = suite_config.base_suite("default")
  suite.evals.knn20 = suite_config.evaluator("knn", k=20)
  suite.evals.knn200 = suite_config.evaluator("knn", k=200)
  suite.evals.probe = suite_config.evaluator("linear_probe")
  return suite
