"""Evaluation settings of saved configs: upgrading old ones, CLI overrides.

Synopsis::

  config = upgrade_config(ml_collections.ConfigDict(json.load(f)))
  apply_overrides(config, ["knn.k=200", "probe_steps=4000",
                           "max_test_per_domain=500"])

Override keys take three forms: a suite key of `config.eval`
(`max_test_per_domain`), `<evaluator>.<key>` for an entry of `config.evals`
(`knn.k`, `probe.steps`; `eval.` / `evals.` prefixes are accepted too), and
the flat names of the old `config.eval` block (:data:`LEGACY_KEYS`,
`knn_k`, `probe_steps`, ...). Light: imports no TensorFlow, JAX or Flax.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

import ml_collections

from mdssl_jax.evaluation import registry

# Old flat `config.eval` keys -> (evaluator name, key) in `config.evals`.
LEGACY_KEYS: dict[str, tuple[str, str]] = {
    "knn_k": ("knn", "k"),
    "knn_temperature": ("knn", "temperature"),
    "knn_chunk_size": ("knn", "chunk_size"),
    "probe_steps": ("probe", "steps"),
    "probe_batch_size": ("probe", "batch_size"),
    "probe_lr": ("probe", "lr"),
    "probe_momentum": ("probe", "momentum"),
    "probe_nesterov": ("probe", "nesterov"),
    "probe_weight_decay": ("probe", "weight_decay"),
    "probe_schedule": ("probe", "schedule"),
    "probe_standardize": ("probe", "standardize"),
    "probe_seed": ("probe", "seed"),
}
# The evaluators the old flat keys configured: name -> type.
_LEGACY_TYPES = {"knn": "knn", "probe": "linear_probe"}
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")
# Sections whose entries a config saved before they existed must have off
# (it was trained without them): section -> the entries' on/off key.
_OFF_WHEN_ABSENT = {"monitors": "enabled"}


def _flat_to_evals(config: ml_collections.ConfigDict) -> None:
  """Moves the old flat `config.eval` keys to `config.evals` (in place)."""
  # Here, not at the top: config_lib may import this module's LEGACY_KEYS.
  from mdssl_jax import config_lib  # pylint: disable=g-import-not-at-top
  suite = config_lib.get_default_config().eval.to_dict()
  evals = {name: registry.default_config(etype).to_dict()
           for name, etype in _LEGACY_TYPES.items()}
  new_eval = {}
  for key, value in config.eval.items():
    if key in LEGACY_KEYS:
      name, field = LEGACY_KEYS[key]
      if key == "knn_chunk_size" and value is None:
        value = 0  # None meant automatic.
      evals[name][field] = value
    elif key in suite:
      new_eval[key] = value
    else:
      raise ValueError(f"Cannot upgrade the saved config: unknown key "
                       f"eval.{key}.")
  config.eval = ml_collections.ConfigDict({**suite, **new_eval})
  config.evals = ml_collections.ConfigDict(evals)


def _missing_defaults(config: ml_collections.ConfigDict) -> dict:
  """Top-level sections and evaluator keys the schema gained after
  `config` was saved: {"sections": [...], "evals": {name: [keys]}}."""
  from mdssl_jax import config_lib  # pylint: disable=g-import-not-at-top
  ref = config_lib.get_default_config(config.get("method", "mdssl"))
  sections = [k for k in ref.keys() if k not in config]
  evals = {}
  for name, entry in config.get("evals", {}).items():
    etype = entry.get("type") if hasattr(entry, "get") else None
    if etype in registry.available():
      keys = [k for k in registry.get(etype).DEFAULTS if k not in entry]
      if keys:
        evals[name] = keys
  return {"sections": sections, "evals": evals}


def upgrade_config(config: ml_collections.ConfigDict
                   ) -> ml_collections.ConfigDict:
  """Brings a config saved by an older version to the current schema.

  Old configs held kNN and probe settings as flat `config.eval` keys
  (:data:`LEGACY_KEYS`) and no `config.evals`. The upgrade moves them to
  `config.evals.knn` / `config.evals.probe` (type knn / linear_probe); keys
  the old config lacked take the evaluators' DEFAULTS, which equal the old
  built-in defaults (old configs always set probe_steps); an old
  `knn_chunk_size=None` (automatic) becomes 0. `config.eval` keeps the
  suite keys; missing ones take the schema defaults. Sections the schema
  gained later and evaluator keys their types gained later take their
  defaults, except that the entries of a missing `monitors` section are
  turned off (the run was trained without them, so its checkpoints hold
  no monitor state).

  Args:
    config: a config as loaded from a workdir's config.json.

  Returns:
    `config` itself if it is current, else an upgraded copy.

  Raises:
    ValueError: if the old eval block holds a key of neither kind.
  """
  legacy = "evals" not in config
  if not legacy:
    missing = _missing_defaults(config)
    if not missing["sections"] and not missing["evals"]:
      return config
  from mdssl_jax import config_lib  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(config.to_dict())
  if legacy:
    _flat_to_evals(config)
  missing = _missing_defaults(config)
  ref = config_lib.get_default_config(config.get("method", "mdssl"))
  for key in missing["sections"]:
    config[key] = ref[key]
    if key in _OFF_WHEN_ABSENT:
      for entry in config[key].values():
        entry[_OFF_WHEN_ABSENT[key]] = False
  for name, keys in missing["evals"].items():
    defaults = registry.get(config.evals[name].type).DEFAULTS
    for key in keys:
      config.evals[name][key] = defaults[key]
  return config


def valid_keys(config: ml_collections.ConfigDict) -> list[str]:
  """Every override key `apply_overrides` accepts for `config`."""
  keys = sorted(config.eval.keys())
  keys += sorted(f"{name}.{field}" for name, entry in config.evals.items()
                 for field in entry.keys() if field != "type")
  keys += sorted(k for k, (name, _) in LEGACY_KEYS.items()
                 if name in config.evals)
  return keys


def _locate(config: ml_collections.ConfigDict, key: str):
  """(ConfigDict, field) that override `key` sets."""
  for prefix in ("evals.", "eval."):
    if key.startswith(prefix):
      key = key[len(prefix):]
  if key in LEGACY_KEYS and LEGACY_KEYS[key][0] in config.evals:
    name, field = LEGACY_KEYS[key]
    return config.evals[name], field
  name, dot, field = key.partition(".")
  if dot and name in config.evals and field in config.evals[name]:
    if field == "type":
      raise ValueError(f"{key}: an evaluator's type cannot be overridden; "
                       "add an evaluator to the config instead.")
    return config.evals[name], field
  if not dot and key in config.eval:
    return config.eval, key
  valid = valid_keys(config)
  close = difflib.get_close_matches(key, valid, n=1)
  hint = f" Did you mean {close[0]!r}?" if close else ""
  raise ValueError(f"Unknown eval override key {key!r}.{hint} Valid keys: "
                   f"{', '.join(valid)}.")


def _parse(key: str, text: str, current):
  """`text` as a value of the type of `current`."""
  text = text.strip()
  if isinstance(current, bool):
    if text.lower() in _TRUE + _FALSE:
      return text.lower() in _TRUE
    raise ValueError(f"{key}={text!r}: expected true or false.")
  for kind, what in ((int, "an integer"), (float, "a number")):
    if isinstance(current, kind):
      try:
        return kind(text)
      except ValueError:
        raise ValueError(f"{key}={text!r}: expected {what}.") from None
  if isinstance(current, str):
    return text
  raise ValueError(f"{key}: values of type {type(current).__name__} cannot "
                   "be overridden.")


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Sequence[str] | Mapping[str, object]) -> None:
  """Sets `key=value` overrides in `config` (in place) and checks them.

  Values are converted to the type of the value they replace (booleans:
  true/false/yes/no/1/0).

  Args:
    config: an (upgraded) config with `eval` and `evals`.
    overrides: "key=value" strings (see the module doc for the key forms),
      or a {key: value} mapping.

  Raises:
    ValueError: for a malformed item, an unknown key (the message lists the
      valid ones), a value of the wrong type or one the evaluator rejects.
  """
  if isinstance(overrides, Mapping):
    overrides = [f"{k}={v}" for k, v in overrides.items()]
  for item in overrides:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
      raise ValueError(f"Eval override {item!r} is not key=value, e.g. "
                       "knn.k=200.")
    target, field = _locate(config, key)
    target[field] = _parse(key, text, target[field])
  errors = [f"evals.{name}: {e}" for name, entry in config.evals.items()
            for e in registry.get(entry.type).validate(entry)]
  if errors:
    raise ValueError("Invalid eval override: " + "; ".join(errors))
