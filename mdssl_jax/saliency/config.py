"""The saliency tool's config: its schema (:func:`base_config`) and checks.

The tool's configs (``configs/saliency/*.py``) are standalone
ml_collections ConfigDicts, not training configs::

  data:    source ("synthetic" | "npz" | "tfds") and that source's keys:
           npz: path, train_file; tfds: tfds_name, split, data_dir,
           image_key; synthetic: num_examples, image_size, seed.
  methods: handcrafted methods fused into pseudo-labels
           (``handcrafted.METHODS``); method_params: keyword arguments each.
  fusion:  threshold (binarises the mean of the maps).
  refine:  the network (model: a config.model-style ResNet; decoder_width),
           its data (train_examples, image_size, mean, std), training
           (rounds, epochs_per_round, batch_size, lr, lr_growth per round,
           threshold of the round-averaged predictions, seed) and
           init_workdir / init_step (an SSL run whose encoder it starts
           from, or None).
  output:  chunk_size (examples per resumable chunk of predicted masks).
  report:  (synthetic only) test_scenes, test_seed, contact_rows.

Light: importing it pulls in no TensorFlow, JAX or Flax.
"""

from __future__ import annotations

import ml_collections

from mdssl_jax.saliency import handcrafted

SOURCES = ("synthetic", "npz", "tfds")


def base_config() -> ml_collections.ConfigDict:
  """Every key of the schema, with the defaults the configs start from."""
  c = ml_collections.ConfigDict()
  c.data = ml_collections.ConfigDict({
      "source": "npz", "path": None, "train_file": "train.npz",
      "tfds_name": None, "split": "train", "data_dir": None,
      "image_key": "image", "num_examples": 0, "image_size": 0, "seed": 0})
  c.methods = tuple(handcrafted.METHODS)
  c.method_params = ml_collections.ConfigDict(
      {name: {} for name in handcrafted.METHODS})
  c.fusion = ml_collections.ConfigDict({"threshold": 0.5})
  c.refine = ml_collections.ConfigDict({
      "train_examples": 2500, "image_size": 64, "rounds": 3,
      "epochs_per_round": 25, "batch_size": 10, "lr": 1e-3,
      "lr_growth": 2.0, "threshold": 0.5, "seed": 0, "decoder_width": 32,
      "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
      "init_workdir": None, "init_step": None,
      "model": {"name": "resnet", "depth": 18, "width_multiplier": 0.25,
                "stem": "cifar", "norm": "batch", "conv_impl": "auto",
                "zero_init_residual": False}})
  c.output = ml_collections.ConfigDict({"chunk_size": 1024})
  c.report = ml_collections.ConfigDict({"test_scenes": 200, "test_seed": 1,
                                        "contact_rows": 8})
  return c


def validate(c: ml_collections.ConfigDict) -> None:
  """Raises ValueError listing every problem of a saliency config."""
  errors = []
  d = c.data
  if d.source not in SOURCES:
    errors.append(f"data.source must be one of {SOURCES}, got "
                  f"{d.source!r}.")
  required = {"npz": ("path",), "tfds": ("tfds_name",),
              "synthetic": ()}.get(d.source, ())
  errors += [f"data.{k} must be set for data.source={d.source!r}."
             for k in required if not d[k]]
  if d.source == "tfds" and "[" in str(d.split):
    errors.append(f"data.split must be a whole TFDS split (masks are keyed "
                  f"by tfds_id over all of it), got {d.split!r}.")
  if d.source == "synthetic" and (d.num_examples < 1 or d.image_size < 16):
    errors.append("synthetic data needs data.num_examples >= 1 and "
                  "data.image_size >= 16.")
  unknown = [m for m in c.methods if m not in handcrafted.METHODS]
  if unknown or not c.methods:
    errors.append(f"methods must be a non-empty subset of "
                  f"{sorted(handcrafted.METHODS)}, got {tuple(c.methods)}.")
  for name, value in (("fusion.threshold", c.fusion.threshold),
                      ("refine.threshold", c.refine.threshold)):
    if not 0.0 < value < 1.0:
      errors.append(f"{name} must be in (0, 1), got {value}.")
  r = c.refine
  for key in ("train_examples", "image_size", "rounds", "epochs_per_round",
              "batch_size", "decoder_width"):
    if int(r[key]) < 1:
      errors.append(f"refine.{key} must be >= 1, got {r[key]}.")
  if r.lr <= 0 or r.lr_growth <= 0:
    errors.append("refine.lr and refine.lr_growth must be > 0.")
  if r.model.name != "resnet":
    errors.append(f"refine.model.name must be 'resnet', got "
                  f"{r.model.name!r}.")
  if int(c.output.chunk_size) < 1:
    errors.append("output.chunk_size must be >= 1.")
  if errors:
    raise ValueError("Invalid saliency config:\n  " + "\n  ".join(errors))
