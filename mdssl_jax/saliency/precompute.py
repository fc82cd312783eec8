"""The mask precompute tool: handcrafted maps -> refined net -> all masks.

``run(config, workdir)`` (what ``python -m mdssl_jax.saliency`` calls):

1. picks ``refine.train_examples`` images of the dataset (seeded), resized
   to ``refine.image_size``;
2. computes the handcrafted maps (``methods``), fuses them into
   pseudo-labels (cached in ``<workdir>/pseudo_labels.npz``);
3. trains the refined network (:mod:`mdssl_jax.saliency.refine`,
   checkpointed per round);
4. predicts a mask for every example, ``output.chunk_size`` at a time; each
   finished chunk is a file in ``<workdir>/chunks/``, so a rerun skips it;
5. writes the masks where the training pipeline reads them:
   ``<workdir>/masks.npz`` (array ``masks`` [N, H, W] uint8, 0..255, aligned
   by index with the ``.npz`` train images; the domain's ``masks_path``) or,
   for TFDS, the sharded sidecar (keyed by tfds_id) that
   ``data/sources/tfds_common.py`` reads, in ``<workdir>/tfds_masks`` (the
   domain's ``masks_path``; :mod:`mdssl_jax.saliency.tfds_io`).

The "synthetic" source also writes the quality report
(:mod:`mdssl_jax.saliency.report`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Iterator

from absl import logging
import ml_collections
import numpy as np
from scipy import ndimage

from mdssl_jax import atomic_file
from mdssl_jax import progress as progress_lib
from mdssl_jax.saliency import fusion
from mdssl_jax.saliency import handcrafted
from mdssl_jax.saliency import refine as refine_lib
from mdssl_jax.saliency import synthetic

MASKS_FILE = "masks.npz"


def to_rgb(images: np.ndarray) -> np.ndarray:
  """[N, H, W, C] uint8 with C = 1 or 3 -> [N, H, W, 3]."""
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"Expected [N, H, W, 1 or 3] images, got "
                     f"{images.shape}.")
  return np.repeat(images, 3, -1) if images.shape[-1] == 1 else images


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize of [N, H, W, 3] uint8 to [N, size, size, 3] uint8."""
  _, h, w, _ = images.shape
  if (h, w) == (size, size):
    return images
  out = ndimage.zoom(images.astype(np.float32), (1, size / h, size / w, 1),
                     order=1, mode="nearest", grid_mode=True)
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


def resize_maps(maps: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear resize of [N, h, w] float maps to [N, height, width]."""
  _, h, w = maps.shape
  if (h, w) == (height, width):
    return maps
  return np.clip(ndimage.zoom(maps, (1, height / h, width / w), order=1,
                              mode="nearest", grid_mode=True), 0.0, 1.0)


def to_uint8(maps: np.ndarray) -> np.ndarray:
  """[0, 1] float maps -> uint8 0..255 (what the sidecars store)."""
  return np.clip(np.round(maps * 255.0), 0, 255).astype(np.uint8)


@dataclasses.dataclass
class ArraySource:
  """An in-memory dataset: train images (and ground truth if synthetic).

  Attributes:
    images: [N, H, W, 3] uint8.
    masks: [N, H, W] bool ground truth, or None.
    where: what the images are (for messages).
  """
  images: np.ndarray
  masks: np.ndarray | None
  where: str

  @property
  def num(self) -> int:
    return len(self.images)

  def pool_size(self, n: int) -> int:
    del n  # Any example may be drawn.
    return self.num

  def take(self, indices: np.ndarray) -> list[np.ndarray]:
    return list(self.images[indices])

  def chunks(self, size: int, start: int) -> Iterator[tuple[int, list]]:
    for lo in range(start, self.num, size):
      yield lo, list(self.images[lo:lo + size])


def open_source(data: ml_collections.ConfigDict) -> Any:
  """The dataset that ``config.data`` describes (synthetic / npz / tfds)."""
  if data.source == "synthetic":
    images, masks = synthetic.make_scenes(int(data.num_examples),
                                          int(data.image_size),
                                          int(data.seed))
    return ArraySource(images, masks, "synthetic scenes")
  if data.source == "npz":
    # pylint: disable-next=g-import-not-at-top
    from mdssl_jax.data.sources import npz
    path = os.path.join(os.path.expanduser(os.path.expandvars(data.path)),
                        data.train_file)
    images = npz.read_npz(path, ("images",))["images"]
    return ArraySource(to_rgb(images), None, path)
  if data.source == "tfds":
    # pylint: disable-next=g-import-not-at-top
    from mdssl_jax.saliency import tfds_io
    return tfds_io.TfdsSource(data)
  raise ValueError(f"data.source must be 'synthetic', 'npz' or 'tfds', got "
                   f"{data.source!r}.")


def _cached(path: str, compute: Callable[[], dict[str, np.ndarray]]
            ) -> dict[str, np.ndarray]:
  if os.path.isfile(path):
    with np.load(path) as saved:
      return dict(saved)
  arrays = compute()
  with atomic_file.atomic_open(path, "wb") as f:
    np.savez(f, **arrays)
  return arrays


def handcrafted_maps(images: np.ndarray, config: ml_collections.ConfigDict,
                     log: Callable[[str], None]) -> dict[str, np.ndarray]:
  """Each configured method's [N, S, S] maps on [N, S, S, 3] images."""
  maps = {}
  for name in config.methods:
    t0 = time.time()
    maps[name] = handcrafted.compute(name, images,
                                     dict(config.method_params[name]))
    log(f"handcrafted {name}: {len(images)} images in "
        f"{time.time() - t0:.1f} s.")
  return maps


def train_subset(source: Any, config: ml_collections.ConfigDict
                 ) -> tuple[np.ndarray, np.ndarray]:
  """(indices, [n, S, S, 3] images) the network is refined on."""
  cfg = config.refine
  n = min(int(cfg.train_examples), source.num)
  rng = np.random.default_rng(int(cfg.seed))
  indices = np.sort(rng.choice(source.pool_size(n), n, replace=False))
  size = int(cfg.image_size)
  images = np.stack([resize_images(to_rgb(im[None]), size)[0]
                     for im in source.take(indices)])
  return indices, images


def train_network(source: Any, config: ml_collections.ConfigDict,
                  workdir: str, log: Callable[[str], None]):
  """Steps 1-3: pseudo-labels and the refined network (resumable).

  Returns:
    (net, variables, info): info has "indices", "images", "maps" (per
    method), "fused", "labels" and "history".
  """
  indices, images = train_subset(source, config)

  def compute():
    maps = handcrafted_maps(images, config, log)
    return {f"map_{k}": v for k, v in maps.items()}

  path = os.path.join(workdir, "pseudo_labels.npz")
  saved = _cached(path, compute)
  if sorted(saved) != sorted(f"map_{name}" for name in config.methods):
    raise ValueError(f"{path} holds the maps of {sorted(saved)}, not of "
                     f"methods={tuple(config.methods)}: this workdir is "
                     "another config's; use a new --workdir.")
  maps = {name: saved[f"map_{name}"] for name in config.methods}
  fused = fusion.fuse(maps)
  labels = fusion.pseudo_labels(fused, float(config.fusion.threshold))
  log(f"pseudo-labels: {len(images)} images, foreground "
      f"{labels.mean():.1%} of pixels.")
  net, variables, history = refine_lib.refine(images, labels, config.refine,
                                              workdir, log)
  info = dict(indices=indices, images=images, maps=maps, fused=fused,
              labels=labels, history=history)
  return net, variables, info


def _chunk_path(workdir: str, lo: int, hi: int) -> str:
  return os.path.join(workdir, "chunks", f"{lo:010d}_{hi:010d}.npz")


def predict_masks(net, variables, images: list[np.ndarray],
                  cfg: ml_collections.ConfigDict) -> list[np.ndarray]:
  """Masks ([h, w] float32 in [0, 1]) of images of any sizes."""
  size = int(cfg.image_size)
  small = np.stack([resize_images(to_rgb(im[None]), size)[0]
                    for im in images])
  pred = refine_lib.predict(net, variables, small, cfg)
  return [resize_maps(p[None], *im.shape[:2])[0]
          for p, im in zip(pred, images)]


def predict_all(source: Any, net, variables,
                config: ml_collections.ConfigDict, workdir: str,
                log: Callable[[str], None]) -> list[str]:
  """Step 4: every example's mask, in resumable chunk files.

  A rerun continues from the first chunk file that is missing.

  Returns:
    The chunk files in example order, each holding "mask_<i>" ([h, w]
    uint8) for its examples.
  """
  size = int(config.output.chunk_size)
  done = 0
  while os.path.isfile(_chunk_path(workdir, done,
                                   min(done + size, source.num))):
    done = min(done + size, source.num)
  if done:
    log(f"masks: resuming at example {done}/{source.num}.")
  progress = progress_lib.Progress(total_steps=source.num, start_step=done,
                                   images_per_step=1)
  for lo, images in source.chunks(size, done):
    masks = [to_uint8(m) for m in predict_masks(net, variables, images,
                                                config.refine)]
    hi = lo + len(images)
    with atomic_file.atomic_open(_chunk_path(workdir, lo, hi), "wb") as f:
      np.savez(f, **{f"mask_{i}": m for i, m in enumerate(masks)})
    log("masks: " + progress.line(hi, {}))
  return [_chunk_path(workdir, lo, min(lo + size, source.num))
          for lo in range(0, source.num, size)]


def iter_chunk_masks(files: list[str]) -> Iterator[np.ndarray]:
  """The masks of chunk files, in example order."""
  for path in files:
    with np.load(path) as chunk:
      for i in range(len(chunk.files)):
        yield chunk[f"mask_{i}"]


def write_npz_masks(files: list[str], num: int, workdir: str) -> str:
  """Step 5 for arrays: ``<workdir>/masks.npz`` with ``masks`` [N, H, W]."""
  masks = np.stack(list(iter_chunk_masks(files)))
  if len(masks) != num:
    raise RuntimeError(f"{workdir}/chunks holds {len(masks)} masks for {num} "
                       "examples; delete the chunks directory and rerun.")
  path = os.path.join(workdir, MASKS_FILE)
  with atomic_file.atomic_open(path, "wb") as f:
    np.savez(f, masks=masks)
  return path


def run(config: ml_collections.ConfigDict, workdir: str,
        log: Callable[[str], None] = logging.info) -> dict[str, Any]:
  """The whole tool; see the module docstring.

  Args:
    config: a saliency config (``mdssl_jax.saliency.config.validate``d).
    workdir: output directory (created; reruns resume).
    log: where progress lines go.

  Returns:
    {"masks_path": where the training pipeline reads the masks, "report":
    the synthetic quality report or None}.
  """
  # pylint: disable-next=g-import-not-at-top
  from mdssl_jax.saliency import report as report_lib
  os.makedirs(workdir, exist_ok=True)
  source = open_source(config.data)
  log(f"saliency: {source.num} examples from {source.where}.")
  net, variables, info = train_network(source, config, workdir, log)
  files = predict_all(source, net, variables, config, workdir, log)
  if config.data.source == "tfds":
    # pylint: disable-next=g-import-not-at-top
    from mdssl_jax.saliency import tfds_io
    masks_path = tfds_io.write_sidecar(source, iter_chunk_masks(files),
                                       workdir)
  else:
    masks_path = write_npz_masks(files, source.num, workdir)
  log(f"masks written to {masks_path}")
  report = None
  if source.masks is not None:
    report = report_lib.write_report(net, variables, info, source, config,
                                     workdir, log)
  return {"masks_path": masks_path, "report": report}
