"""The config schema: every default in one place, and start-up validation.

Synopsis::

  c = config_lib.get_default_config("byol")   # light: no TF / JAX / Flax
  c.data.per_domain_batch = 64
  config_lib.validate(c)                       # once, at start-up
  shape = config_lib.run_shape(c, num_train_examples=50_000)
  shape.global_batch, shape.total_steps, shape.warmup_steps

Every `configs/*.py` file starts from :func:`get_default_config` and
overrides what it needs; loading a config file imports nothing heavier than
`ml_collections`. The schema is assembled here from three kinds of
declaration: the trainer's own keys (below), each method's hyperparameters
(:data:`METHOD_ARGS`) and each evaluator type's keys (the `DEFAULTS` of the
modules named in `mdssl_jax.evaluation.registry`). Domain entries of
`config.data.domains` are checked against the keys their source declares
(`mdssl_jax.data.sources`).

:func:`validate` runs once, before any data loading or compilation, and
raises one :class:`ConfigError` listing every problem with its key and fix;
after it, code reads config values directly (no restated defaults).
Quantities derived from the config (global batch, steps per epoch, total and
warm-up steps) are computed once by :func:`run_shape` and passed on.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import warnings
from typing import Any

import ml_collections

from mdssl_jax.evaluation import overrides as eval_overrides
from mdssl_jax.evaluation import registry as eval_registry

DTYPES = ("float32", "bfloat16")
OPTIMIZERS = ("lars", "sgd", "adamw")
LR_SCALINGS = ("linear", "sqrt", "none")
EMA_SCHEDULES = ("cosine", "constant")
WEIGHT_DECAY_SCHEDULES = ("constant", "cosine")
MODEL_NAMES = ("resnet", "vit")
# MDSSL without domain labels (METHODS §2.8): where the batch's domain ids
# come from, the robust filter's ratio and what happens to filtered rows.
DOMAIN_LABELS = ("given", "kmeans", "robust_kmeans")
OUTLIER_RULES = ("second_to_nearest", "farthest_to_nearest")
IGNORED_MODES = ("drop", "mask")
PSEUDO_EMBEDDINGS = ("projection", "features")

# `config.method_args` of each registered method (METHODS.md §2–§5).
METHOD_ARGS: dict[str, dict[str, Any]] = {
    "simclr": {"temperature": 0.1},
    "mdssl": {"temperature": 0.1, "lambda1": 1.0, "lambda2": 0.1,
              "sign_convention": "equation",
              # BatchNorm statistics over the whole batch or per domain
              # (METHODS §2.6); "auto": per_domain when the domains are
              # encoded separately, else global.
              "bn_groups": "auto",
              # One forward pass per domain (under jax.checkpoint) instead
              # of one over the whole batch: less peak memory.
              "encode_domains_separately": False},
    "byol": {},
    "mocov3": {"temperature": 1.0},
    "msbreg": {"lambda_s": 0.004, "lambda_b": 0.5,
               "centroid_mode": "leave_one_out",
               "renormalize_centroid": False, "singular_mode": "nuclear",
               "center_singular": False, "brownian_per": "image"},
    "vicreg": {"sim_coeff": 25.0, "std_coeff": 25.0, "cov_coeff": 1.0},
    "barlow_twins": {"lambd": 5e-3, "scale": 1.0},
    "dino": {"num_prototypes": 4096, "hidden_dim": 2048,
             "bottleneck_dim": 256, "num_layers": 3, "use_bn": False,
             "norm_last_layer": True, "student_temp": 0.1,
             "teacher_temp": 0.07, "warmup_teacher_temp": 0.04,
             "warmup_teacher_temp_steps": 0, "center_momentum": 0.9,
             "freeze_last_layer_steps": 0},
    "swav": {"num_prototypes": 3000, "temperature": 0.1, "epsilon": 0.05,
             "sinkhorn_iters": 3, "queue_size": 0, "queue_start_step": 0,
             "freeze_prototypes_steps": 0},
    "relicv2": {"temperature": 0.2, "beta": 1.0, "num_negatives": 10,
                "kl_mode_large": "reverse", "kl_mode_small": "transpose",
                "contrast_scale": 1.0},
}

# BatchNorm statistics of the views, per method's reference implementation
# (`model.view_batch_stats`): "joint" = one pass over all views (SimCLR's TF
# code); "per_view" = one pass per view (solo-learn, deepmind BYOL);
# "per_group" = one pass per resolution group (DINO / SwAV multi-crop).
VIEW_BATCH_STATS: dict[str, str] = {
    "simclr": "joint", "mdssl": "joint", "byol": "per_view",
    "mocov3": "per_view", "msbreg": "per_view", "vicreg": "per_view",
    "barlow_twins": "per_view", "relicv2": "per_view", "dino": "per_group",
    "swav": "per_group",
}
VIEW_BATCH_STATS_MODES = ("joint", "per_view", "per_group")

# The two augmentation columns (BYOL / RELICv2 "odd" and "even", §1.4, §3.6).
_AUGMENT_ODD = dict(flip_p=0.5, jitter_p=0.8, brightness=0.4, contrast=0.4,
                    saturation=0.2, hue=0.1, gray_p=0.2, blur_p=0.1,
                    blur_sigma=(0.1, 2.0), blur_kernel_frac=0.1,
                    solarize_p=0.2,
                    # torchvision's factor in [1-a, 1+a] ("multiplicative")
                    # or BYOL / RELICv2's delta in [-a, a] ("additive").
                    brightness_mode="multiplicative")
AUGMENT_KEYS = tuple(_AUGMENT_ODD)
BRIGHTNESS_MODES = ("multiplicative", "additive")
EVAL_TRAIN_SPLITS = ("full", "pretraining")


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


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads `path/to/config.py[:arg]` the way `--config=` does.

  Config files are loaded by path (they are not a package); no config file
  imports another, shared pieces live in `mdssl_jax.presets`.

  Args:
    spec: a config file path, optionally followed by `:<arg>` (the string
      passed to its `get_config`), e.g. "configs/byol.py:demo".
  """
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  path, sep, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"Config file {path!r} does not exist.")
  name = "_mdssl_config_" + os.path.splitext(os.path.basename(path))[0]
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if sep else module.get_config()


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """Sets dotted keys of `config` in place (`{"data.domains": [...]}`).

  Values may be of any JSON type (lists of domain dicts included); numbers
  are cast to the type of the value they replace.

  Raises:
    ConfigError: a key that is not in `config`.
  """
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise ConfigError(f"Override {key!r}: no config key {part!r}.")
      node = node[part]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      raise ConfigError(f"Override {key!r}: unknown config key.")
    old = node[leaf]
    if isinstance(old, float) and isinstance(value, int) and not isinstance(
        value, bool):
      value = float(value)
    if isinstance(old, tuple) and isinstance(value, list):
      value = tuple(value)
    node[leaf] = value
  return config


def method_args(method: str) -> ml_collections.ConfigDict:
  """The default `config.method_args` of `method`."""
  if method not in METHOD_ARGS:
    raise ConfigError(f"Unknown method {method!r}; available: "
                      f"{', '.join(sorted(METHOD_ARGS))}. Set "
                      "--config.method=<one of these>.")
  return ml_collections.ConfigDict(dict(METHOD_ARGS[method]))


def evaluator(type_name: str, **overrides: Any) -> ml_collections.ConfigDict:
  """One `config.evals` entry: the type's defaults with `overrides` applied.

  Example: `c.evals.probe_long = config_lib.evaluator("linear_probe",
  steps=30_000)`.
  """
  entry = eval_registry.default_config(type_name)
  unknown = sorted(set(overrides) - set(entry))
  if unknown:
    raise ConfigError(f"Evaluator type {type_name!r} has no keys {unknown}; "
                      f"its keys are {sorted(entry)}.")
  entry.update(overrides)
  return entry


def get_default_config(method: str = "mdssl") -> ml_collections.ConfigDict:
  """Every key the trainer reads, with defaults (a CIFAR-scale ResNet-18)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.method = method
  c.method_args = method_args(method)

  c.data = ml_collections.ConfigDict({
      # Domain dicts; their keys are declared by each source (see
      # mdssl_jax/data/sources/). Default: the three offline demo domains.
      "domains": [dict(name=n, source="demo", demo_name=n)
                  for n in ("digits", "photos", "textures")],
      "image_size": 32,
      "resize": "pad",  # "pad" (28 -> 32 with 2 px borders) or "resize".
      "data_dir": None,  # TFDS data_dir; None: the TFDS default.
      "download": False,  # Let TFDS download missing sets (needs network).
      "per_domain_batch": 32,  # N images per domain per step.
      # Input shards S: each holds 1/S of every domain (index i of a
      # domain's train split is in shard i mod S; streaming TFDS domains
      # read tfds.even_splits) and yields N/S rows of each domain per step.
      # A process reads only its shards (S/process_count of them); -1: one
      # per process. The global batch then lists shard 0's D·N/S rows
      # (domain-major), then shard 1's, ...; fix S to reproduce a run
      # exactly on another number of hosts.
      "input_shards": -1,
      "mean": (0.485, 0.456, 0.406),  # [0, 1] units.
      "std": (0.229, 0.224, 0.225),
      "prefetch": 2,
      "num_parallel_calls": -1,  # -1: tf.data.AUTOTUNE.
      # TFDS domains larger than this (or with in_memory=False) stream from
      # disk instead of being held as uint8 arrays.
      "max_in_memory_gb": 8.0,
      # Streaming TFDS domains: examples in the (seeded, per-epoch) shuffle
      # buffer; each holds one encoded image (~110 KB for ImageNet JPEGs).
      "shuffle_buffer": 10_000,
      # Data seed (demo generation, subsampling, stream order). Separate
      # from config.seed so runs with other training seeds see the same data.
      "seed": 0,
      # Domain ids of the batch: "given" (each configured domain is one),
      # or pseudo-domains found by k-means on the mixture ("kmeans"), with
      # the robust outlier filter ("robust_kmeans"); see c.pseudo_domains.
      "domain_labels": "given",
  })
  # MDSSL without domain labels (seed 000 §4, METHODS §2.8); read only when
  # data.domain_labels != "given". The configured domains are pooled into
  # one unlabelled mixture; their identity is used only to score clusters.
  c.pseudo_domains = ml_collections.ConfigDict({
      "num_domains": -1,  # M; -1: as many as configured domains.
      "warmup_steps": 480,  # Plain SimCLR on mixed batches first.
      "every_steps": 2400,  # Re-cluster at warmup + r·every_steps.
      "eps0": 1.0,  # Robust ε of the first round, decaying
      "eps_final": 1e-3,  # exponentially to this at the last round.
      # "second_to_nearest": d2²/d1² (the stated intent); the literal eq. 5
      # is "farthest_to_nearest" (they agree for M = 2).
      "outlier_rule": "second_to_nearest",
      # Filtered rows: "drop" from the sampling pool for the round, or
      # "mask" them out of every term of the loss.
      "ignored": "drop",
      # What is clustered: ℓ2-normalised projector outputs z (METHODS
      # §2.8 [assumed]) or backbone features, of eval-transform images.
      "embedding": "projection",
      "restarts": 3, "iters": 100, "tol": 1e-4,  # k-means (Lloyd, k-means++)
  })
  c.views = ml_collections.ConfigDict({
      "large": dict(count=2, size=32, crop_area=(0.08, 1.0)),
      "small": dict(count=0, size=16, crop_area=(0.05, 0.14)),
  })
  c.augment = ml_collections.ConfigDict({
      "aspect": (3 / 4, 4 / 3),
      "odd": dict(_AUGMENT_ODD),
      "even": dict(_AUGMENT_ODD, blur_p=1.0, solarize_p=0.0),
  })
  # RELICv2 background removal (§3.7) for large views of domains with
  # masks: off unless a config turns it on (relicv2 configs: p_m = 0.1).
  c.saliency = ml_collections.ConfigDict({"prob": 0.0, "min_coverage": 0.05})

  c.model = ml_collections.ConfigDict({
      # "resnet" (the keys below) or "vit" (the keys of model.vit).
      "name": "resnet",
      "depth": 18, "width_multiplier": 1.0, "stem": "cifar",
      "norm": "batch", "conv_impl": "auto", "zero_init_residual": False,
      "view_batch_stats": VIEW_BATCH_STATS.get(method, "joint"),
      # Vision Transformer (mdssl_jax/models/vit.py): size "tiny" | "small" |
      # "base" | "large"; position embeddings cover (image_size /
      # patch_size)² patches and are resampled for other view sizes.
      "vit": dict(size="small", patch_size=4, image_size=32,
                  pos_embed="learned", pooling="cls",
                  # MoCo v3: keep the random patch projection fixed.
                  frozen_patch_embed=False,
                  # Stochastic depth of the online encoder in training,
                  # rising linearly to this rate at the last block (DINO
                  # ViT-S: 0.1); the EMA target / teacher never drops.
                  drop_path_rate=0.0)})
  c.projector = ml_collections.ConfigDict({
      "hidden_dims": (2048,), "out_dim": 128, "norm": "batch",
      "last_norm": "none", "activation": "relu"})
  c.predictor = ml_collections.ConfigDict({
      "hidden_dims": (4096,), "out_dim": 128, "norm": "batch",
      "last_norm": "none", "activation": "relu"})
  c.compute_dtype = "float32"
  # Keep freed host memory mapped for reuse (glibc mallopt, see
  # mdssl_jax/host_memory.py): a CPU step stops re-faulting its working set.
  c.keep_host_memory = True

  c.optim = ml_collections.ConfigDict({
      "name": "lars", "base_lr": 0.3, "lr_scaling": "linear",
      "lr_batch_divisor": 256, "weight_decay": 1e-6, "momentum": 0.9,
      "trust_coefficient": 1e-3, "clip_lr": False, "nesterov": False,
      "b1": 0.9, "b2": 0.999,
      # A non-negative step count wins over epochs.
      "warmup_steps": -1, "warmup_epochs": 10.0,
      "end_lr_factor": 0.0, "grad_clip_norm": 0.0,
      # "constant": weight_decay throughout; "cosine": from weight_decay to
      # weight_decay_end over the run (DINO: 0.04 -> 0.4).
      "weight_decay_schedule": "constant", "weight_decay_end": 0.0})
  c.ema = ml_collections.ConfigDict({"base": 0.996, "schedule": "cosine"})
  c.total_steps = -1  # A non-negative step count wins over total_epochs.
  c.total_epochs = 100.0
  # Compute-normalised budget (seed 003, METHODS §6.4): C images seen
  # (views not counted) sets total_steps = ceil(C / global batch); -1: off
  # (then total_steps / total_epochs decide). Every run records C, the
  # epochs E = C/N and the diversity D = N/C of its N training images.
  c.budget = ml_collections.ConfigDict({"images_seen": -1})

  c.mesh_shape = -1  # Devices used (-1: all of them, on every host).
  # Sharding (mdssl_jax/sharding.py): fsdp = 1 is pure data parallelism;
  # fsdp = k > 1 shards parameters, optimiser state and the EMA target
  # over a k-device `fsdp` axis (leaves ≥ fsdp_min_size elements, or as
  # the (regex, axis | -1 | None) `rules` say); the batch uses all devices.
  c.mesh = ml_collections.ConfigDict({
      "fsdp": 1, "fsdp_min_size": 2 ** 14, "rules": ()})
  c.log_every = 50
  c.checkpoint = ml_collections.ConfigDict({
      "every_steps": 1000, "keep": 3, "resume": True, "async_save": True,
      # Resuming with a config that changes what is trained (method, model,
      # seed, data, optimiser...; see workdir.FREE_KEYS for what may
      # change): "strict" refuses unless allow_changes names the keys (or
      # their prefixes, e.g. "optim"); "allow" accepts any change. Accepted
      # changes are recorded in <workdir>/config_history.jsonl.
      "resume_policy": "strict", "allow_changes": ()})
  # Settings shared by every evaluator of the suite.
  c.eval = ml_collections.ConfigDict({
      "every_steps": 0,  # Periodic evaluation during training (0: off).
      "at_end": True,
      "feature_batch_size": 256,
      "max_train_per_domain": 10_000,
      "max_test_per_domain": 5_000,
      # Labelled split the evaluators train on when data.domains use a
      # `fraction` or a `mix`: "full" (the whole dataset, as seed 003's
      # probes on all of ImageNet) or "pretraining" (the rows pretrained on).
      "train_split": "full",
  })
  # Named evaluators: name -> {type, <the type's keys>}.
  c.evals = ml_collections.ConfigDict({
      "knn": eval_registry.default_config("knn"),
      "probe": eval_registry.default_config("linear_probe"),
  })
  # Online monitors on the stop-gradient backbone features of view 1 (see
  # mdssl_jax/online_monitors.py); they never touch the SSL gradient.
  c.monitors = ml_collections.ConfigDict({
      # A linear classifier over every domain's classes, trained alongside.
      "online_probe": dict(enabled=True, optimizer="adam", lr=1e-3,
                           weight_decay=0.0, momentum=0.9),
      # Weighted kNN (METHODS §6.2) of each batch against a FIFO bank of
      # the last bank_size features, same-domain neighbours only.
      "online_knn": dict(enabled=True, bank_size=4096, k=20,
                         temperature=0.07),
      # RankMe of the bank (of the batch when the bank is off).
      "rankme": dict(enabled=True, every_steps=100, eps=1e-7),
  })
  return c


# ---- Derived quantities ------------------------------------------------------


def uses_pseudo_domains(config: ml_collections.ConfigDict) -> bool:
  """Whether the batch's domains are k-means pseudo-domains (§2.8)."""
  return config.data.domain_labels != "given"


def batch_domains(config: ml_collections.ConfigDict) -> int:
  """D of the batch layout: configured domains, or M pseudo-domains."""
  if uses_pseudo_domains(config) and config.pseudo_domains.num_domains > 0:
    return config.pseudo_domains.num_domains
  return len(config.data.domains)


def global_batch(config: ml_collections.ConfigDict) -> int:
  """Images per step: D batch domains × data.per_domain_batch (views
  excluded); D = M under pseudo-domains (`batch_domains`)."""
  return batch_domains(config) * config.data.per_domain_batch


@dataclasses.dataclass(frozen=True)
class RunShape:
  """Quantities derived from a validated config and the training-set size.

  Attributes:
    global_batch: images per optimiser step (D·N).
    num_train_examples: training images over all domains.
    steps_per_epoch: optimiser steps in one pass over the training data
      (at least 1).
    total_steps: run length in optimiser steps.
    warmup_steps: learning-rate warm-up steps (≤ total_steps).
  """
  global_batch: int
  num_train_examples: int
  steps_per_epoch: float
  total_steps: int
  warmup_steps: int

  @property
  def images_seen(self) -> int:
    """C: images processed by the whole run (views not counted)."""
    return self.total_steps * self.global_batch

  @property
  def epochs(self) -> float:
    """E = C / N."""
    return self.images_seen / self.num_train_examples

  @property
  def diversity(self) -> float:
    """D = N / C = 1 / E (seed 003)."""
    return self.num_train_examples / self.images_seen

  def budget(self) -> dict[str, float]:
    """{"images_seen" C, "unique_images" N, "epochs" E, "diversity" D}."""
    return {"images_seen": self.images_seen,
            "unique_images": self.num_train_examples,
            "epochs": self.epochs, "diversity": self.diversity}


def _pick_steps(steps: int, epochs: float, steps_per_epoch: float) -> int:
  if steps is not None and steps >= 0:
    return int(steps)
  return int(math.ceil(epochs * steps_per_epoch))


def run_shape(config: ml_collections.ConfigDict,
              num_train_examples: int) -> RunShape:
  """Resolves `*_steps` / `*_epochs` into step counts, once per run.

  Args:
    config: a validated config.
    num_train_examples: training images summed over the domains.
  """
  batch = global_batch(config)
  per_epoch = max(num_train_examples / batch, 1.0)
  total = _pick_steps(config.total_steps, config.total_epochs, per_epoch)
  if config.budget.images_seen > 0:
    total = int(math.ceil(config.budget.images_seen / batch))
  warmup = _pick_steps(config.optim.warmup_steps, config.optim.warmup_epochs,
                       per_epoch)
  if total <= 0:
    raise ConfigError(f"total_steps resolves to {total}; set "
                      "--config.total_steps (> 0) or total_epochs (> 0).")
  return RunShape(global_batch=batch, num_train_examples=num_train_examples,
                  steps_per_epoch=per_epoch, total_steps=total,
                  warmup_steps=min(warmup, total))


# ---- Validation --------------------------------------------------------------


def _schema(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The reference schema for `config`: its method's args, its evaluators."""
  ref = get_default_config(config.method)
  ref.evals = ml_collections.ConfigDict()
  for name, entry in config.evals.items():
    etype = entry.get("type") if hasattr(entry, "get") else None
    # An unknown type is reported by _evaluator_errors, not as a bad key.
    ref.evals[name] = (eval_registry.default_config(etype)
                       if etype in eval_registry.available() else entry)
  return ref


def _unknown_keys(cfg, ref, prefix="") -> list[str]:
  """Keys of `cfg` missing from the schema `ref`, with close matches."""
  errors = []
  for key in cfg.keys():
    path = prefix + key
    if key not in ref:
      close = difflib.get_close_matches(key, list(ref.keys()), n=1)
      hint = f" Did you mean {prefix + close[0]!r}?" if close else ""
      if prefix == "eval." and key in eval_overrides.LEGACY_KEYS:
        name, field = eval_overrides.LEGACY_KEYS[key]
        hint = f" It moved to 'evals.{name}.{field}'."
      errors.append(f"Unknown config key {path!r}.{hint} Valid keys here: "
                    f"{sorted(ref.keys())}.")
    elif isinstance(ref[key], ml_collections.ConfigDict):
      if isinstance(cfg[key], ml_collections.ConfigDict):
        errors += _unknown_keys(cfg[key], ref[key], path + ".")
  return errors


def _non_finite(cfg, prefix="") -> list[str]:
  """Float hyperparameters that are NaN or infinite (comparisons miss them)."""
  errors = []
  items = cfg.items() if hasattr(cfg, "items") else enumerate(cfg)
  for key, value in items:
    path = f"{prefix}{key}"
    if hasattr(value, "items"):
      errors += _non_finite(value, path + ".")
    elif isinstance(value, (list, tuple)):
      errors += _non_finite(value, path + ".")
    elif isinstance(value, float) and not math.isfinite(value):
      errors.append(f"{path}={value}: must be a finite number.")
  return errors


def _evaluator_errors(config: ml_collections.ConfigDict) -> list[str]:
  errors = []
  if not isinstance(config.evals, ml_collections.ConfigDict):
    return ["evals must be a dict of named evaluators, e.g. "
            "{'knn': {'type': 'knn', ...}}."]
  for name, entry in config.evals.items():
    etype = entry.get("type") if hasattr(entry, "get") else None
    if etype not in eval_registry.available():
      errors.append(f"evals.{name}.type={etype!r}; use one of "
                    f"{eval_registry.available()}.")
      continue
    missing = sorted(set(eval_registry.get(etype).DEFAULTS) - set(entry))
    if missing:
      errors.append(f"evals.{name} lacks {missing}; build the entry with "
                    f"config_lib.evaluator({etype!r}, ...), which fills "
                    "the defaults.")
      continue
    errors += [f"evals.{name}: {e}"
               for e in eval_registry.get(etype).validate(entry)]
  return errors


def _core_errors(config: ml_collections.ConfigDict) -> list[str]:
  """Checks of the trainer's own keys."""
  errors = []
  if config.data.per_domain_batch < 1:
    errors.append("data.per_domain_batch must be ≥ 1.")
  if config.compute_dtype not in DTYPES:
    errors.append(f"compute_dtype={config.compute_dtype!r}; use one of "
                  f"{DTYPES}.")
  if config.optim.name not in OPTIMIZERS:
    errors.append(f"optim.name={config.optim.name!r}; use one of "
                  f"{OPTIMIZERS}.")
  if config.optim.lr_scaling not in LR_SCALINGS:
    errors.append(f"optim.lr_scaling={config.optim.lr_scaling!r}; use one "
                  f"of {LR_SCALINGS}.")
  if not config.optim.base_lr > 0:
    errors.append("optim.base_lr must be > 0.")
  if config.total_steps == 0:
    errors.append("total_steps=0: set it > 0, or to -1 to train for "
                  "total_epochs.")
  elif (config.total_steps < 0 and config.total_epochs <= 0
        and config.budget.images_seen <= 0):
    errors.append("Set total_steps (> 0) or total_epochs (> 0).")
  if config.budget.images_seen == 0 or config.budget.images_seen < -1:
    errors.append(f"budget.images_seen={config.budget.images_seen}: use "
                  "C > 0 images, or -1 (off).")
  elif config.budget.images_seen > 0 and config.total_steps >= 0:
    errors.append(f"budget.images_seen={config.budget.images_seen} and "
                  f"total_steps={config.total_steps} both set the run "
                  "length; drop one (--config.total_steps=-1 to use the "
                  "budget).")
  if config.optim.warmup_steps < 0 and config.optim.warmup_epochs < 0:
    errors.append("Set optim.warmup_steps (≥ 0) or optim.warmup_epochs "
                  "(≥ 0).")
  if not 0.0 <= config.ema.base <= 1.0:
    errors.append(f"ema.base={config.ema.base} must be in [0, 1].")
  if config.ema.schedule not in EMA_SCHEDULES:
    errors.append(f"ema.schedule must be one of {EMA_SCHEDULES}.")
  if not isinstance(config.keep_host_memory, bool):
    errors.append("keep_host_memory must be True or False.")
  if config.log_every < 1:
    errors.append("log_every must be ≥ 1.")
  if config.checkpoint.keep < 1:
    errors.append("checkpoint.keep must be ≥ 1 (finished checkpoints are "
                  "never all deleted).")
  if config.checkpoint.resume_policy not in ("strict", "allow"):
    errors.append(f"checkpoint.resume_policy="
                  f"{config.checkpoint.resume_policy!r}; use 'strict' or "
                  "'allow'.")
  if not all(isinstance(k, str) for k in config.checkpoint.allow_changes):
    errors.append("checkpoint.allow_changes must hold config keys or "
                  "prefixes, e.g. --config.checkpoint.allow_changes="
                  "optim.base_lr,seed.")
  for key in ("feature_batch_size", "max_train_per_domain",
              "max_test_per_domain"):
    if config.eval[key] < 1:
      errors.append(f"eval.{key} must be ≥ 1.")
  if config.eval.train_split not in EVAL_TRAIN_SPLITS:
    errors.append(f"eval.train_split={config.eval.train_split!r}; use one "
                  f"of {EVAL_TRAIN_SPLITS}.")
  for col in ("odd", "even"):
    mode = config.augment[col].brightness_mode
    if mode not in BRIGHTNESS_MODES:
      errors.append(f"augment.{col}.brightness_mode={mode!r}; use one of "
                    f"{BRIGHTNESS_MODES}.")
  if config.eval.every_steps < 0:
    errors.append("eval.every_steps must be ≥ 0 (0: no periodic "
                  "evaluation).")
  return (errors + _model_errors(config) + _optim_errors(config)
          + _monitor_errors(config))


def _model_errors(config: ml_collections.ConfigDict) -> list[str]:
  """Checks of `config.model` (the ViT keys only when model.name="vit")."""
  name = config.model.name
  if name not in MODEL_NAMES:
    return [f"model.name={name!r}; use one of {MODEL_NAMES}."]
  if name != "vit":
    return []
  # The names live with the model; jax is imported by validate anyway.
  from mdssl_jax.models import vit  # pylint: disable=g-import-not-at-top
  errors = []
  v = config.model.vit
  for key, value, valid in (("size", v.size, tuple(vit.VIT_SIZES)),
                            ("pos_embed", v.pos_embed, vit.POS_EMBEDS),
                            ("pooling", v.pooling, vit.POOLINGS)):
    if value not in valid:
      errors.append(f"model.vit.{key}={value!r}; use one of {valid}.")
  if not isinstance(v.frozen_patch_embed, bool):
    errors.append("model.vit.frozen_patch_embed must be True or False.")
  if not 0.0 <= v.drop_path_rate < 1.0:
    errors.append(f"model.vit.drop_path_rate={v.drop_path_rate} must be in "
                  "[0, 1).")
  p = v.patch_size
  if p < 1:
    return errors + [f"model.vit.patch_size={p} must be ≥ 1."]
  sizes = [("model.vit.image_size", v.image_size),
           ("views.large.size", config.views.large.size),
           ("data.image_size", config.data.image_size)]
  if config.views.small.count > 0:
    sizes.append(("views.small.size", config.views.small.size))
  for key, size in sizes:
    if size % p:
      errors.append(
          f"{key}={size} is not a multiple of model.vit.patch_size={p}: "
          f"the ViT cuts images into {p}×{p} patches. Set it to a "
          f"multiple of {p} (e.g. {max(p, size - size % p)}) or change "
          "the patch size.")
  return errors


def _optim_errors(config: ml_collections.ConfigDict) -> list[str]:
  """Checks of the weight-decay and clipping keys of `config.optim`."""
  errors = []
  o = config.optim
  if o.weight_decay_schedule not in WEIGHT_DECAY_SCHEDULES:
    errors.append(f"optim.weight_decay_schedule="
                  f"{o.weight_decay_schedule!r}; use one of "
                  f"{WEIGHT_DECAY_SCHEDULES}.")
  for key in ("weight_decay", "weight_decay_end"):
    if o[key] < 0:
      errors.append(f"optim.{key}={o[key]} must be ≥ 0.")
  if o.grad_clip_norm < 0:
    errors.append(f"optim.grad_clip_norm={o.grad_clip_norm} must be ≥ 0 "
                  "(0: no clipping).")
  return errors


MONITOR_OPTIMIZERS = ("adam", "sgd")


def _monitor_errors(config: ml_collections.ConfigDict) -> list[str]:
  """Checks of `config.monitors`."""
  errors = []
  mon = config.monitors
  for name in mon:
    if not isinstance(mon[name].enabled, bool):
      errors.append(f"monitors.{name}.enabled must be True or False.")
  probe = mon.online_probe
  if probe.optimizer not in MONITOR_OPTIMIZERS:
    errors.append(f"monitors.online_probe.optimizer={probe.optimizer!r}; "
                  f"use one of {MONITOR_OPTIMIZERS}.")
  if not probe.lr > 0:
    errors.append("monitors.online_probe.lr must be > 0.")
  if probe.weight_decay < 0:
    errors.append("monitors.online_probe.weight_decay must be ≥ 0.")
  if not 0 <= probe.momentum < 1:
    errors.append("monitors.online_probe.momentum must be in [0, 1).")
  knn = mon.online_knn
  batch = global_batch(config)
  if knn.enabled and knn.bank_size < batch:
    errors.append(f"monitors.online_knn.bank_size={knn.bank_size} must be "
                  f"≥ the global batch {batch} (each step inserts it).")
  if not 1 <= knn.k <= knn.bank_size:
    errors.append(f"monitors.online_knn.k={knn.k} must be in [1, "
                  f"bank_size={knn.bank_size}].")
  if not knn.temperature >= 1 / 80:
    errors.append(f"monitors.online_knn.temperature={knn.temperature} must "
                  "be ≥ 0.0125 (exp(1/T) must stay finite in float32).")
  if mon.rankme.every_steps < 1:
    errors.append("monitors.rankme.every_steps must be ≥ 1 (turn RankMe "
                  "off with monitors.rankme.enabled=False).")
  if not mon.rankme.eps > 0:
    errors.append("monitors.rankme.eps must be > 0 (the paper: 1e-7).")
  return errors


def _pseudo_domain_errors(config: ml_collections.ConfigDict) -> list[str]:
  """Checks of data.domain_labels and config.pseudo_domains."""
  labels = config.data.domain_labels
  if labels not in DOMAIN_LABELS:
    return [f"data.domain_labels={labels!r}; use one of {DOMAIN_LABELS}."]
  if labels == "given":
    return []
  pd = config.pseudo_domains
  errors = []
  if config.method != "mdssl":
    errors.append(f"data.domain_labels={labels!r} trains MDSSL with "
                  f"pseudo-domains; method={config.method!r} has no domain "
                  "terms. Set --config.method=mdssl or domain_labels=given.")
  m = batch_domains(config)
  if m < 2:
    errors.append(f"{m} pseudo-domain(s): k-means needs M ≥ 2. Set "
                  "--config.pseudo_domains.num_domains (M, the number of "
                  "domains in the mixture).")
  if pd.num_domains == 0 or pd.num_domains < -1:
    errors.append(f"pseudo_domains.num_domains={pd.num_domains}: use M ≥ 2 "
                  "or -1 (one per configured domain).")
  if pd.warmup_steps < 0:
    errors.append("pseudo_domains.warmup_steps must be ≥ 0.")
  if pd.every_steps < 1:
    errors.append("pseudo_domains.every_steps must be ≥ 1.")
  if not 0 < pd.eps_final <= pd.eps0:
    errors.append(f"pseudo_domains: need 0 < eps_final ≤ eps0, got "
                  f"eps_final={pd.eps_final}, eps0={pd.eps0}.")
  for key, choices in (("outlier_rule", OUTLIER_RULES),
                       ("ignored", IGNORED_MODES),
                       ("embedding", PSEUDO_EMBEDDINGS)):
    if pd[key] not in choices:
      errors.append(f"pseudo_domains.{key}={pd[key]!r}; use one of "
                    f"{choices}.")
  if pd.restarts < 1 or pd.iters < 1 or not pd.tol >= 0:
    errors.append("pseudo_domains: need restarts ≥ 1, iters ≥ 1, tol ≥ 0.")
  return errors


def input_shards(config: ml_collections.ConfigDict,
                 process_count: int | None = None) -> int:
  """S of `config.data.input_shards` (-1: one per process)."""
  if process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_count = jax.process_count()
  shards = int(config.data.input_shards)
  return process_count if shards == -1 else shards


def _mesh_errors(config: ml_collections.ConfigDict) -> list[str]:
  """config.mesh and data.input_shards, without devices."""
  errors = []
  mesh = config.mesh
  if not (isinstance(mesh.fsdp, int) and mesh.fsdp >= 1):
    errors.append(f"mesh.fsdp={mesh.fsdp!r} must be an integer ≥ 1 (1: "
                  "pure data parallel).")
  if mesh.fsdp_min_size < 1:
    errors.append("mesh.fsdp_min_size must be ≥ 1.")
  for rule in mesh.rules:
    ok = (isinstance(rule, (tuple, list)) and len(rule) == 2
          and isinstance(rule[0], str)
          and (rule[1] is None or isinstance(rule[1], int)))
    if ok:
      try:
        re.compile(rule[0])
      except re.error as e:
        errors.append(f"mesh.rules: bad regex {rule[0]!r}: {e}.")
    else:
      errors.append(f"mesh.rules entry {rule!r}: use (regex, axis) with "
                    "axis an int (-1: the largest divisible) or None "
                    "(replicated).")
  shards = config.data.input_shards
  if shards == 0 or shards < -1:
    errors.append(f"data.input_shards={shards}; use -1 (one per process) "
                  "or a positive count.")
  elif shards > 0 and config.data.per_domain_batch % shards:
    errors.append(f"data.per_domain_batch={config.data.per_domain_batch} "
                  f"is not divisible by data.input_shards={shards}: each "
                  "shard gives N/S rows of every domain per step.")
  if uses_pseudo_domains(config) and (shards > 1 or mesh.fsdp > 1):
    errors.append("pseudo-domains (data.domain_labels="
                  f"{config.data.domain_labels!r}) cluster the whole "
                  "training set in one process on a data-only mesh: use "
                  "data.input_shards=-1 on one host and mesh.fsdp=1.")
  return errors


def _batch_errors(config: ml_collections.ConfigDict) -> list[str]:
  """The global batch must split evenly over the devices and processes."""
  import jax  # pylint: disable=g-import-not-at-top
  available = jax.device_count()
  devices = config.mesh_shape if config.mesh_shape > 0 else available
  if devices > available:
    return [f"mesh_shape={devices} but only {available} devices are "
            "visible; use -1 for all of them."]
  if config.mesh.fsdp >= 1 and devices % config.mesh.fsdp:
    return [f"mesh.fsdp={config.mesh.fsdp} does not divide the {devices} "
            "devices; use a divisor (1: pure data parallel)."]
  shards, processes = input_shards(config), jax.process_count()
  if shards < 1:
    return []  # Reported by _mesh_errors.
  if shards % processes:
    return [f"data.input_shards={shards} is not a multiple of the "
            f"{processes} processes (each reads whole shards); use -1 or "
            f"a multiple of {processes}."]
  if config.data.per_domain_batch % shards:
    return [f"data.per_domain_batch={config.data.per_domain_batch} is not "
            f"divisible by the {shards} input shards (one per process); "
            f"use a multiple of {shards}."]
  batch = global_batch(config)
  if batch % devices:
    d = batch_domains(config)
    step = devices // math.gcd(devices, d)
    per = config.data.per_domain_batch
    return [f"The global batch {batch} ({d} domains × data.per_domain_batch="
            f"{per}) is not divisible by the {devices} devices. Set "
            f"--config.data.per_domain_batch to a multiple of {step} (e.g. "
            f"{max(step, per - per % step)}) or limit devices with "
            "--config.mesh_shape."]
  return []


def validate(config: ml_collections.ConfigDict, *,
             check_devices: bool = True) -> None:
  """Checks the whole config cheaply (no data loading, no compilation).

  Args:
    config: the run config.
    check_devices: also check that the global batch splits over the
      devices (training); evaluation of a finished run on another machine
      passes False.

  Raises:
    ConfigError: listing every problem, each with the key and the fix.
  """
  # Heavy modules are needed only here, at start-up.
  from mdssl_jax import methods  # pylint: disable=g-import-not-at-top
  from mdssl_jax.data import sources  # pylint: disable=g-import-not-at-top

  try:
    method_cls = methods.get_method(config.get("method"))
  except ValueError as e:
    raise ConfigError(str(e)) from None
  errors = _unknown_keys(config, _schema(config))
  if errors:
    raise ConfigError("\n".join(errors))
  errors += _non_finite(config)
  if errors:
    raise ConfigError("Invalid config:\n  - " + "\n  - ".join(errors))

  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    errors += method_cls.validate(config)
  for w in caught:
    warnings.warn(str(w.message), stacklevel=2)
  data_errors = sources.data_config_errors(config.data)
  errors += data_errors or sources.missing_sources(config.data)
  errors += _core_errors(config)
  errors += _pseudo_domain_errors(config)
  errors += _mesh_errors(config)
  errors += _evaluator_errors(config)
  if check_devices:
    errors += _batch_errors(config)
  if errors:
    raise ConfigError("Invalid config:\n  - " + "\n  - ".join(errors))
