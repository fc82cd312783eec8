"""A synthetic saliency benchmark: scenes with known foreground objects.

No labelled saliency data is available offline, so the quality report uses
generated scenes: one object (a random star-shaped blob with its own colour
and shading) placed anywhere in the frame, not only at the centre, on a
textured and cluttered background (colour gradients, an oriented stripe
texture, small distractor blobs, pixel noise). The object mask is exact.
Also the metrics (:func:`iou`, :func:`mae`) and the centre-prior baseline
every method must beat.
"""

from __future__ import annotations

import numpy as np


def _blob(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray,
          cy: float, cx: float, radius: float) -> np.ndarray:
  """A star-shaped region r(θ) < radius·(1 + Σ a_k cos(kθ + φ_k))."""
  theta = np.arctan2(yy - cy, xx - cx)
  r = np.hypot(yy - cy, xx - cx)
  edge = np.ones_like(theta)
  for k in (2, 3, 5):
    edge += rng.uniform(0.0, 0.18) * np.cos(k * theta + rng.uniform(0, 6.3))
  return r < radius * edge


def _far_colour(rng: np.random.Generator, background: np.ndarray
                ) -> np.ndarray:
  """A random RGB colour at least 90 away from the background mean."""
  mean = background.reshape(-1, 3).mean(0)
  while True:
    colour = rng.uniform(0, 255, 3)
    if np.linalg.norm(colour - mean) > 90:
      return colour


def make_scenes(num: int, size: int, seed: int
                ) -> tuple[np.ndarray, np.ndarray]:
  """Generates `num` scenes and their foreground masks.

  Args:
    num: number of scenes.
    size: image side in pixels (>= 16).
    seed: RNG seed; the same arguments give the same scenes.

  Returns:
    (images [num, size, size, 3] uint8, masks [num, size, size] bool).
  """
  if size < 16:
    raise ValueError(f"Synthetic scenes need size >= 16, got {size}.")
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
  images = np.empty((num, size, size, 3), np.uint8)
  masks = np.empty((num, size, size), bool)
  for i in range(num):
    # Background: two-colour gradient, oriented stripes, clutter, noise.
    c0, c1 = rng.uniform(40, 215, (2, 3))
    angle = rng.uniform(0, np.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy) / size
    bg = c0 + (c1 - c0) * np.clip(t, 0, 1)[..., None]
    freq = rng.uniform(3, 7) * 2 * np.pi / size
    s_angle = rng.uniform(0, np.pi)
    stripes = np.sin(freq * (np.cos(s_angle) * xx + np.sin(s_angle) * yy))
    bg += rng.uniform(15, 35) * stripes[..., None] * rng.uniform(0.5, 1, 3)
    for _ in range(rng.integers(4, 9)):
      spot = _blob(rng, yy, xx, rng.uniform(0, size), rng.uniform(0, size),
                   rng.uniform(0.03, 0.07) * size)
      bg[spot] = rng.uniform(0, 255, 3)
    # Object: anywhere in the frame, 5-25% of the image area.
    radius = rng.uniform(0.14, 0.28) * size
    margin = radius * 1.1
    cy, cx = rng.uniform(margin, size - margin, 2)
    obj = _blob(rng, yy, xx, cy, cx, radius)
    colour = _far_colour(rng, bg)
    shade = 1.0 + 0.15 * ((yy - cy) / radius)[..., None]
    image = np.where(obj[..., None], colour * shade, bg)
    image += rng.normal(0, 6, image.shape)
    images[i] = np.clip(image, 0, 255).astype(np.uint8)
    masks[i] = obj
  return images, masks


def iou(maps: np.ndarray, masks: np.ndarray, threshold: float = 0.5
        ) -> np.ndarray:
  """Per-image IoU of (maps >= threshold) with boolean masks.

  Args:
    maps: [N, H, W] saliency in [0, 1].
    masks: [N, H, W] bool ground truth.
    threshold: binarisation level (0.5: what the training pipeline uses).

  Returns:
    [N] float64; 1.0 where both are empty.
  """
  pred = maps >= threshold
  inter = (pred & masks).sum((1, 2))
  union = (pred | masks).sum((1, 2))
  return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def mae(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
  """Per-image mean absolute error of soft maps vs masks: [N] float64."""
  return np.abs(maps.astype(np.float64) - masks).mean((1, 2))


def centre_prior(masks: np.ndarray) -> np.ndarray:
  """The trivial baseline: a centred disc of the masks' mean area.

  Args:
    masks: [N, H, W] bool ground truth (only its mean area is used).

  Returns:
    [N, H, W] float32, 1 inside the disc.
  """
  _, h, w = masks.shape
  radius = np.sqrt(masks.mean() * h * w / np.pi)
  yy, xx = np.mgrid[0:h, 0:w] + 0.5
  disc = np.hypot(yy - h / 2, xx - w / 2) < radius
  return np.broadcast_to(disc, masks.shape).astype(np.float32)
