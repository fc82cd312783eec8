"""Runs the end-task battery over frozen encoders and analyses the scores.

Synopsis::

  config = config_lib.load_config("configs/virb/offline.py:smoke")
  encs = encoders.load_encoders(["/tmp/run1", "/tmp/run2"])
  results = battery.run_battery(config, encs)
  report.write_report(results, "./virb")

Per task, each encoder embeds the images once (eval mode), its head
trains on those outputs (Adam, `config.heads.lr`, the same seed and batch
order for every encoder) and is scored on the test split. Pooled features
of the image-level heads are z-scored per dimension with the train split's
statistics (as `linear_probe`'s standardize), so that one learning rate
suits every encoder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np

from mdssl_jax.virb import analysis
from mdssl_jax.virb import config as config_lib
from mdssl_jax.virb import encoders as encoders_lib
from mdssl_jax.virb import heads as heads_lib
from mdssl_jax.virb import metrics
from mdssl_jax.virb import tasks as tasks_lib
from mdssl_jax.virb import tfds_tasks

_IMAGE_HEADS = ("linear", "fusion")
_TWO_FRAME_HEADS = ("fusion", "siamese")


def domain_tasks(config: ml_collections.ConfigDict,
                 encoder_config: ml_collections.ConfigDict
                 ) -> list[tasks_lib.Task]:
  """Linear-probe tasks of `config.domains` (semantic image-level).

  The domains load as in training (`mdssl_jax.data.sources`) and are
  eval-transformed with the encoder's view size, mean and std.

  Args:
    config: the battery config.
    encoder_config: the (first) encoder's training config.

  Returns:
    One Task per domain, named "domain:<name>".
  """
  if not config.domains:
    return []
  # pylint: disable=g-import-not-at-top
  from mdssl_jax.data import sources
  from mdssl_jax.data.pipeline import eval_arrays
  # pylint: enable=g-import-not-at-top
  data_config = encoder_config.copy_and_resolve_references()
  with data_config.unlocked():
    data_config.data.domains = [dict(d) for d in config.domains]
  domains = sources.load_domains(data_config.data)
  arrays = eval_arrays.make_eval_arrays(
      data_config, domains, max_train=config.max_train_per_domain,
      max_test=config.max_test_per_domain)
  return [tasks_lib.Task(
      f"domain:{a['name']}", tasks_lib.SEMANTIC_IMAGE, "linear", "top1",
      int(a["num_classes"]), a["train_images"], a["train_labels"],
      a["test_images"], a["test_labels"], normalised=True) for a in arrays]


def build_tasks(config: ml_collections.ConfigDict,
                encoder_config: ml_collections.ConfigDict
                ) -> list[tasks_lib.Task]:
  """Every task of the battery: generated, data domains, then TFDS.

  Args:
    config: the battery config (checked).
    encoder_config: the (first) encoder's training config.
  """
  out = [tasks_lib.make_task(
      name, seed=config.seed, image_size=config.image_size,
      num_train=config.num_train, num_test=config.num_test,
      max_objects=config.max_objects) for name in config.tasks]
  out += domain_tasks(config, encoder_config)
  out += [tfds_tasks.load_task(name, config.tfds)
          for name in config.tfds.tasks]
  return out


def make_head(task: tasks_lib.Task,
              heads_cfg: ml_collections.ConfigDict) -> Any:
  """The head module of `task` (`task.head`), sized by `config.heads`."""
  k, width = task.num_outputs, heads_cfg.decoder_width
  if task.head == "linear":
    return heads_lib.LinearHead(k)
  if task.head == "fusion":
    return heads_lib.FusionHead(k, heads_cfg.fusion_dim)
  if task.head == "deeplab":
    return heads_lib.DeepLabHead(k, width, tuple(heads_cfg.aspp_rates))
  if task.head == "unet":
    return heads_lib.UNetDecoder(k, width)
  if task.head == "siamese":
    return heads_lib.SiameseUNet(k, width)
  raise ValueError(f"task {task.name}: unknown head {task.head!r}.")


def head_inputs(encoder: encoders_lib.Encoder, task: tasks_lib.Task,
                images: np.ndarray, batch_size: int) -> Any:
  """The frozen encoder's outputs that `task`'s head reads.

  Args:
    encoder: the encoder.
    task: the task (its head and input layout).
    images: [n, S, S, 3] or two-frame [n, 2, S, S, 3] images.
    batch_size: images per encoder call.

  Returns:
    linear: [n, F]; fusion: [n, 2, F]; deeplab / unet: block outputs
    fine to coarse; siamese: (frame-1 blocks, frame-2 blocks).
  """
  if not task.normalised:
    images = encoder.normalise(images)
  n = images.shape[0]
  two = task.head in _TWO_FRAME_HEADS
  if two:
    images = images.reshape(-1, *images.shape[2:])  # frame-major pairs
  pooled, levels = encoders_lib.encode(
      encoder, images, batch_size=batch_size,
      with_levels=task.head not in _IMAGE_HEADS)
  if task.head == "linear":
    return pooled
  if task.head == "fusion":
    return pooled.reshape(n, 2, -1)
  if not two:
    return levels
  return ([lv[0::2] for lv in levels], [lv[1::2] for lv in levels])


def evaluate_task(encoder: encoders_lib.Encoder, task: tasks_lib.Task,
                  config: ml_collections.ConfigDict) -> dict[str, float]:
  """Trains `task`'s head on `encoder` and scores it on the test split.

  Returns:
    {"score": test score (higher is better), "train_loss": mean loss of
    the last 50 steps (L1 in units of the targets' std), "seconds": wall
    clock}.
  """
  from mdssl_jax.virb import train_heads  # pylint: disable=g-import-not-at-top
  start = time.time()
  h = config.heads
  head = make_head(task, h)
  pixel = task.head not in _IMAGE_HEADS
  out_size = task.train_y.shape[1] if pixel else None
  train_in = head_inputs(encoder, task, task.train_x,
                         config.feature_batch_size)
  test_in = head_inputs(encoder, task, task.test_x, config.feature_batch_size)
  if not pixel:  # z-score pooled features (train statistics), as the probe.
    axes = tuple(range(train_in.ndim - 1))
    mean = train_in.mean(axes)
    std = train_in.std(axes) + 1e-6
    train_in, test_in = (train_in - mean) / std, (test_in - mean) / std
  trained, losses = train_heads.train_head(
      head, train_in, task.train_y,
      loss="l1" if task.metric == "neg_l1" else "ce",
      steps=h.pixel_steps if pixel else h.image_steps,
      batch_size=h.batch_size, lr=h.lr, seed=config.seed, out_size=out_size)
  outputs = train_heads.predict(head, trained, test_in,
                                batch_size=config.feature_batch_size,
                                out_size=out_size)
  return {"score": metrics.score(task.metric, outputs, task.test_y,
                                 task.num_outputs),
          "train_loss": float(np.mean(losses[-50:])),
          "seconds": time.time() - start}


def analyse(task_rows: list[dict[str, Any]], encoder_names: list[str],
            baseline: str) -> dict[str, Any]:
  """Adds normalised scores per task; returns category means and Spearman.

  Args:
    task_rows: per task {"name", "category", "scores": {encoder: score}};
      each gets "normalised": {encoder: value}.
    encoder_names: the E encoders, in order.
    baseline: the baseline encoder's name.

  Returns:
    {"category_means": {category: {encoder: value}}, "spearman": [T, T]
    nested lists (NaN where undefined)}.
  """
  scores = np.array([[row["scores"][e] for row in task_rows]
                     for e in encoder_names])
  norm = analysis.normalised_scores(scores, encoder_names.index(baseline))
  for j, row in enumerate(task_rows):
    row["normalised"] = {e: float(norm[i, j])
                         for i, e in enumerate(encoder_names)}
  cats = analysis.category_means(norm, [r["category"] for r in task_rows])
  return {"category_means": {c: {e: float(v[i])
                                 for i, e in enumerate(encoder_names)}
                             for c, v in cats.items()},
          "spearman": analysis.spearman_matrix(scores).tolist()}


def run_battery(config: ml_collections.ConfigDict,
                encoders: list[encoders_lib.Encoder], *,
                log: Callable[[str], None] = print) -> dict[str, Any]:
  """Evaluates every encoder on every task of the battery.

  Args:
    config: the battery config (checked here).
    encoders: the frozen encoders, the random baseline first
      (`encoders.load_encoders`).
    log: receives one progress line per task and encoder.

  Returns:
    {"encoders": names, "baseline", "tasks": [{"name", "category",
    "head", "metric", "num_outputs", "num_train", "num_test", "chance",
    "scores", "normalised", "train_loss"}], "category_means",
    "spearman", "seconds", "config"}.
  """
  config_lib.check(config)
  start = time.time()
  names = [e.name for e in encoders]
  tasks = build_tasks(config, encoders[0].config)
  log(f"ViRB: {len(tasks)} tasks x {len(encoders)} encoders "
      f"({', '.join(names)}); data ready in {time.time() - start:.0f} s.")
  rows = []
  for t_index, task in enumerate(tasks):
    row = {"name": task.name, "category": task.category, "head": task.head,
           "metric": task.metric, "num_outputs": task.num_outputs,
           "num_train": len(task.train_y), "num_test": len(task.test_y),
           "chance": metrics.trivial_score(task.metric, task.train_y,
                                           task.test_y, task.num_outputs),
           "scores": {}, "train_loss": {}}
    for encoder in encoders:
      out = evaluate_task(encoder, task, config)
      row["scores"][encoder.name] = out["score"]
      row["train_loss"][encoder.name] = out["train_loss"]
      log(f"[{t_index + 1}/{len(tasks)}] {task.name:<16} "
          f"{encoder.name:<16} {task.metric} {out['score']:.4f} "
          f"(chance {row['chance']:.4f}, train loss "
          f"{out['train_loss']:.4f}, {out['seconds']:.0f} s)")
    rows.append(row)
  extra = analyse(rows, names, encoders[0].name)
  return {"encoders": names, "baseline": encoders[0].name, "tasks": rows,
          **extra, "seconds": time.time() - start,
          "config": config.to_dict()}
