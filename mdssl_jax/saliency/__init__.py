"""Unsupervised saliency masks for RELICv2 (seed 004 §2, App. B.2.1).

  python -m mdssl_jax.saliency --config=configs/saliency/<name>.py \
      --workdir=DIR

Modules: ``handcrafted`` (frequency-tuned, RBD, manifold-ranking maps),
``fusion`` (maps -> pseudo-labels), ``refine`` (ResNet + decoder trained on
them in self-refinement rounds), ``precompute`` (the tool: every example's
mask, resumable, written where the training pipeline reads it),
``tfds_io`` (TFDS input and the per-shard mask sidecar), ``synthetic``
(benchmark scenes with known foreground, IoU / MAE) and ``report`` (the
quality report). ``config`` is the tool's config schema.
"""
