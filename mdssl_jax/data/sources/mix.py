"""Source "mix": one training domain B ∪ A from several domain entries.

Synopsis::

  b = dict(name="c10", source="npz", path=".../cifar10", fraction=0.5)
  a_in = dict(name="c10_rest", source="npz", path=".../cifar10",
              fraction=(0.5, 1.0))                  # in-distribution A
  a_out = dict(name="tin", source="npz", path=".../tinyimagenet",
               max_train=5000)                      # out-of-distribution A
  dict(name="c10_plus_tin", source="mix", parts=[b, a_out])

Keys: ``parts`` (required), two or more domain entries of any in-memory
source (each with its own ``fraction`` / ``max_train`` / ...). Seed 003
§5 compares pretraining on B with pretraining on B ∪ A at the same budget
C (METHODS §6.4); a mix is that union as one domain. Its training split
is every part's training images, the first part (B) first; the other
parts' labels are -1 ("unlabelled"): the first part defines the label
space, the test split and the evaluation's train split (kNN, probes: B's
whole dataset, or only B's pretraining rows under
``eval.train_split="pretraining"``), so a run on B ∪ A is scored exactly
as a run on B. Saliency masks are
not carried (a mix has none).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mdssl_jax.data.domain import DomainData

KEYS: dict[str, Any] = {"parts": None}
REQUIRED = ("parts",)


def validate(domain: dict[str, Any]) -> list[str]:
  """Two or more valid, distinctly named, non-mix parts."""
  from mdssl_jax.data import sources  # pylint: disable=g-import-not-at-top
  parts = domain["parts"]
  if isinstance(parts, (str, bytes)) or not hasattr(parts, "__len__") or (
      len(parts) < 2):
    return ["'parts' must list two or more domain entries (B first, then "
            "the added sets A)."]
  errors = []
  for part in parts:
    if hasattr(part, "get") and part.get("source") == "mix":
      errors.append("a mix cannot contain another mix; list its parts.")
      continue
    errors += [f"part: {e}" for e in sources.domain_config_errors(part)]
  names = [p.get("name") for p in parts if hasattr(p, "get")]
  if len(set(names)) != len(names):
    errors.append(f"part names {names} must be distinct (each names its "
                  "subset index).")
  return errors


def check_exists(domain: dict[str, Any]) -> list[str]:
  """Every part's own existence check."""
  from mdssl_jax.data import sources  # pylint: disable=g-import-not-at-top
  errors = []
  for part in domain["parts"]:
    module = sources.get(part["source"])
    errors += [f"part {part['name']!r}: {e}" for e in
               module.check_exists(sources.resolve_domain(part))]
  return errors


def load(domain: dict[str, Any], data_cfg: Any,
         index_dir: str | None = None) -> DomainData:
  """Loads the parts and concatenates their training splits (B first)."""
  from mdssl_jax.data import sources  # pylint: disable=g-import-not-at-top
  parts = [sources.load_domain(p, data_cfg, index_dir=index_dir)
           for p in domain["parts"]]
  streaming = [p.name for p in parts if p.is_streaming]
  if streaming:
    raise ValueError(f"mix parts must be in memory; {streaming} stream "
                     "(set in_memory=True or raise max_in_memory_gb).")
  first = parts[0]
  labels = [first.train_labels.astype(np.int32)] + [
      np.full(p.num_train, -1, np.int32) for p in parts[1:]]
  return DomainData(
      name=domain["name"],
      train_images=np.concatenate([p.train_images for p in parts]),
      train_labels=np.concatenate(labels),
      test_images=first.test_images, test_labels=first.test_labels,
      num_classes=first.num_classes,
      eval_train_images=_eval_split(first)[0],
      eval_train_labels=_eval_split(first)[1])


def _eval_split(dom: DomainData) -> tuple[np.ndarray, np.ndarray]:
  if dom.eval_train_images is not None:
    return dom.eval_train_images, dom.eval_train_labels
  return dom.train_images, dom.train_labels
