"""Source "tfds": a TensorFlow Datasets builder, in memory or streamed.

Synopsis::

  dict(name="c10", source="tfds", tfds_name="cifar10")
  dict(name="in1k", source="tfds", tfds_name="imagenet2012",
       eval_split="validation")            # auto: streams at 224 px

Keys: ``tfds_name`` (required), ``split`` ("train"), ``eval_split``
("test"; e.g. "train[80%:]" for eurosat, "validation" for imagenet2012),
``image_key`` ("image"), ``label_key`` ("label"), ``mask_key`` (a feature
with saliency masks aligned with the image, for RELICv2 masking) or
``masks_path`` (instead: the sidecar directory of precomputed masks that
``python -m mdssl_jax.saliency`` writes, ``<workdir>/tfds_masks``; joined
to the images by tfds_id; a missing, corrupt or wrongly sized sidecar fails
at start-up naming that command) and
``in_memory``: True (``tfds_memory``: decoded, resized and held as uint8
arrays), False (``tfds_streaming``: read and decoded on the fly), or None =
auto: stream when the dataset info says the splits would exceed
``config.data.max_in_memory_gb`` at ``image_size``, else load them.

TFDS reads ``config.data.data_dir`` and downloads only when
``config.data.download`` is True.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from mdssl_jax import cli
from mdssl_jax.data.domain import DomainData

KEYS: dict[str, Any] = {
    "tfds_name": None, "split": "train", "eval_split": "test",
    "image_key": "image", "label_key": "label", "in_memory": None,
    "mask_key": None, "masks_path": None,
}
REQUIRED = ("tfds_name",)


def validate(domain: dict[str, Any]) -> list[str]:
  """in_memory: bool or None; mask_key / masks_path: one string or None."""
  errors = []
  in_memory = domain["in_memory"]
  if in_memory is not None and not isinstance(in_memory, (bool, np.bool_)):
    errors.append(f"in_memory must be True, False or None (auto), got "
                  f"{in_memory!r}.")
  mask_key = domain["mask_key"]
  if mask_key is not None and (not isinstance(mask_key, str) or not mask_key):
    errors.append(f"mask_key must be the name of a TFDS feature holding "
                  f"saliency masks, got {mask_key!r}.")
  masks_path = domain["masks_path"]
  if masks_path is not None and (not isinstance(masks_path, str)
                                 or not masks_path):
    errors.append(f"masks_path must be a mask sidecar directory, got "
                  f"{masks_path!r}.")
  if mask_key is not None and masks_path is not None:
    errors.append("set mask_key (a TFDS feature) or masks_path (a "
                  "precomputed sidecar), not both.")
  return errors


def check_exists(domain: dict[str, Any]) -> list[str]:
  """A registered TFDS builder (no data access); a masks_path sidecar."""
  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds
  from mdssl_jax.data.sources import tfds_common
  # pylint: enable=g-import-not-at-top
  name = str(domain["tfds_name"]).split("/")[0].split(":")[0]
  try:
    tfds.builder_cls(name)
  except Exception:  # pylint: disable=broad-except
    return [f"unknown TFDS dataset {name!r}; see "
            "https://www.tensorflow.org/datasets/catalog for names (e.g. "
            "cifar10, svhn_cropped)."]
  masks_path = domain["masks_path"]
  if not masks_path:
    return []
  masks_path = tfds_common.expand_path(masks_path)
  info = tfds_common.SIDECAR_INFO
  if not os.path.isfile(os.path.join(masks_path, info)):
    return [f"masks_path {masks_path} holds no {info}. "
            + tfds_common.sidecar_hint(domain["tfds_name"], domain["split"])]
  return []



def load(domain: dict[str, Any], data_cfg: Any) -> DomainData:
  """Loads in memory or as a stream (``in_memory``; None: by size).

  Args:
    domain: the resolved domain entry (``resize`` set).
    data_cfg: ``config.data`` (``image_size``, ``data_dir``, ``download``,
      ``max_in_memory_gb``).

  Returns:
    An in-memory DomainData, or a streaming one (``stream`` set).
  """
  # pylint: disable=g-import-not-at-top
  from mdssl_jax.data.sources import tfds_memory
  from mdssl_jax.data.sources import tfds_streaming
  # pylint: enable=g-import-not-at-top
  cli.hide_gpus_from_tf()  # tf.data only: keep TF off the accelerators.
  in_memory = domain["in_memory"]
  if in_memory is None:
    in_memory = tfds_memory.fits_in_memory(domain, data_cfg)
  module = tfds_memory if in_memory else tfds_streaming
  return module.load(domain, data_cfg)
