"""Data: domain sources, offline demo data, augmentations, train pipeline.

Synopsis::

  from mdssl_jax.data import pipeline, sources
  domains = sources.load_domains(config.data)
  it = pipeline.make_train_iterator(config, domains, start_step=0)
  evals = pipeline.make_eval_arrays(config, domains, max_train=2000)

Layout:

* ``sources/``: the registry of data sources (``demo``, ``npz``, ``tfds``;
  one module each, plus the in-memory and streaming TFDS loaders),
  validation and loading of ``config.data.domains``;
* ``domain.py`` (``DomainData``, ``StreamSpec``), ``resize.py``,
  ``class_subsets.py``, ``demo_data.py``: shared pieces of the sources;
* ``augment/``: vectorised stateless augmentations;
* ``pipeline/``: multi-domain, multi-view training batches and evaluation
  arrays.

The names below load on first use, so importing ``mdssl_jax.data.sources``
(the config validation does) imports neither TensorFlow nor the pipeline.
"""

import importlib

_EXPORTS = {
    "DatasetNotFoundError": "domain",
    "DomainData": "domain",
    "StreamSpec": "domain",
    "list_demo_domains": "demo_data",
    "load_demo_domain": "demo_data",
    "load_domain": "sources",
    "load_domains": "sources",
    "validate_data_config": "sources",
    "read_class_subset": "class_subsets",
    "resolve_class_subset": "class_subsets",
    "augment_batch": "augment",
    "augment_cropped_batch": "augment",
    "eval_transform": "augment",
    "random_resized_crop": "augment",
    "saliency_mask_batch": "augment",
    "make_eval_arrays": "pipeline",
    "make_train_dataset": "pipeline",
    "make_train_iterator": "pipeline",
    "view_specs_from_config": "pipeline",
    "ViewSpec": "pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return getattr(module, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
