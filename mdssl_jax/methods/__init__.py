"""Registry of SSL methods: name → :class:`~mdssl_jax.methods.base.Method`."""

from __future__ import annotations

from mdssl_jax.methods import base
from mdssl_jax.methods.byol import BYOL, MoCoV3, MSBReg
from mdssl_jax.methods.dino import DINO
from mdssl_jax.methods.redundancy import BarlowTwins, VICReg
from mdssl_jax.methods.relic import RELICv2
from mdssl_jax.methods.mdssl import MDSSL
from mdssl_jax.methods.simclr import SimCLR
from mdssl_jax.methods.swav import SwAV

_REGISTRY: dict[str, type[base.Method]] = {}


def register(cls: type[base.Method]) -> type[base.Method]:
  """Adds a method class to the registry under `cls.name`."""
  if not cls.name:
    raise ValueError(f"{cls.__name__} needs a non-empty `name`.")
  _REGISTRY[cls.name] = cls
  return cls


def get_method(name: str) -> type[base.Method]:
  """Looks a method up by name, with the list of valid names on error."""
  try:
    return _REGISTRY[name]
  except KeyError:
    raise ValueError(f"Unknown method {name!r}; available: "
                     f"{', '.join(sorted(_REGISTRY))}. Set "
                     "--config.method=<one of these>.") from None


def available() -> list[str]:
  """Registered method names, sorted."""
  return sorted(_REGISTRY)


for _cls in (SimCLR, MDSSL, BYOL, MoCoV3, MSBReg, VICReg, BarlowTwins, DINO,
             SwAV, RELICv2):
  register(_cls)
