"""Labelled image domains behind a registry of data sources.

Synopsis::

  from mdssl_jax.data import sources
  sources.validate_data_config(config.data)     # cheap, raises ValueError
  domains = sources.load_domains(config.data)   # list[DomainData]
  domains[0].num_train, domains[0].is_streaming
  sources.available()                           # ['demo', 'npz', 'tfds']

A domain entry of ``config.data.domains`` is a dict with ``name`` and
``source`` (a key of :data:`SOURCES`) plus the keys that source declares,
documented in its module: ``demo`` (built-in offline domains, ``demo_name``),
``npz`` (``path`` to a directory of train.npz / test.npz), ``tfds``
(``tfds_name``; held in memory or streamed from disk) and ``mix`` (``parts``:
one domain B ∪ A of several entries, scored on the first; ``sources/mix.py``).

Every source also accepts the :data:`COMMON_KEYS`: ``fraction`` (a
nested subset of the training split, ``f`` or ``(start, stop)``, from a
fixed shuffled index per dataset; ``data/fractions.py``), ``max_train`` /
``max_test`` (a deterministic subsample: stratified by class with the data
seed for demo/npz, the first examples in TFDS's fixed file order for tfds;
not for streaming train splits, use a split slice like
``split="train[:50000]"``), ``resize`` (overrides ``config.data.resize``)
and ``class_subset``: a list of class names and/or label ids, a text file
with one class name per line, or "imagenet100" (the CMC ImageNet-100 wnids
shipped in ``imagenet100_classes.txt``). Only those classes are kept and
their labels become 0..k-1 in the listed order, e.g.
``dict(name="in100", source="tfds", tfds_name="imagenet2012",
eval_split="validation", class_subset="imagenet100")``.

In-memory images end up [N, S, S, 3] uint8 with S = ``image_size`` (see
``mdssl_jax.data.resize``); streaming TFDS domains keep no arrays:
``DomainData`` carries a ``StreamSpec`` (see ``sources/tfds_streaming.py``).

Each source module declares (importable without TensorFlow: its loader
imports what it needs when called):

* ``KEYS``: its own config keys and their defaults (None: unset);
* ``REQUIRED``: the keys that must be set;
* ``validate(domain) -> list[str]``: cheap checks, no file or TFDS access;
* ``check_exists(domain) -> list[str]``: does the data exist (a directory, a
  TFDS builder name)?
* ``load(domain, data_cfg) -> DomainData``: the loader (``config.data``
  gives image_size, data_dir, download, seed, max_in_memory_gb).

``domain`` is always the resolved dict of :func:`resolve_domain` (every
declared key present, defaults filled in; for ``load`` its ``resize`` is
the effective mode). Messages name no domain: the registry prefixes
"Domain '<name>': ". Adding a source is one module plus one line in
:data:`SOURCES`.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Mapping

from absl import logging
import numpy as np

# pylint: disable=unused-import
from mdssl_jax.data.class_subsets import BUILTIN_CLASS_SUBSETS
from mdssl_jax.data.class_subsets import class_subset_errors
from mdssl_jax.data.class_subsets import read_class_subset
from mdssl_jax.data.class_subsets import resolve_class_subset
from mdssl_jax.data.class_subsets import subsample_indices
from mdssl_jax.data import fractions
from mdssl_jax.data.domain import DatasetNotFoundError
from mdssl_jax.data.domain import DomainData
from mdssl_jax.data.domain import RESIZE_MODES
from mdssl_jax.data.domain import StreamSpec
# pylint: enable=unused-import

# The registry: source name -> module (imported on first use).
SOURCES: dict[str, str] = {
    "demo": "mdssl_jax.data.sources.demo",
    "mix": "mdssl_jax.data.sources.mix",
    "npz": "mdssl_jax.data.sources.npz",
    "tfds": "mdssl_jax.data.sources.tfds",
}

# Keys every source accepts, with their defaults (resize None: the
# data-level config.data.resize).
COMMON_KEYS: dict[str, Any] = {
    "name": None, "source": None, "max_train": None, "max_test": None,
    "resize": None, "class_subset": None, "fraction": None,
}


def available() -> list[str]:
  """Registered source names."""
  return sorted(SOURCES)


def get(source: str) -> ModuleType:
  """The module implementing data source `source`."""
  if source not in SOURCES:
    raise ValueError(f"Unknown data source {source!r}; valid sources are "
                     f"{available()}.")
  return importlib.import_module(SOURCES[source])


# ----------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------


def _fill(domain_cfg: Any, module: ModuleType) -> dict[str, Any]:
  """The declared keys of `module` with defaults for unset (None) ones."""
  out = {}
  for key, default in {**COMMON_KEYS, **module.KEYS}.items():
    value = domain_cfg.get(key)
    out[key] = default if value is None else value
  return out


def _common_errors(domain: Mapping[str, Any]) -> list[str]:
  errors = []
  for key in ("max_train", "max_test"):
    value = domain[key]
    if value is not None and (not isinstance(value, (int, np.integer))
                              or value < 1):
      errors.append(f"'{key}' must be a positive integer or None, got "
                    f"{value!r}.")
  if domain["resize"] is not None and domain["resize"] not in RESIZE_MODES:
    errors.append(f"resize={domain['resize']!r}; use one of "
                  f"{list(RESIZE_MODES)}.")
  if domain["class_subset"] is not None:
    errors += class_subset_errors(domain["class_subset"])
  errors += fractions.fraction_errors(domain["fraction"])
  return errors


def domain_config_errors(domain_cfg: Any) -> list[str]:
  """Cheap checks of one domain entry (no file or TFDS access).

  Args:
    domain_cfg: dict or ConfigDict with ``name``, ``source`` and the keys
      that source declares.

  Returns:
    Problems found (empty if none), each naming the key and the fix.
  """
  if not hasattr(domain_cfg, "get"):
    return [f"Each entry of config.data.domains must be a dict, got "
            f"{type(domain_cfg).__name__}: {domain_cfg!r}."]
  if not domain_cfg.get("name"):
    return [f"Domain {domain_cfg!r} needs a 'name' (display name)."]
  label = f"Domain {domain_cfg['name']!r}"
  source = domain_cfg.get("source")
  if source not in SOURCES:
    return [f"{label}: unknown source {source!r}; valid sources are "
            f"{available()}."]
  module = get(source)
  allowed = set(COMMON_KEYS) | set(module.KEYS)
  unknown = sorted(set(domain_cfg.keys()) - allowed)
  if unknown:
    return [f"{label}: unknown keys {unknown} for source={source!r}; "
            f"allowed keys are {sorted(allowed)}."]
  domain = _fill(domain_cfg, module)
  missing = [k for k in module.REQUIRED if not domain[k]]
  if missing:
    return [f"{label}: source={source!r} needs '{k}'." for k in missing]
  return [f"{label}: {e}"
          for e in _common_errors(domain) + module.validate(domain)]


def validate_domain_config(domain_cfg: Any) -> None:
  """:func:`domain_config_errors`, raised as one ValueError."""
  errors = domain_config_errors(domain_cfg)
  if errors:
    raise ValueError("\n".join(errors))


def resolve_domain(domain_cfg: Any) -> dict[str, Any]:
  """A validated domain entry with every declared key, defaults filled in.

  Args:
    domain_cfg: one entry of ``config.data.domains``.

  Returns:
    dict of the common keys and the source's ``KEYS``.

  Raises:
    ValueError: the entry is invalid (see :func:`domain_config_errors`).
  """
  validate_domain_config(domain_cfg)
  return _fill(domain_cfg, get(domain_cfg["source"]))


def _data_level_errors(data_cfg: Any) -> list[str]:
  """Checks of the keys of ``config.data`` other than ``domains``."""
  errors = []
  size = data_cfg["image_size"]
  if not isinstance(size, (int, np.integer)) or size < 8:
    errors.append(f"config.data.image_size must be an integer >= 8, got "
                  f"{size!r}.")
  if data_cfg["resize"] not in RESIZE_MODES:
    errors.append(f"config.data.resize={data_cfg['resize']!r}; use one of "
                  f"{list(RESIZE_MODES)}.")
  batch = data_cfg["per_domain_batch"]
  if not isinstance(batch, (int, np.integer)) or batch < 1:
    errors.append(f"config.data.per_domain_batch must be a positive "
                  f"integer, got {batch!r}.")
  for key in ("mean", "std"):
    value = data_cfg[key]
    if len(value) != 3:
      errors.append(f"config.data.{key} must have 3 entries (RGB, in "
                    f"[0, 1] units), got {value!r}.")
    elif key == "std" and min(value) <= 0:
      errors.append(f"config.data.std must be positive, got {value!r}.")
    elif max(abs(v) for v in value) > 1.5:
      errors.append(f"config.data.{key}={value!r} looks like 0-255 units; "
                    "give it in [0, 1] units (e.g. 0.485, not 123.7).")
  if not data_cfg["max_in_memory_gb"] > 0:
    errors.append(f"config.data.max_in_memory_gb must be > 0, got "
                  f"{data_cfg['max_in_memory_gb']!r}.")
  buffer = data_cfg["shuffle_buffer"]
  if not isinstance(buffer, (int, np.integer)) or buffer < 1:
    errors.append(f"config.data.shuffle_buffer must be a positive integer "
                  f"(examples; streaming TFDS domains), got {buffer!r}.")
  return errors


def data_config_errors(data_cfg: Any) -> list[str]:
  """Cheap checks of ``config.data`` (no file or TFDS access).

  Args:
    data_cfg: a complete ``config.data`` ConfigDict (or dict), as built by
      ``config_lib.get_default_config``.

  Returns:
    Problems found (empty if none), each naming the key and the fix.
  """
  domains = data_cfg["domains"]
  if not domains or isinstance(domains, (str, bytes, Mapping)):
    return ["config.data.domains must be a non-empty list of domain "
            "dicts, e.g. [dict(name='digits', source='demo', "
            "demo_name='digits')]."]
  errors = []
  for domain_cfg in domains:
    errors += domain_config_errors(domain_cfg)
  names = [d.get("name") for d in domains if hasattr(d, "get")]
  duplicates = sorted({n for n in names if n and names.count(n) > 1})
  if duplicates:
    errors.append(f"config.data.domains has duplicate names {duplicates}; "
                  "give every domain a distinct 'name'.")
  return errors + _data_level_errors(data_cfg)


def validate_data_config(data_cfg: Any) -> None:
  """:func:`data_config_errors`, raised as one ValueError (one per line)."""
  errors = data_config_errors(data_cfg)
  if errors:
    raise ValueError("\n".join(errors))


def missing_sources(data_cfg: Any) -> list[str]:
  """Existence checks of every valid domain (its source's check_exists).

  Cheap (a directory listing, a TFDS registry lookup); run after
  :func:`validate_data_config` at start-up, so a missing dataset is named
  before anything is loaded or compiled.
  """
  errors = []
  for domain_cfg in data_cfg["domains"]:
    if domain_config_errors(domain_cfg):
      continue  # Reported by validation.
    module = get(domain_cfg["source"])
    errors += [f"Domain {domain_cfg['name']!r}: {e}"
               for e in module.check_exists(_fill(domain_cfg, module))]
  return errors


# ----------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------


def load_domain(domain_cfg: Any, data_cfg: Any,
                index_dir: str | None = None) -> DomainData:
  """Loads one domain: in memory at image_size × image_size, or streaming.

  Args:
    domain_cfg: one entry of ``config.data.domains``.
    data_cfg: ``config.data`` (``image_size``, ``resize``, ``data_dir``,
      ``download``, ``seed``, ``max_in_memory_gb``, ...); its ``domains``
      are not read.
    index_dir: where ``fraction`` subset indices are kept
      (``data.fractions``); None: computed, not stored.

  Returns:
    DomainData with [N, S, S, 3] uint8 images and int32 labels, or a
    streaming DomainData (``stream`` set, arrays None).

  Raises:
    ValueError: bad config, unreadable files, too large for memory.
    DatasetNotFoundError: TFDS data missing and download is False.
  """
  domain = resolve_domain(domain_cfg)
  if domain["resize"] is None:
    domain["resize"] = data_cfg["resize"]
  if domain["resize"] not in RESIZE_MODES:
    raise ValueError(f"resize={domain['resize']!r}; use one of "
                     f"{list(RESIZE_MODES)}.")
  if domain["source"] == "mix":
    dom = get("mix").load(domain, data_cfg, index_dir=index_dir)
  else:
    dom = get(domain["source"]).load(domain, data_cfg)
  return fractions.apply_fraction(dom, domain["fraction"],
                                  int(data_cfg["seed"]), index_dir,
                                  fractions.dataset_id(domain))


def load_domains(data_cfg: Any,
                 index_dir: str | None = None) -> list[DomainData]:
  """Loads every domain of ``config.data`` in order.

  The config is validated at start-up (``config_lib.validate``); each
  domain entry is checked again, cheaply, when it is resolved.

  Args:
    data_cfg: a complete ``config.data``.
    index_dir: where ``fraction`` subset indices are written once and read
      back (the trainer: ``<workdir>/data_index``); None: not stored.

  Returns:
    list of DomainData, one per entry of ``data_cfg.domains``.
  """
  out = []
  for domain_cfg in data_cfg["domains"]:
    dom = load_domain(domain_cfg, data_cfg, index_dir)
    masks = ", with saliency masks" if dom.has_masks else ""
    if dom.is_streaming:
      logging.info("Domain %r: streaming, %d train images, %d classes%s.",
                   dom.name, dom.num_train, dom.num_classes, masks)
    else:
      logging.info("Domain %r: %d train / %d test images, %d classes%s.",
                   dom.name, len(dom.train_images), len(dom.test_images),
                   dom.num_classes, masks)
    out.append(dom)
  return out
