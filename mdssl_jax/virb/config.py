"""The ViRB battery's config schema (light: no TensorFlow, JAX or Flax).

A battery config (``configs/virb/offline.py``) is an ml_collections
ConfigDict built on :func:`base_config`; :func:`validate` lists what is
wrong with one, :func:`check` raises on the first problems.
"""

from __future__ import annotations

import ml_collections

# The offline generated tasks (mdssl_jax.virb.tasks), in report order.
GENERATED_TASKS = ("shape_class", "count", "egomotion", "fg_seg",
                   "class_seg", "depth", "flow")
# The TFDS-backed tasks (mdssl_jax.virb.tfds_tasks).
TFDS_TASKS = ("eurosat", "dtd", "cifar100", "pets_seg", "nyu_depth")


def base_config() -> ml_collections.ConfigDict:
  """Every key of a battery config, with the offline defaults."""
  return ml_collections.ConfigDict({
      "seed": 0,  # Generation seed of the offline tasks and head init.
      "image_size": 32,  # Side of the generated scenes (px).
      "tasks": GENERATED_TASKS,  # A tuple: --config.tasks='("depth",)'.
      "num_train": 1000,  # Generated examples per task, train split.
      "num_test": 300,  # Generated examples per task, test split.
      "max_objects": 4,  # Counting: 1..max_objects objects (classes).
      # Classification tasks of data domains (the `config.data.domains`
      # entries of mdssl_jax.data.sources: demo, npz, tfds), loaded at
      # the encoder's view size with its mean and std.
      "domains": [],
      "max_train_per_domain": 1000,
      "max_test_per_domain": 300,
      "tfds": {
          "tasks": (),  # Names from TFDS_TASKS.
          "data_dir": None,  # None: the TFDS default directory.
          "download": False,  # Let TFDS download missing sets.
          "image_size": 64,  # Side the images are resized to (px).
          "num_train": 1000,
          "num_test": 500,
      },
      "heads": {
          "lr": 3e-4,  # Adam (seed 001, App. B).
          "batch_size": 32,
          "image_steps": 1500,  # Linear and fusion heads.
          "pixel_steps": 400,  # U-Net, DeepLabv3+, Siamese U-Net.
          "decoder_width": 32,  # Channels of the pixelwise decoders.
          "aspp_rates": (1, 2, 3),  # Atrous rates on the last block.
          "fusion_dim": 128,  # Per-input linear width of the fusion head.
      },
      "feature_batch_size": 100,  # Images per encoder call.
  })


def validate(config: ml_collections.ConfigDict) -> list[str]:
  """The problems of a battery config (empty when it is valid).

  Args:
    config: a config built on `base_config`.

  Returns:
    One message per problem, each naming the key and the fix.
  """
  errors = []
  known = set(base_config())
  unknown = sorted(set(config) - known)
  if unknown:
    errors.append(f"unknown battery keys {unknown}; valid: {sorted(known)}.")
  for name in config.tasks:
    if name not in GENERATED_TASKS:
      errors.append(f"tasks: unknown task {name!r}; choose from "
                    f"{GENERATED_TASKS}.")
  for name in config.tfds.tasks:
    if name not in TFDS_TASKS:
      errors.append(f"tfds.tasks: unknown task {name!r}; choose from "
                    f"{TFDS_TASKS}.")
  if not (list(config.tasks) or list(config.domains)
          or list(config.tfds.tasks)):
    errors.append("no tasks: set tasks, domains or tfds.tasks.")
  positive = {"image_size": config.image_size, "num_train": config.num_train,
              "num_test": config.num_test,
              "max_train_per_domain": config.max_train_per_domain,
              "max_test_per_domain": config.max_test_per_domain,
              "feature_batch_size": config.feature_batch_size,
              "tfds.image_size": config.tfds.image_size,
              "tfds.num_train": config.tfds.num_train,
              "tfds.num_test": config.tfds.num_test,
              "heads.batch_size": config.heads.batch_size,
              "heads.image_steps": config.heads.image_steps,
              "heads.pixel_steps": config.heads.pixel_steps,
              "heads.decoder_width": config.heads.decoder_width,
              "heads.fusion_dim": config.heads.fusion_dim}
  for key, value in positive.items():
    if int(value) < 1:
      errors.append(f"{key} must be >= 1, got {value}.")
  if config.image_size % 8:
    errors.append(f"image_size must be a multiple of 8 (the ResNet's "
                  f"stage strides), got {config.image_size}.")
  if config.max_objects < 2:
    errors.append(f"max_objects must be >= 2 (counting needs two classes), "
                  f"got {config.max_objects}.")
  if not config.heads.lr > 0:
    errors.append(f"heads.lr must be > 0, got {config.heads.lr}.")
  if not config.heads.aspp_rates or min(config.heads.aspp_rates) < 1:
    errors.append(f"heads.aspp_rates must be atrous rates >= 1, got "
                  f"{config.heads.aspp_rates}.")
  for i, domain in enumerate(config.domains):
    if "name" not in domain or "source" not in domain:
      errors.append(f"domains[{i}] needs a name and a source, as the "
                    f"entries of config.data.domains; got {dict(domain)}.")
  return errors


def check(config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError listing every problem of `config`."""
  errors = validate(config)
  if errors:
    raise ValueError("Invalid ViRB battery config:\n  " + "\n  ".join(errors))
