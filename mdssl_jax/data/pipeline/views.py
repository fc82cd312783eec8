"""View specs: how each large and small view of a batch row is made.

View numbering follows METHODS.md §3.6: large views 1, 3, … and small view 1
use ``config.augment.odd``; large views 2, 4, … and small view 2 use
``config.augment.even``. Only large views may be saliency-masked (§3.7).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mdssl_jax import config_lib
from mdssl_jax.data.augment import ops as augment_ops


@dataclasses.dataclass(frozen=True)
class ViewSpec:
  """How to produce one view.

  Attributes:
    group: "large" or "small".
    size: output side in pixels.
    crop_area: (min, max) crop area fraction.
    params: keyword arguments of ``augment.augment_batch`` other than
      out_size/crop_area/mean/std (aspect plus the odd or even column).
    saliency: whether this view may be saliency-masked (large views only).
  """
  group: str
  size: int
  crop_area: tuple[float, float]
  params: dict
  saliency: bool


def _as_dict(cfg: Any) -> dict:
  return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


def _column(config: Any, name: str) -> dict:
  column = _as_dict(config.augment[name])
  keys = config_lib.AUGMENT_KEYS
  missing = sorted(set(keys) - set(column))
  unknown = sorted(set(column) - set(keys))
  if missing or unknown:
    raise ValueError(f"config.augment.{name} must have exactly the keys "
                     f"{list(keys)}; missing {missing}, unknown "
                     f"{unknown}.")
  mode = column["brightness_mode"]
  if mode not in augment_ops.BRIGHTNESS_MODES:
    raise ValueError(f"config.augment.{name}.brightness_mode={mode!r}; use "
                     f"one of {augment_ops.BRIGHTNESS_MODES}.")
  column["blur_sigma"] = tuple(column["blur_sigma"])
  return column


def view_size(config: Any, group: str) -> int:
  """Side of the views of `group` (None: config.data.image_size)."""
  size = config.views[group]["size"]
  return config.data.image_size if size is None else size


def _check_group(group: str, count: int, size: Any,
                 crop_area: tuple[float, ...]) -> None:
  if count < 0 or (group == "large" and count < 1):
    raise ValueError(f"config.views.{group}.count must be >= "
                     f"{1 if group == 'large' else 0}, got {count}.")
  if not isinstance(size, (int, np.integer)) or size < 1:
    raise ValueError(f"config.views.{group}.size must be a positive "
                     f"integer, got {size!r}.")
  if (len(crop_area) != 2 or not 0 < crop_area[0] <= crop_area[1] <= 1):
    raise ValueError(f"config.views.{group}.crop_area must be (min, max) "
                     f"with 0 < min <= max <= 1, got {crop_area!r}.")


def view_specs_from_config(config: Any) -> dict[str, list[ViewSpec]]:
  """Builds the large and small view specs (METHODS.md §3.6 numbering).

  Args:
    config: full config with ``views``, ``augment`` and ``data.image_size``.

  Returns:
    {"large": [ViewSpec] * L, "small": [ViewSpec] * S}; view j (0-based)
    uses the odd column when j is even (views 1, 3, … in 1-based numbering).
  """
  aspect = tuple(config.augment.aspect)
  columns = (_column(config, "odd"), _column(config, "even"))
  specs = {}
  for group in ("large", "small"):
    count = int(config.views[group]["count"])
    size = view_size(config, group)
    crop_area = tuple(float(a) for a in config.views[group]["crop_area"])
    _check_group(group, count, size, crop_area)
    specs[group] = [
        ViewSpec(group=group, size=int(size), crop_area=crop_area,
                 params=dict(columns[j % 2], aspect=aspect),
                 saliency=group == "large")
        for j in range(count)]
  return specs


def colour_params(spec: ViewSpec) -> dict:
  """augment_cropped_batch kwargs of a view (its params minus the crop)."""
  return {k: v for k, v in spec.params.items() if k != "aspect"}
