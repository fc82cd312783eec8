"""Handcrafted unsupervised saliency: image batch -> [0, 1] maps.

Three classic methods that use no labels (the RELICv2 / DeepUSPS recipe
refines such maps, seed 004 App. B.2.1):

* :func:`frequency_tuned` (Achanta et al., CVPR 2009): distance of each
  (slightly blurred) Lab pixel from the image's mean Lab colour.
* :func:`background_connectivity` (robust background detection, RBD; Zhu et
  al., CVPR 2014): SLIC superpixels, geodesic boundary connectivity as a
  background prior, background-weighted contrast, then the paper's
  least-squares saliency optimisation.
* :func:`manifold_ranking` (MR; Yang et al., CVPR 2013): superpixels ranked
  by their graph affinity to the image-border queries, then to the
  foreground queries that stage finds.

RBD and MR are two of the four methods RELICv2 fuses.

Every method maps [N, H, W, 3] uint8 images to [N, H, W] float32 maps,
min-max normalised per image to [0, 1]. Frequency-tuned is vectorised over
the batch; RBD and MR loop over images (SLIC has no batched form).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from scipy import ndimage
from scipy.sparse import csgraph
from scipy.sparse import csr_matrix
from skimage import color
from skimage import segmentation


def _check_images(images: np.ndarray) -> np.ndarray:
  if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
    raise ValueError(f"Saliency methods take [N, H, W, 3] uint8 images, got "
                     f"{images.shape} {images.dtype}; repeat grey channels "
                     "to 3 first.")
  return images


def normalize(maps: np.ndarray) -> np.ndarray:
  """Per-map min-max normalisation of [N, H, W] to [0, 1] float32.

  A constant map (no evidence) becomes all zeros.
  """
  maps = maps.astype(np.float32)
  lo = maps.min(axis=(1, 2), keepdims=True)
  span = maps.max(axis=(1, 2), keepdims=True) - lo
  return np.where(span > 1e-12, (maps - lo) / np.maximum(span, 1e-12), 0.0
                  ).astype(np.float32)


def frequency_tuned(images: np.ndarray, *, blur_sigma: float = 1.0
                    ) -> np.ndarray:
  """Frequency-tuned saliency (Achanta et al. 2009), batched.

  Args:
    images: [N, H, W, 3] uint8.
    blur_sigma: Gaussian blur of the Lab image (the paper's 5×5 binomial is
      about sigma 1).

  Returns:
    [N, H, W] float32 in [0, 1].
  """
  images = _check_images(images)
  lab = color.rgb2lab(images)
  blurred = ndimage.gaussian_filter(lab, sigma=(0, blur_sigma, blur_sigma, 0))
  mean = lab.mean(axis=(1, 2), keepdims=True)
  return normalize(np.linalg.norm(blurred - mean, axis=-1))


def _segment_graph(labels: np.ndarray, num: int) -> csr_matrix:
  """Adjacency (0/1, symmetric) of superpixels touching 4-connectedly."""
  pairs = np.concatenate([
      np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
      np.stack([labels[:-1].ravel(), labels[1:].ravel()], 1)])
  pairs = pairs[pairs[:, 0] != pairs[:, 1]]
  adj = csr_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])),
                   shape=(num, num))
  return ((adj + adj.T) > 0).astype(np.float64)


class _Superpixels:
  """SLIC superpixels of one image and their statistics.

  Attributes:
    labels: [H, W] int superpixel ids 0..num-1.
    num: number of superpixels.
    lab: [num, 3] mean Lab colour.
    pos: [num, 2] mean (y, x) position, image side = 1.
    adj: [num, num] 0/1 CSR adjacency.
    sides: [4, num] bool, touching the top, bottom, left, right border.
  """

  def __init__(self, image: np.ndarray, n_segments: int,
               compactness: float):
    h, w, _ = image.shape
    labels = segmentation.slic(image, n_segments=n_segments,
                               compactness=compactness, start_label=0,
                               channel_axis=-1)
    _, labels = np.unique(labels, return_inverse=True)  # Dense ids.
    self.labels = labels.reshape(h, w)
    self.num = num = int(self.labels.max()) + 1
    flat = self.labels.ravel()
    lab = color.rgb2lab(image).reshape(-1, 3)
    counts = np.bincount(flat, minlength=num).astype(np.float64)
    self.lab = np.stack([np.bincount(flat, lab[:, k], num)
                         for k in range(3)], 1) / counts[:, None]
    yy, xx = np.mgrid[0:h, 0:w]
    self.pos = np.stack([np.bincount(flat, (yy.ravel() + 0.5) / h, num),
                         np.bincount(flat, (xx.ravel() + 0.5) / w, num)],
                        1) / counts[:, None]
    self.adj = _segment_graph(self.labels, num)
    self.sides = np.zeros((4, num), bool)
    for k, edge in enumerate((self.labels[0], self.labels[-1],
                              self.labels[:, 0], self.labels[:, -1])):
      self.sides[k, edge] = True


def _rbd_one(image: np.ndarray, *, n_segments: int, compactness: float,
             sigma_clr: float, sigma_bndcon: float, sigma_spa: float,
             mu: float) -> np.ndarray:
  """RBD saliency of one [H, W, 3] uint8 image -> [H, W] float32."""
  sp = _Superpixels(image, n_segments, compactness)
  if sp.num < 2:
    return np.zeros(image.shape[:2], np.float32)
  d_app = np.linalg.norm(sp.lab[:, None] - sp.lab[None], axis=-1)
  # Geodesic colour distance over the adjacency graph (RBD eq. 2).
  geo = csgraph.shortest_path(sp.adj.multiply(d_app).tocsr(),
                              directed=False)
  geo = np.where(np.isfinite(geo), geo, geo[np.isfinite(geo)].max())
  span = np.exp(-geo ** 2 / (2 * sigma_clr ** 2))
  boundary = sp.sides.any(0)
  bndcon = span[:, boundary].sum(1) / np.sqrt(span.sum(1))
  w_bg = 1.0 - np.exp(-bndcon ** 2 / (2 * sigma_bndcon ** 2))
  d_spa = np.linalg.norm(sp.pos[:, None] - sp.pos[None], axis=-1)
  w_spa = np.exp(-d_spa ** 2 / (2 * sigma_spa ** 2))
  w_ctr = (d_app * w_spa) @ w_bg  # Background-weighted contrast (eq. 5).
  w_fg = w_ctr / max(w_ctr.max(), 1e-12)
  # Saliency optimisation (eq. 6): min Σ w_bg s² + Σ w_fg (s − 1)²
  # + Σ_adjacent w_ij (s_i − s_j)², a small linear system.
  w_ij = sp.adj.toarray() * (np.exp(-d_app ** 2 / (2 * sigma_clr ** 2))
                             + mu)
  lap = np.diag(w_ij.sum(1)) - w_ij
  s = np.linalg.solve(np.diag(w_bg + w_fg) + 2 * lap, w_fg)
  return s[sp.labels].astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
  lo, hi = x.min(), x.max()
  return (x - lo) / (hi - lo) if hi - lo > 1e-12 else np.zeros_like(x)


def _mr_one(image: np.ndarray, *, n_segments: int, compactness: float,
            sigma2: float, alpha: float) -> np.ndarray:
  """Manifold-ranking saliency of one [H, W, 3] uint8 image -> [H, W]."""
  sp = _Superpixels(image, n_segments, compactness)
  if sp.num < 2:
    return np.zeros(image.shape[:2], np.float32)
  # Neighbours and neighbours' neighbours, and all border superpixels
  # linked to each other (the paper's closed-loop graph).
  adj = sp.adj.toarray() > 0
  link = adj | ((adj.astype(np.float64) @ adj) > 0)
  boundary = sp.sides.any(0)
  link |= boundary[:, None] & boundary[None]
  np.fill_diagonal(link, False)
  lab = sp.lab / np.array([100.0, 255.0, 255.0])  # Colours to ~[0, 1].
  dist = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
  weights = np.where(link, np.exp(-dist / sigma2), 0.0)
  ranking = np.linalg.inv(np.diag(weights.sum(1)) - alpha * weights)
  np.fill_diagonal(ranking, 0.0)  # No self-reinforcement (paper §3.2).
  # Stage 1: rank against each border's queries; salient = unlike all.
  s_bq = np.prod([1.0 - _unit(ranking @ side) for side in sp.sides], 0)
  # Stage 2: rank against the foreground queries of stage 1.
  s_fq = _unit(ranking @ (s_bq >= s_bq.mean()).astype(np.float64))
  return s_fq[sp.labels].astype(np.float32)


def background_connectivity(images: np.ndarray, *, n_segments: int = 100,
                            compactness: float = 10.0,
                            sigma_clr: float = 10.0,
                            sigma_bndcon: float = 1.0,
                            sigma_spa: float = 0.25, mu: float = 0.1
                            ) -> np.ndarray:
  """Robust-background-detection saliency (Zhu et al. 2014).

  Args:
    images: [N, H, W, 3] uint8.
    n_segments: approximate SLIC superpixels per image.
    compactness: SLIC compactness (colour vs space).
    sigma_clr: Lab colour scale of the geodesic span and smoothness terms.
    sigma_bndcon: boundary-connectivity scale of the background prior.
    sigma_spa: spatial scale (image side = 1) of the contrast weights.
    mu: smoothness offset that also links similar-looking neighbours.

  Returns:
    [N, H, W] float32 in [0, 1].
  """
  images = _check_images(images)
  maps = np.stack([
      _rbd_one(image, n_segments=n_segments, compactness=compactness,
               sigma_clr=sigma_clr, sigma_bndcon=sigma_bndcon,
               sigma_spa=sigma_spa, mu=mu) for image in images])
  return normalize(maps)


def manifold_ranking(images: np.ndarray, *, n_segments: int = 100,
                     compactness: float = 10.0, sigma2: float = 0.1,
                     alpha: float = 0.99) -> np.ndarray:
  """Graph-based manifold-ranking saliency (Yang et al. 2013).

  Args:
    images: [N, H, W, 3] uint8.
    n_segments: approximate SLIC superpixels per image.
    compactness: SLIC compactness (colour vs space).
    sigma2: colour scale of the edge weights exp(-‖c_i − c_j‖ / sigma2),
      Lab scaled to about [0, 1].
    alpha: ranking smoothness (f = (D − αW)⁻¹ y).

  Returns:
    [N, H, W] float32 in [0, 1].
  """
  images = _check_images(images)
  return normalize(np.stack([
      _mr_one(image, n_segments=n_segments, compactness=compactness,
              sigma2=sigma2, alpha=alpha) for image in images]))


# Name -> method; the names are the saliency config's `methods` entries.
METHODS: dict[str, Callable[..., np.ndarray]] = {
    "frequency_tuned": frequency_tuned,
    "background_connectivity": background_connectivity,
    "manifold_ranking": manifold_ranking,
}


def compute(name: str, images: np.ndarray, params: dict[str, Any]
            ) -> np.ndarray:
  """Runs METHODS[name] with keyword `params` on [N, H, W, 3] uint8."""
  if name not in METHODS:
    raise ValueError(f"Unknown saliency method {name!r}; choose from "
                     f"{sorted(METHODS)}.")
  return METHODS[name](images, **params)
