"""Fusing handcrafted saliency maps into pseudo-labels.

DeepUSPS (seed 004 App. B.2.1) trains its saliency network on labels that
combine several handcrafted methods. Here the maps are averaged per pixel
and binarised; the refinement rounds (:mod:`mdssl_jax.saliency.refine`)
then clean the labels up.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np


def fuse(maps: Mapping[str, np.ndarray]) -> np.ndarray:
  """Pixel-wise mean of the methods' [N, H, W] maps in [0, 1].

  Args:
    maps: method name -> [N, H, W] float map (same shape for all).

  Returns:
    [N, H, W] float32 in [0, 1].
  """
  if not maps:
    raise ValueError("fuse needs at least one saliency map; set the "
                     "config's 'methods'.")
  shapes = {name: m.shape for name, m in maps.items()}
  if len(set(shapes.values())) != 1:
    raise ValueError(f"Saliency maps to fuse differ in shape: {shapes}.")
  return np.mean([m.astype(np.float32) for m in maps.values()], axis=0)


def pseudo_labels(fused: np.ndarray, threshold: float) -> np.ndarray:
  """Binary pseudo-labels: fused >= threshold, as float32 {0, 1}.

  Args:
    fused: [N, H, W] in [0, 1].
    threshold: in (0, 1).

  Returns:
    [N, H, W] float32.
  """
  if not 0.0 < threshold < 1.0:
    raise ValueError(f"Pseudo-label threshold must be in (0, 1), got "
                     f"{threshold}.")
  return (fused >= threshold).astype(np.float32)
