"""Representation analysis settings for `python -m mdssl_jax.analyze`.

  python -m mdssl_jax.analyze --workdir=RUN --config=configs/eval/analysis.py
  python -m mdssl_jax.analyze --workdir=RUN --compare=RUN2 \
      --config=configs/eval/analysis.py --config.block_reduce=flattened

Everything is computed on the test split of the run's domains, on a
class-balanced subset per domain (METHODS §6.5, §6.6).
"""

import ml_collections


def get_config():
  """The default analysis settings."""
  c = ml_collections.ConfigDict()
  # Test images read per domain (stratified), then class-balanced down to
  # max_per_domain.
  c.read_per_domain = 2000
  c.max_per_domain = 500
  # Images for block × block CKA: the first of every domain's subset,
  # round-robin over domains, the same images for --compare (n × n Grams).
  c.cka_images = 1000
  # Per-image reduction of [H, W, C] block outputs: "pooled" (global
  # average pool) or "flattened" (§6.6's choice; H·W·C wide).
  c.block_reduce = "pooled"
  # sklearn t-SNE on at most tsne_max_points points, balanced over domains;
  # the perplexity is capped at (points − 1) / 3.
  c.tsne_perplexity = 30.0
  c.tsne_max_points = 1500
  # OpenMP threads of t-SNE; more only help on otherwise idle cores.
  c.tsne_threads = 1
  c.batch_size = 256
  c.seed = 0
  return c
