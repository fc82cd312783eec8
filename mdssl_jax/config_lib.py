"""The config schema, its defaults and start-up validation.

Every `configs/*.py` file starts from :func:`get_default_config` and
overrides what it needs. :func:`validate` runs before any data loading or
compilation and raises one :class:`ConfigError` listing every problem with
the key and the fix.
"""

from __future__ import annotations

import difflib
import warnings
from typing import Any

import ml_collections

from mdssl_jax import methods
from mdssl_jax import optim
from mdssl_jax.data import pipeline, sources

DTYPES = ("float32", "bfloat16")


class ConfigError(ValueError):
  """The config is invalid; the message names each key and its fix."""


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses `configs/x.py:demo,steps=20` style arguments.

  A bare word sets a boolean default to True; `key=value` is converted to the
  type of the default.
  """
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in defaults:
      raise ConfigError(f"Unknown config argument {key!r}; valid: "
                        f"{sorted(defaults)}.")
    default = defaults[key]
    if not value:
      out[key] = True
    elif isinstance(default, bool):
      out[key] = value.lower() in ("1", "true", "yes")
    else:
      out[key] = type(default)(value) if default is not None else value
  return out


def load_sibling(config_file: str, name: str):
  """Imports another config file from the same folder as a module.

  Config files are loaded by path (not as a package), so a config that
  shares its setup with another (e.g. SimCLR and MDSSL on the same data)
  loads it with `config_lib.load_sibling(__file__, "mdssl_cifar_mix")`.
  """
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)),
                      name + ".py")
  spec = importlib.util.spec_from_file_location(f"_mdssl_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_default_config(method: str = "mdssl") -> ml_collections.ConfigDict:
  """Every key the trainer reads, with defaults (a CIFAR-scale ResNet-18)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.method = method
  c.method_args = methods.get_method(method).default_args()

  c.data = pipeline.default_data_config()
  c.views = pipeline.default_views_config()
  c.augment = pipeline.default_augment_config()
  c.saliency = pipeline.default_saliency_config()
  # Background removal is RELICv2's augmentation: off unless a config turns
  # it on (configs/relicv2_*.py use the paper's p_m = 0.1).
  c.saliency.prob = 0.0

  c.model = ml_collections.ConfigDict({
      "depth": 18, "width_multiplier": 1.0, "stem": "cifar",
      "norm": "batch", "conv_impl": "auto", "zero_init_residual": False})
  c.projector = ml_collections.ConfigDict({
      "hidden_dims": (2048,), "out_dim": 128, "norm": "batch",
      "last_norm": "none", "activation": "relu"})
  c.predictor = ml_collections.ConfigDict({
      "hidden_dims": (4096,), "out_dim": 128, "norm": "batch",
      "last_norm": "none", "activation": "relu"})
  c.compute_dtype = "float32"
  # Keep freed host memory mapped for reuse (glibc mallopt, see
  # mdssl_jax/host_memory.py): a CPU step stops re-faulting its working set.
  # Process-wide, host memory only; applied first thing by main.py and
  # train_and_evaluate.
  c.keep_host_memory = True

  c.optim = ml_collections.ConfigDict({
      "name": "lars", "base_lr": 0.3, "lr_scaling": "linear",
      "lr_batch_divisor": 256, "weight_decay": 1e-6, "momentum": 0.9,
      "trust_coefficient": 1e-3, "clip_lr": False, "nesterov": False, "b1": 0.9, "b2": 0.999,
      "warmup_steps": -1, "warmup_epochs": 10.0, "end_lr_factor": 0.0,
      "grad_clip_norm": 0.0})
  c.ema = ml_collections.ConfigDict({"base": 0.996, "schedule": "cosine"})
  c.total_steps = -1
  c.total_epochs = 100.0

  c.mesh_shape = -1
  c.log_every = 50
  c.checkpoint = ml_collections.ConfigDict({
      "every_steps": 1000, "keep": 3, "resume": True, "async_save": True})
  c.eval = ml_collections.ConfigDict({
      "knn_k": 20, "knn_temperature": 0.07, "probe_steps": 2000,
      "probe_batch_size": 1024, "probe_lr": 0.1, "probe_momentum": 0.9,
      "probe_schedule": "constant", "probe_standardize": True,
      "feature_batch_size": 256, "max_train_per_domain": 10000,
      "max_test_per_domain": 5000, "every_steps": 0, "at_end": True})
  return c


def _unknown_keys(cfg, ref, prefix="") -> list[str]:
  """Keys of `cfg` missing from the schema `ref`, with close matches."""
  errors = []
  for key in cfg.keys():
    path = prefix + key
    if key not in ref:
      close = difflib.get_close_matches(key, list(ref.keys()), n=1)
      hint = f" Did you mean {prefix}{close[0]!r}?" if close else ""
      errors.append(f"Unknown config key {path!r}.{hint} Valid keys here: "
                    f"{sorted(ref.keys())}.")
    elif isinstance(ref[key], ml_collections.ConfigDict):
      if isinstance(cfg[key], ml_collections.ConfigDict):
        errors += _unknown_keys(cfg[key], ref[key], path + ".")
  return errors


def _missing_sources(data_cfg) -> list[str]:
  """Cheap existence checks: npz directories and TFDS builder names."""
  import os  # pylint: disable=g-import-not-at-top
  errors = []
  for d in data_cfg.domains:
    source = d.get("source")
    if source == "npz" and d.get("path"):
      path = os.path.expanduser(os.path.expandvars(str(d["path"])))
      train = os.path.join(path, d.get("train_file", "train.npz"))
      if not os.path.isfile(train):
        errors.append(f"Domain {d.get('name')!r}: {train} does not exist; "
                      "set the domain's 'path' to a directory holding "
                      "train.npz and test.npz (arrays 'images', 'labels').")
    elif source == "tfds" and d.get("tfds_name"):
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
      name = str(d["tfds_name"]).split("/")[0].split(":")[0]
      try:
        tfds.builder_cls(name)
      except Exception:  # pylint: disable=broad-except
        errors.append(f"Domain {d.get('name')!r}: unknown TFDS dataset "
                      f"{name!r}; see https://www.tensorflow.org/datasets/"
                      "catalog for names (e.g. cifar10, svhn_cropped).")
  return errors


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks the whole config cheaply (no data loading, no compilation).

  Raises:
    ConfigError: listing every problem, each with the key and the fix.
  """
  errors: list[str] = []
  try:
    method_cls = methods.get_method(config.get("method"))
  except ValueError as e:
    raise ConfigError(str(e)) from None
  ref = get_default_config(config.method)
  errors += _unknown_keys(config, ref)
  if errors:
    raise ConfigError("\n".join(errors))

  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    errors += method_cls.validate(config)
  for w in caught:
    warnings.warn(str(w.message), stacklevel=2)

  try:
    sources.validate_data_config(config.data)
  except ValueError as e:
    errors.append(str(e))
  errors += _missing_sources(config.data)
  if config.data.per_domain_batch < 1:
    errors.append("data.per_domain_batch must be ≥ 1.")
  try:
    import jax  # pylint: disable=g-import-not-at-top
    from mdssl_jax import sharding  # pylint: disable=g-import-not-at-top
    devices = config.mesh_shape if config.mesh_shape > 0 else (
        jax.device_count())
    sharding.check_batch_divisible(config, devices)
  except ValueError as e:
    errors.append(str(e))
  if config.compute_dtype not in DTYPES:
    errors.append(f"compute_dtype={config.compute_dtype!r}; use one of "
                  f"{DTYPES}.")
  if config.optim.name not in optim.OPTIMIZERS:
    errors.append(f"optim.name={config.optim.name!r}; use one of "
                  f"{optim.OPTIMIZERS}.")
  if config.optim.lr_scaling not in optim.LR_SCALINGS:
    errors.append(f"optim.lr_scaling={config.optim.lr_scaling!r}; use one "
                  f"of {optim.LR_SCALINGS}.")
  if config.optim.base_lr <= 0:
    errors.append("optim.base_lr must be > 0.")
  if (config.get("total_steps", -1) or -1) < 0 and (
      config.get("total_epochs", -1) or -1) <= 0:
    errors.append("Set total_steps (> 0) or total_epochs (> 0).")
  if not 0.0 <= config.ema.base <= 1.0:
    errors.append(f"ema.base={config.ema.base} must be in [0, 1].")
  if config.ema.schedule not in ("cosine", "constant"):
    errors.append("ema.schedule must be 'cosine' or 'constant'.")
  if not isinstance(config.get("keep_host_memory", True), bool):
    errors.append("keep_host_memory must be True or False.")
  if config.eval.knn_k < 1:
    errors.append("eval.knn_k must be ≥ 1.")
  if config.checkpoint.keep < 1:
    errors.append("checkpoint.keep must be ≥ 1 (finished checkpoints are "
                  "never all deleted).")
  if errors:
    raise ConfigError("Invalid config:\n  - " + "\n  - ".join(errors))
