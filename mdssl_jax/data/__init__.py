"""Data: domain sources, offline demo data, augmentations, train pipeline.

Synopsis::

  from mdssl_jax import data
  domains = data.load_domains(config.data)
  it = data.make_train_iterator(config, domains, start_step=0)
  evals = data.make_eval_arrays(config, domains, max_train=2000)
"""

import tensorflow as _tf

try:  # TF must never grab accelerator memory that JAX needs.
  _tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):  # Devices already initialised / no API.
  pass

# pylint: disable=g-import-not-at-top,g-bad-import-order
from mdssl_jax.data.augment import apply_saliency_mask
from mdssl_jax.data.augment import augment_batch
from mdssl_jax.data.augment import augment_view
from mdssl_jax.data.augment import eval_transform
from mdssl_jax.data.augment import saliency_mask_batch
from mdssl_jax.data.demo_data import list_demo_domains
from mdssl_jax.data.demo_data import load_demo_domain
from mdssl_jax.data.pipeline import default_augment_config
from mdssl_jax.data.pipeline import default_data_config
from mdssl_jax.data.pipeline import default_saliency_config
from mdssl_jax.data.pipeline import default_views_config
from mdssl_jax.data.pipeline import make_eval_arrays
from mdssl_jax.data.pipeline import make_train_dataset
from mdssl_jax.data.pipeline import make_train_iterator
from mdssl_jax.data.pipeline import num_train_batches_per_epoch
from mdssl_jax.data.pipeline import view_specs_from_config
from mdssl_jax.data.pipeline import ViewSpec
from mdssl_jax.data.sources import DatasetNotFoundError
from mdssl_jax.data.sources import DomainData
from mdssl_jax.data.sources import load_domain
from mdssl_jax.data.sources import load_domains
from mdssl_jax.data.sources import validate_data_config
from mdssl_jax.data.sources import read_class_subset
from mdssl_jax.data.sources import resolve_class_subset
from mdssl_jax.data.sources import StreamSpec
from mdssl_jax.data.augment import augment_cropped_batch
from mdssl_jax.data.augment import random_resized_crop
