"""Evaluator modules (one per type); see `mdssl_jax.evaluation.registry`."""
