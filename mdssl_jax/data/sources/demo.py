"""Source "demo": the offline built-in domains of ``demo_data``.

Synopsis::

  dict(name="digits", source="demo", demo_name="digits")

Keys: ``demo_name`` (required), one of ``demo_data.list_demo_domains()``.
The domain is generated at ``config.data.image_size`` from the data seed;
``class_subset`` takes label ids (the demo classes have no names) and
``max_train`` / ``max_test`` subsample class-stratified.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mdssl_jax.data import class_subsets
from mdssl_jax.data import demo_data
from mdssl_jax.data.domain import DomainData

KEYS: dict[str, Any] = {"demo_name": None}
REQUIRED = ("demo_name",)


def validate(domain: dict[str, Any]) -> list[str]:
  """The demo name must be a built-in one."""
  names = demo_data.list_demo_domains()
  if domain["demo_name"] not in names:
    return [f"unknown demo_name {domain['demo_name']!r}; valid demo names "
            f"are {list(names)}."]
  return []


def check_exists(domain: dict[str, Any]) -> list[str]:
  """Demo domains are generated: they always exist."""
  del domain
  return []


def load(domain: dict[str, Any], data_cfg: Any) -> DomainData:
  """Generates the domain, then applies class_subset and max_train/test."""
  seed = int(data_cfg["seed"])
  dom = demo_data.load_demo_domain(domain["demo_name"],
                                   image_size=int(data_cfg["image_size"]),
                                   seed=seed)
  if domain["class_subset"] is not None:
    dom = class_subsets.class_subset_domain(
        dom, class_subsets.resolve_class_subset(
            class_subsets.read_class_subset(domain["class_subset"]),
            names=None, num_classes=dom.num_classes,
            what=f"Domain {domain['name']!r}"))
  dom = class_subsets.subsample_domain(dom, domain["max_train"],
                                       domain["max_test"], seed)
  return dataclasses.replace(dom, name=domain["name"])
