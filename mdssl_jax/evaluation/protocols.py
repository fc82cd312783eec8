"""Named evaluation protocols of the seeds, as `config.evals` entries.

Synopsis::

  from mdssl_jax.evaluation import protocols
  suite.evals.probe_relicv2 = protocols.relicv2()
  suite.evals.probe_solo = protocols.solo_learn(epochs=5, batch_size=128)
  suite.evals.knn200 = protocols.knn(200)
  suite.evals.ft_1pct = protocols.finetune_relicv2(0.01)

Each preset returns one evaluator entry (type + every key of the type,
`registry.default_config`) with the protocol's values (METHODS.md §3.9,
§6.1, §6.2); keyword arguments override any key (e.g. a CPU run shrinks
epochs and batch). Every linear probe keeps the project's
`standardize=True` (train-feature z-scoring, an affine reparametrisation
that lets one learning rate fit encoders of any feature scale); pass
`standardize=False` for the seeds' raw features. Light: no TF / JAX.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from mdssl_jax.evaluation import registry


def _entry(type_name: str, values: dict[str, Any],
           overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  entry = registry.default_config(type_name)
  keys = set(entry) - {"type"}
  unknown = sorted(set(overrides) - keys)
  if unknown:
    raise ValueError(f"Evaluator type {type_name!r} has no settable keys "
                     f"{unknown}; its keys are {sorted(keys)}.")
  entry.update({**values, **overrides})
  return entry


def mdssl(**overrides: Any) -> ml_collections.ConfigDict:
  """MDSSL linear probe (seed 000 Table 7; METHODS §6.1 row 1).

  SGD lr 0.1, momentum 0.9, batch 1024, 30 000 iterations, constant
  learning rate, no weight decay, no augmentation.
  """
  return _entry("linear_probe", dict(
      steps=30_000, epochs=0.0, batch_size=1024, lr=0.1, lr_scaling="none",
      momentum=0.9, nesterov=False, weight_decay=0.0, schedule="constant",
      augment="none"), overrides)


def relicv2(**overrides: Any) -> ml_collections.ConfigDict:
  """RELICv2 linear evaluation (seed 004 D.1; METHODS §3.9, §6.1 row 2).

  SGD Nesterov 0.9, cosine decay, lr 0.3·B/256 (released config), batch
  1024, 100 epochs, no weight decay; training views random-resized-crop
  (scale 0.08-1) + flip re-encoded by the frozen encoder, test features
  from the eval (centre-crop) transform.
  """
  return _entry("linear_probe", dict(
      epochs=100.0, batch_size=1024, lr=0.3, lr_scaling="linear",
      momentum=0.9, nesterov=True, weight_decay=0.0, schedule="cosine",
      augment="crop_flip"), overrides)


def solo_learn(**overrides: Any) -> ml_collections.ConfigDict:
  """solo-learn linear probe (seed 003; METHODS §6.1 row 3).

  SGD momentum 0.9, lr 1.0·B/256, batch 256, 100 epochs, × 0.1 at 60 %
  and 80 % of training (epochs 60 and 80), no weight decay.
  """
  return _entry("linear_probe", dict(
      epochs=100.0, batch_size=256, lr=1.0, lr_scaling="linear",
      momentum=0.9, nesterov=False, weight_decay=0.0, schedule="step",
      milestones=(0.6, 0.8), decay=0.1, augment="none"), overrides)


def msbreg_transfer(**overrides: Any) -> ml_collections.ConfigDict:
  """MSBReg transfer probe (seed 002; METHODS §6.1 row 4).

  SGD momentum 0.9, weight decay 1e-4, lr 0.2, × 0.1 twice at equal
  intervals (1/3 and 2/3 of training), batch 256, 28 epochs (Places205;
  iNat18 uses 84: pass epochs=84).
  """
  return _entry("linear_probe", dict(
      epochs=28.0, batch_size=256, lr=0.2, lr_scaling="none", momentum=0.9,
      nesterov=False, weight_decay=1e-4, schedule="step",
      milestones=(1 / 3, 2 / 3), decay=0.1, augment="none"), overrides)


def knn(k: int, **overrides: Any) -> ml_collections.ConfigDict:
  """Weighted kNN (Wu et al. 2018; METHODS §6.2): k neighbours, T = 0.07.

  The seeds report k = 20 (DINO) and k = 200 (Wu et al.); MSBReg both.
  """
  return _entry("knn", dict(k=int(k), temperature=0.07), overrides)


# RELICv2 D.2 settings per label fraction: batch, head lr, encoder lr, wd.
_FINETUNE_RELICV2 = {
    0.01: dict(batch_size=2048, head_lr=10.0, encoder_lr=0.04,
               weight_decay=0.0),
    0.1: dict(batch_size=512, head_lr=0.3, encoder_lr=0.004,
              weight_decay=1e-5),
}


def finetune_relicv2(fraction: float,
                     **overrides: Any) -> ml_collections.ConfigDict:
  """RELICv2 semi-supervised fine-tuning (seed 004 D.2; METHODS §3.9).

  20 epochs over the labelled subset, × 0.2 at epochs 12 and 16
  (milestones 0.6, 0.8), SGD Nesterov 0.9, crop_flip views, BN in eval
  mode (running statistics fixed; scale and bias train). 1 % labels:
  batch 2048, head lr 10, encoder lr 0.04, no weight decay; 10 %: batch
  512, 0.3 / 0.004, weight decay 1e-5.

  Args:
    fraction: 0.01 or 0.1 (the two settings D.2 gives).
    **overrides: any finetune key.

  Raises:
    ValueError: for another fraction.
  """
  if fraction not in _FINETUNE_RELICV2:
    raise ValueError(f"RELICv2 D.2 gives fine-tuning settings for label "
                     f"fractions {sorted(_FINETUNE_RELICV2)}, not {fraction}; "
                     "build other fractions with config_lib.evaluator("
                     "'finetune', label_fraction=...).")
  return _entry("finetune", dict(
      _FINETUNE_RELICV2[fraction], epochs=20.0, momentum=0.9, nesterov=True,
      schedule="step", milestones=(0.6, 0.8), decay=0.2, augment="crop_flip",
      label_fraction=fraction), overrides)


PRESETS = {"mdssl": mdssl, "relicv2": relicv2, "solo_learn": solo_learn,
           "msbreg_transfer": msbreg_transfer}
