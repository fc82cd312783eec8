"""The quality report on the synthetic benchmark: results.json + a PNG.

Mean IoU (masks binarised at 0.5, as the training pipeline does) and MAE
of each handcrafted method, the fused maps and pseudo-labels, the refined
network and the centre-prior baseline, on two sets: the scenes the network
was refined on ("train", the labels it saw were only the fused
pseudo-labels) and unseen scenes ("held_out", how it does on the rest of a
dataset). ``contact_sheet.png`` shows held-out scenes: image, ground truth,
each method, the fused pseudo-label and the network's prediction.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import ml_collections
import numpy as np

from mdssl_jax import atomic_file
from mdssl_jax.saliency import fusion
from mdssl_jax.saliency import refine as refine_lib
from mdssl_jax.saliency import synthetic


def _scores(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
  return {"iou": float(synthetic.iou(maps, masks).mean()),
          "mae": float(synthetic.mae(maps, masks).mean())}


def evaluate(maps: dict[str, np.ndarray], pred: np.ndarray,
             masks: np.ndarray, threshold: float
             ) -> dict[str, dict[str, float]]:
  """Scores of every map kind on one set of scenes.

  Args:
    maps: method name -> [N, S, S] handcrafted maps.
    pred: [N, S, S] network probabilities.
    masks: [N, S, S] bool ground truth.
    threshold: the fusion threshold of the pseudo-labels.

  Returns:
    {name: {"iou", "mae"}} for each method, "fused" (soft mean),
    "pseudo_labels", "refined" and "centre_prior".
  """
  fused = fusion.fuse(maps)
  out = {name: _scores(m, masks) for name, m in maps.items()}
  out["fused"] = _scores(fused, masks)
  out["pseudo_labels"] = _scores(fusion.pseudo_labels(fused, threshold),
                                 masks)
  out["refined"] = _scores(pred, masks)
  out["centre_prior"] = _scores(synthetic.centre_prior(masks), masks)
  return out


def contact_sheet(path: str, images: np.ndarray, masks: np.ndarray,
                  maps: dict[str, np.ndarray], labels: np.ndarray,
                  pred: np.ndarray, rows: int) -> str:
  """A grid PNG: one scene per row; image, truth, methods, label, net."""
  # pylint: disable=g-import-not-at-top
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  # pylint: enable=g-import-not-at-top
  columns = ([("image", images), ("ground truth", masks)]
             + list(maps.items())
             + [("pseudo-label", labels), ("refined net", pred)])
  rows = min(rows, len(images))
  fig, axes = plt.subplots(rows, len(columns),
                           figsize=(1.3 * len(columns), 1.3 * rows),
                           squeeze=False)
  for r in range(rows):
    for c, (title, data) in enumerate(columns):
      ax = axes[r, c]
      ax.imshow(data[r], cmap=None if data.ndim == 4 else "gray",
                vmin=0, vmax=1 if data.ndim == 3 else None,
                interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(title.replace("_", " "), fontsize=6)
  fig.tight_layout(pad=0.2)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def write_report(net: refine_lib.SaliencyNet, variables: dict[str, Any],
                 info: dict[str, Any], source: Any,
                 config: ml_collections.ConfigDict, workdir: str,
                 log: Callable[[str], None]) -> dict[str, Any]:
  """Scores the train and held-out scenes; writes results.json and the PNG.

  Args:
    net, variables: the refined network.
    info: ``precompute.train_network``'s info (train indices, maps).
    source: the synthetic ArraySource (its ground-truth masks).
    config: the saliency config.
    workdir: output directory.
    log: where the summary goes.

  Returns:
    The results dict written to ``<workdir>/results.json``.
  """
  # pylint: disable-next=g-import-not-at-top
  from mdssl_jax.saliency import precompute
  cfg, size = config.refine, int(config.refine.image_size)
  threshold = float(config.fusion.threshold)
  train_masks = precompute.resize_maps(
      source.masks[info["indices"]].astype(np.float32), size, size) >= 0.5
  train_pred = refine_lib.predict(net, variables, info["images"], cfg)
  images, masks = synthetic.make_scenes(int(config.report.test_scenes),
                                        int(config.data.image_size),
                                        int(config.report.test_seed))
  images = precompute.resize_images(images, size)
  masks = precompute.resize_maps(masks.astype(np.float32), size,
                                 size) >= 0.5
  maps = precompute.handcrafted_maps(images, config, log)
  pred = refine_lib.predict(net, variables, images, cfg)
  results = {
      "train": evaluate(info["maps"], train_pred, train_masks, threshold),
      "held_out": evaluate(maps, pred, masks, threshold),
      "num_train": int(len(info["images"])), "num_held_out": len(images),
      "image_size": size, "refine_history": info["history"],
  }
  best = max(config.methods, key=lambda m: results["held_out"][m]["iou"])
  results["best_handcrafted"] = best
  results["refined_beats_best_handcrafted"] = bool(
      results["held_out"]["refined"]["iou"]
      > results["held_out"][best]["iou"])
  with atomic_file.atomic_open(os.path.join(workdir, "results.json")) as f:
    json.dump(results, f, indent=2)
  contact_sheet(os.path.join(workdir, "contact_sheet.png"),
                images.astype(np.float32) / 255.0, masks, maps,
                fusion.pseudo_labels(fusion.fuse(maps), threshold), pred,
                int(config.report.contact_rows))
  for split in ("train", "held_out"):
    log(f"{split}: " + ", ".join(
        f"{name} IoU {s['iou']:.3f} MAE {s['mae']:.3f}"
        for name, s in results[split].items()))
  return results
