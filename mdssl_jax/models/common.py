"""Argument checks shared by the model modules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def check_choice(name: str, value: Any, valid: Sequence[Any]) -> None:
  """Raises ValueError naming `name` unless `value` is one of `valid`."""
  if value not in valid:
    raise ValueError(
        f"Unknown {name}={value!r}; valid values are {list(valid)}.")
