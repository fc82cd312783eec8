"""Tests for the evaluation protocols: probe variants (epochs, lr scaling,
step schedule, crop_flip re-encoding), label fractions, kNN at k = 20 / 200,
fine-tuning, the named presets and the configs/eval protocol suites."""

from __future__ import annotations

import math
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mdssl_jax import config_lib
from mdssl_jax.evaluation import finetune as finetune_lib
from mdssl_jax.evaluation import image_augment
from mdssl_jax.evaluation import label_fractions
from mdssl_jax.evaluation import linear_probe
from mdssl_jax.evaluation import protocols
from mdssl_jax.evaluation import registry
from mdssl_jax.evaluation import suite_config
from mdssl_jax.evaluation.evaluators import linear_probe as probe_spec
from mdssl_jax.evaluation.features import FeatureExtractor
from mdssl_jax.evaluation.suite import EvalContext

_REPO = Path(__file__).resolve().parents[1]


def _context(train_f, train_y, test_f, test_y, num_classes, *,
             train_images=None, test_images=None, extractor=None,
             params=None, batch_stats=None, subsets_dir=None, name="dom"):
  return EvalContext(
      name=name, num_classes=num_classes, train_features=train_f,
      train_labels=train_y, test_features=test_f, test_labels=test_y,
      train_images=train_images, test_images=test_images,
      extractor=extractor, params=params, batch_stats=batch_stats,
      subsets_dir=subsets_dir)


def _blobs(rng, num_classes, n, dim, spread=0.3, shuffle=False):
  means = rng.normal(size=(num_classes, dim)) * 3.0
  y = rng.permutation(np.arange(n) % num_classes).astype(np.int32)
  x = (means[y] + spread * rng.normal(size=(n, dim))).astype(np.float32)
  if shuffle:
    y = rng.permutation(y)
  return x, y


def _entry(type_name, **values):
  return config_lib.evaluator(type_name, **values)


# --------------------------------------------------------------------------
# Linear probe on frozen features.


@pytest.mark.parametrize("overrides", [
    {}, dict(schedule="step", epochs=20.0, lr_scaling="linear",
             label_fraction=0.5)])
def test_probe_separable_and_shuffled(overrides):
  rng = np.random.default_rng(0)
  cfg = _entry("linear_probe", steps=200, batch_size=64, **overrides)
  x, y = _blobs(rng, 5, 600, 16)  # One draw of means for both splits.
  ctx = _context(x[:400], y[:400], x[400:], y[400:], 5)
  res = registry.get("linear_probe").run(cfg, ctx)
  assert res["top1"] == 100.0 and res["train_top1"] == 100.0

  # 1000 test points, labels independent of features: chance 20 % (std
  # 1.3 %), top-5 of 5 classes is always 100 %.
  x, y = _blobs(rng, 5, 2000, 16, shuffle=True)
  ctx = _context(x[:1000], y[:1000], x[1000:], y[1000:], 5)
  res = registry.get("linear_probe").run(cfg, ctx)
  assert 14.0 < res["top1"] < 26.0, res
  assert res["top5"] == 100.0


def test_resolved_steps_lr_and_boundaries_by_hand():
  assert probe_spec.resolve_steps(0.0, 2000, 1000, 256) == 2000
  assert probe_spec.resolve_steps(100.0, 2000, 1000, 256) == 391  # 390.6
  assert probe_spec.resolve_steps(1.0, 2000, 10, 10) == 1
  assert probe_spec.scaled_lr(0.3, "linear", 1024) == pytest.approx(1.2)
  assert probe_spec.scaled_lr(0.3, "none", 1024) == 0.3
  assert probe_spec.scaled_lr(1.0, "linear", 64) == 0.25
  assert linear_probe.step_boundaries((0.6, 0.8), 100) == (60, 80)
  assert linear_probe.step_boundaries((1 / 3, 2 / 3), 28) == (9, 19)


def test_step_schedule_updates_by_hand():
  # Plain SGD (no momentum) on a gradient of 1: the update is -lr(t).
  tx = linear_probe.make_optimizer(
      2.0, 0.0, 0.0, 100, nesterov=False, schedule="step",
      milestones=(0.6, 0.8), decay=0.1)
  params = jnp.zeros(())
  state = tx.init(params)
  updates = []
  for _ in range(100):
    u, state = tx.update(jnp.ones(()), state, params)
    updates.append(float(u))
  np.testing.assert_allclose(updates[:60], -2.0, rtol=1e-6)
  np.testing.assert_allclose(updates[60:80], -0.2, rtol=1e-6)
  np.testing.assert_allclose(updates[80:], -0.02, rtol=1e-5)


def test_probe_run_resolves_epochs_fraction_and_lr(monkeypatch):
  seen = {}

  def fake(train_f, train_y, test_f, test_y, **kwargs):
    seen.update(kwargs, n=train_f.shape[0], labels=np.bincount(train_y))
    return {"top1": 1.0, "train_top1": 1.0, "final_loss": 0.0}

  monkeypatch.setattr(linear_probe, "train_linear_probe", fake)
  rng = np.random.default_rng(2)
  x, y = _blobs(rng, 4, 200, 8)  # 50 per class.
  cfg = _entry("linear_probe", epochs=10.0, batch_size=64, lr=0.1,
               lr_scaling="linear", label_fraction=0.5, schedule="step")
  registry.get("linear_probe").run(cfg, _context(x, y, x, y, 4))
  # 25 of each class; ceil(10 · 100 / 64) = 16 steps; 0.1 · 64 / 256.
  assert seen["n"] == 100 and list(seen["labels"]) == [25] * 4
  assert seen["steps"] == 16 and seen["batch_size"] == 64
  assert seen["lr"] == pytest.approx(0.025)
  assert seen["milestones"] == (0.6, 0.8) and seen["decay"] == 0.1
  # 1 % of 50 per class rounds to 0.5 -> 1 (at least one per class); the
  # batch is clipped to the 4 labelled examples.
  cfg.label_fraction = 0.01
  registry.get("linear_probe").run(cfg, _context(x, y, x, y, 4))
  assert seen["n"] == 4 and seen["batch_size"] == 4 and seen["steps"] == 10


def test_probe_validation_messages():
  spec = registry.get("linear_probe")
  cfg = _entry("linear_probe")
  assert spec.validate(cfg) == []
  cfg.update(schedule="linear", lr_scaling="sqrt", augment="jitter",
             milestones=(0.8, 0.6), decay=0.0, epochs=-1.0,
             label_fraction=0.0)
  text = " ".join(spec.validate(cfg))
  for part in ("schedule='linear'", "lr_scaling='sqrt'", "augment='jitter'",
               "milestones=(0.8, 0.6)", "decay=0.0", "epochs=-1.0",
               "label_fraction=0.0"):
    assert part in text, (part, text)


# --------------------------------------------------------------------------
# Label fractions.


def _uneven_labels(rng):
  counts = [40, 7, 100, 1, 23]
  return rng.permutation(np.repeat(np.arange(5), counts)), counts


def test_nested_stratified_identical_subsets():
  rng = np.random.default_rng(3)
  labels, counts = _uneven_labels(rng)
  fractions = label_fractions.FRACTIONS
  subsets = label_fractions.nested_subsets(labels, fractions, seed=0)
  assert list(subsets) == list(fractions)
  for f, idx in subsets.items():
    assert np.all(np.diff(idx) > 0)  # Sorted, unique.
    per_class = np.bincount(labels[idx], minlength=5)
    # max(1, round half up): e.g. 10 % of 7 = 0.7 -> 1, 50 % of 7 -> 4.
    expected = [max(1, math.floor(f * n + 0.5)) for n in counts]
    assert list(per_class) == expected, (f, per_class)
  assert list(np.bincount(labels[subsets[0.5]])) == [20, 4, 50, 1, 12]
  for small, large in zip(fractions, fractions[1:]):
    assert set(subsets[small]) <= set(subsets[large])
  assert len(subsets[1.0]) == labels.size
  again = label_fractions.nested_subsets(labels, (0.1, 0.05), seed=0)
  np.testing.assert_array_equal(again[0.1], subsets[0.1])
  np.testing.assert_array_equal(again[0.05], subsets[0.05])
  other = label_fractions.nested_subsets(labels, (0.5,), seed=1)[0.5]
  assert not np.array_equal(other, subsets[0.5])


def test_subsets_written_once_and_reread(tmp_path):
  rng = np.random.default_rng(4)
  labels, _ = _uneven_labels(rng)
  written = label_fractions.load_or_write(str(tmp_path), "dom", labels,
                                          (0.1, 0.5), seed=7)
  path = Path(label_fractions.subsets_path(str(tmp_path), "dom", 7))
  assert path.exists() and list(tmp_path.iterdir()) == [path]
  stamp = path.stat().st_mtime_ns
  reread = label_fractions.load_or_write(str(tmp_path), "dom", labels,
                                         (0.1, 0.5, 0.05), seed=7)
  assert path.stat().st_mtime_ns == stamp  # Read, not rewritten.
  fresh = label_fractions.nested_subsets(labels, (0.1, 0.5, 0.05), seed=7)
  for f in (0.1, 0.5, 0.05):
    np.testing.assert_array_equal(reread[f], fresh[f])
  for f in (0.1, 0.5):
    np.testing.assert_array_equal(reread[f], written[f])
  with np.load(path) as stored:
    np.testing.assert_array_equal(stored["f0.1"], written[0.1])
  # The stored ranks win over the generator: tampered ranks are read back.
  with np.load(path) as stored:
    arrays = dict(stored)
  arrays["ranks"] = np.where(labels == 2, 99 - arrays["ranks"],
                             arrays["ranks"])
  np.savez(path, **arrays)
  tampered = label_fractions.load_or_write(str(tmp_path), "dom", labels,
                                           (0.1,), seed=7)[0.1]
  assert not np.array_equal(tampered, fresh[0.1])

  changed = labels.copy()
  changed[0] = (changed[0] + 1) % 5
  with pytest.raises(ValueError, match=r"dom_seed7\.npz holds label-"
                     r"fraction subsets drawn for other labels.*Delete"):
    label_fractions.load_or_write(str(tmp_path), "dom", changed, (0.1,),
                                  seed=7)
  with pytest.raises(ValueError, match=r"fraction 0.0 must be in \(0, 1\]"):
    label_fractions.nested_subsets(labels, (0.0,), seed=0)


def test_evaluators_share_stored_subsets(tmp_path, monkeypatch):
  rng = np.random.default_rng(5)
  x, y = _blobs(rng, 4, 200, 8)
  seen = []

  def fake(train_f, train_y, test_f, test_y, **kwargs):
    seen.append(train_f)
    return {"top1": 1.0, "train_top1": 1.0, "final_loss": 0.0}

  monkeypatch.setattr(linear_probe, "train_linear_probe", fake)
  ctx = _context(x, y, x, y, 4, subsets_dir=str(tmp_path / "subsets"))
  cfg = _entry("linear_probe", steps=5, label_fraction=0.1, subset_seed=3)
  registry.get("linear_probe").run(cfg, ctx)
  stored = label_fractions.load_or_write(str(tmp_path / "subsets"), "dom", y,
                                         (0.1,), seed=3)[0.1]
  np.testing.assert_array_equal(seen[0], x[stored])
  # All standard fractions are in the file, for every later evaluator.
  with np.load(label_fractions.subsets_path(
      str(tmp_path / "subsets"), "dom", 3)) as f:
    assert {"f0.01", "f0.05", "f0.1", "f0.5", "f1"} <= set(f.files)


# --------------------------------------------------------------------------
# kNN at k = 20 and k = 200.


@pytest.mark.parametrize("k", [20, 200])
def test_knn_on_clusters(k):
  rng = np.random.default_rng(6)
  x, y = _blobs(rng, 10, 3000, 32, spread=0.5)  # 300 per class (> k).
  ctx = _context(x[:2500], y[:2500], x[2500:], y[2500:], 10)
  knn = registry.get("knn")
  res = knn.run(protocols.knn(k), ctx)
  assert res == {"top1": 100.0, "top5": 100.0}
  # 10 % of the labels: 25 per class, so k = 200 votes across classes; the
  # exp(s / 0.07) weights keep the own cluster decisive.
  res = knn.run(protocols.knn(k, label_fraction=0.1), ctx)
  assert res["top1"] == 100.0
  xs, ys = _blobs(rng, 10, 3000, 32, shuffle=True)
  res = knn.run(protocols.knn(k), _context(xs[:2500], ys[:2500], xs[2500:],
                                           ys[2500:], 10))
  assert 4.0 < res["top1"] < 16.0, res  # Chance 10 % (std 1.3 %).


# --------------------------------------------------------------------------
# A tiny BN encoder over easy images: augmented probe and fine-tuning.


class _TinyNet(nn.Module):
  """Conv → BN (eval mode) → ReLU → mean pool [b, 8]; a projector on top
  that the features (with_projector=False) do not use."""

  @nn.compact
  def __call__(self, x, with_projector=False):
    x = nn.Conv(8, (3, 3), name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, name="bn")(x)
    feats = jnp.mean(nn.relu(x), axis=(1, 2))
    return nn.Dense(4, name="projector")(feats) if with_projector else feats


def _features(params, batch_stats, images):
  return _TinyNet().apply({"params": params, "batch_stats": batch_stats},
                          images)


@pytest.fixture(scope="module")
def encoder():
  """(params incl. the unused projector, batch_stats with non-trivial
  running statistics, extractor) of the tiny net."""
  variables = _TinyNet().init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)),
                              with_projector=True)
  params = dict(variables["params"])
  stats = jax.tree.map(lambda v: v + 0.1, variables["batch_stats"])
  return params, stats, FeatureExtractor(_features, batch_size=64)


def _colour_images(rng, n, size=8):
  """Class c: channel c brighter, on noise (crop / flip invariant)."""
  y = rng.permutation(np.arange(n) % 3).astype(np.int32)
  x = rng.normal(size=(n, size, size, 3)).astype(np.float32)
  x[np.arange(n), :, :, y] += 1.5
  return x, y


def _image_context(encoder, rng, n_train=120, n_test=90, **kwargs):
  params, stats, extractor = encoder
  xtr, ytr = _colour_images(rng, n_train)
  xte, yte = _colour_images(rng, n_test)
  return _context(extractor(params, stats, xtr), ytr,
                  extractor(params, stats, xte), yte, 3, train_images=xtr,
                  test_images=xte, extractor=extractor, params=params,
                  batch_stats=stats, **kwargs)


def _copy(tree):
  return jax.tree.map(lambda v: np.array(v, copy=True), tree)


def _assert_bit_identical(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    assert np.array_equal(np.asarray(x), np.asarray(y))


def test_crop_flip_views():
  rng = np.random.default_rng(7)
  images = jnp.asarray(rng.normal(size=(64, 8, 8, 3)), jnp.float32)
  crop_flip = jax.jit(image_augment.crop_flip)
  views = crop_flip(jax.random.key(1), images)
  assert views.shape == images.shape
  np.testing.assert_array_equal(views, crop_flip(jax.random.key(1), images))
  assert not np.allclose(views, images)
  # A constant image stays constant under any crop and flip.
  flat = crop_flip(jax.random.key(3), jnp.full_like(images, 2.5))
  np.testing.assert_allclose(flat, 2.5, rtol=1e-5)
  windows = jax.jit(image_augment.crop_windows, static_argnums=(1, 2, 3))(
      jax.random.key(2), 4000, 8, 12)
  area = windows[:, 2] * windows[:, 3] / 96
  ratio = windows[:, 3] / windows[:, 2]
  assert 0.08 - 1e-6 <= float(area.min()) and float(area.max()) <= 1.0
  assert 0.75 - 1e-5 <= float(ratio.min())
  assert float(ratio.max()) <= 4 / 3 + 1e-5
  assert float((windows[:, 0] + windows[:, 2]).max()) <= 8 + 1e-4
  assert float((windows[:, 1] + windows[:, 3]).max()) <= 12 + 1e-4
  # Flips: about half the views of a left-right ramp are mirrored.
  ramp = jnp.broadcast_to(jnp.arange(8.0)[None, None, :, None],
                          images.shape)
  slope = np.asarray(crop_flip(jax.random.key(4), ramp))
  slope = slope[:, :, -1].mean(axis=(1, 2)) - slope[:, :, 0].mean(axis=(1, 2))
  assert 16 <= int(np.sum(slope < 0)) <= 48 and np.all(slope != 0)


def test_augmented_probe_frozen_and_above_chance(encoder):
  rng = np.random.default_rng(8)
  ctx = _image_context(encoder, rng)
  params0, stats0 = _copy(ctx.params), _copy(ctx.batch_stats)
  cfg = protocols.relicv2(epochs=15.0, batch_size=32)
  res = registry.get("linear_probe").run(cfg, ctx)
  _assert_bit_identical(ctx.params, params0)
  _assert_bit_identical(ctx.batch_stats, stats0)
  assert res["top1"] > 80.0, res  # Chance 33 %.
  assert res == registry.get("linear_probe").run(cfg, ctx)  # Seeded.


def test_identity_views_reproduce_frozen_probe(encoder, monkeypatch):
  """With views = the images, re-encoding in the loop is the frozen probe."""
  rng = np.random.default_rng(11)
  params, stats, _ = encoder
  # A features_fn of its own: the jitted loop is traced afresh (after the
  # patch), not taken from the cache of another test.
  extractor = FeatureExtractor(lambda p, s, x: _features(p, s, x),
                               batch_size=64)
  ctx = _image_context((params, stats, extractor), rng)
  cfg = protocols.relicv2(epochs=5.0, batch_size=32)
  frozen = registry.get("linear_probe").run(
      ml_collections.ConfigDict(dict(cfg.to_dict(), augment="none")), ctx)
  monkeypatch.setattr(image_augment, "crop_flip", lambda key, images: images)
  identity = registry.get("linear_probe").run(cfg, ctx)
  assert identity["top1"] == frozen["top1"]
  assert identity["final_loss"] == pytest.approx(frozen["final_loss"],
                                                 rel=1e-4)


def test_finetune_moves_encoder_not_ctx_params(encoder):
  rng = np.random.default_rng(9)
  ctx = _image_context(encoder, rng)
  params0, stats0 = _copy(ctx.params), _copy(ctx.batch_stats)
  cfg = protocols.finetune_relicv2(0.1, label_fraction=0.5, batch_size=20,
                                   head_lr=0.3, encoder_lr=0.05)
  res = registry.get("finetune").run(cfg, ctx)
  _assert_bit_identical(ctx.params, params0)
  _assert_bit_identical(ctx.batch_stats, stats0)
  # 60 labelled images, batch 20, 20 epochs: 60 steps.
  assert res["n_labelled"] == 60.0 and res["steps"] == 60.0
  assert res["encoder_rel_change"] > 1e-3, res
  assert res["top1"] > 80.0 and res["top5"] is None, res
  # The unused projector is frozen; conv and BN scale / bias train.
  used = finetune_lib._used_leaves(  # pylint: disable=protected-access
      _features, ctx.params, ctx.batch_stats, ctx.train_images[:8])
  assert not any(jax.tree.leaves(used["projector"]))
  assert all(jax.tree.leaves(used["conv"])) and all(
      jax.tree.leaves(used["bn"]))


def test_finetune_direct_call_reports_change(encoder):
  params, stats, extractor = encoder
  rng = np.random.default_rng(10)
  x, y = _colour_images(rng, 40)
  common = dict(features_fn=_features, params=params, batch_stats=stats,
                extractor=extractor, num_classes=3, steps=6, batch_size=20,
                momentum=0.9, nesterov=True, weight_decay=0.0,
                schedule="constant", milestones=(), decay=1.0,
                augment="none", standardize=True, seed=0)
  frozen = finetune_lib.finetune(x, y, x, y, head_lr=0.3, encoder_lr=1e-12,
                                 **common)
  moved = finetune_lib.finetune(x, y, x, y, head_lr=0.3, encoder_lr=0.05,
                                **common)
  assert frozen["encoder_rel_change"] < 1e-9
  assert moved["encoder_rel_change"] > 1e-3


# --------------------------------------------------------------------------
# Presets and config files.


def test_presets_pinned():
  def values(entry, keys):
    return {k: entry[k] for k in keys}

  keys = ("steps", "epochs", "batch_size", "lr", "lr_scaling", "momentum",
          "nesterov", "weight_decay", "schedule", "augment")
  assert values(protocols.mdssl(), keys) == dict(
      steps=30_000, epochs=0.0, batch_size=1024, lr=0.1, lr_scaling="none",
      momentum=0.9, nesterov=False, weight_decay=0.0, schedule="constant",
      augment="none")
  keys = keys[1:]
  assert values(protocols.relicv2(), keys) == dict(
      epochs=100.0, batch_size=1024, lr=0.3, lr_scaling="linear",
      momentum=0.9, nesterov=True, weight_decay=0.0, schedule="cosine",
      augment="crop_flip")
  solo = protocols.solo_learn()
  assert values(solo, keys) == dict(
      epochs=100.0, batch_size=256, lr=1.0, lr_scaling="linear",
      momentum=0.9, nesterov=False, weight_decay=0.0, schedule="step",
      augment="none")
  assert (tuple(solo.milestones), solo.decay) == ((0.6, 0.8), 0.1)
  msb = protocols.msbreg_transfer()
  assert values(msb, keys) == dict(
      epochs=28.0, batch_size=256, lr=0.2, lr_scaling="none", momentum=0.9,
      nesterov=False, weight_decay=1e-4, schedule="step", augment="none")
  assert msb.milestones == pytest.approx((1 / 3, 2 / 3)) and msb.decay == 0.1
  assert protocols.knn(200).to_dict() == {
      "type": "knn", "k": 200, "temperature": 0.07, "chunk_size": 0,
      "label_fraction": 1.0, "subset_seed": 0}
  ft_keys = ("batch_size", "head_lr", "encoder_lr", "weight_decay",
             "epochs", "momentum", "nesterov", "schedule", "decay",
             "augment", "label_fraction")
  assert values(protocols.finetune_relicv2(0.01), ft_keys) == dict(
      batch_size=2048, head_lr=10.0, encoder_lr=0.04, weight_decay=0.0,
      epochs=20.0, momentum=0.9, nesterov=True, schedule="step", decay=0.2,
      augment="crop_flip", label_fraction=0.01)
  ft10 = protocols.finetune_relicv2(0.1)
  assert values(ft10, ft_keys[:4]) == dict(
      batch_size=512, head_lr=0.3, encoder_lr=0.004, weight_decay=1e-5)
  assert tuple(ft10.milestones) == (0.6, 0.8)  # Epochs 12 and 16 of 20.
  # Overrides, and every preset validates through the registry.
  assert protocols.relicv2(epochs=2, batch_size=64).epochs == 2.0
  for entry in (protocols.mdssl(), protocols.relicv2(), solo, msb,
                protocols.knn(20), ft10):
    assert registry.get(entry.type).validate(entry) == []
  with pytest.raises(ValueError, match=r"no settable keys \['epoch'\]"):
    protocols.relicv2(epoch=3)
  with pytest.raises(ValueError, match="fractions \\[0.01, 0.1\\], not 0.5"):
    protocols.finetune_relicv2(0.5)


def _load(spec: str) -> ml_collections.ConfigDict:
  return config_lib.load_config(str(_REPO / "configs" / "eval" / spec))


@pytest.mark.parametrize("stem", ["linear_protocols", "label_fractions",
                                  "finetune"])
def test_config_files_load_and_validate(stem):
  module_path = _REPO / "configs" / "eval" / f"{stem}.py"
  namespace = {}
  exec(compile(module_path.read_text(), str(module_path), "exec"), namespace)
  for arg in namespace["VARIANTS"]:
    suite = _load(f"{stem}.py:{arg}" if arg else f"{stem}.py")
    assert suite_config.validate(suite) == [], arg
    # The entries are full configs of their types, also for the run schema.
    config = config_lib.get_default_config()
    config.evals = suite.evals
    config_lib.validate(config)


def test_config_file_contents():
  suite = _load("linear_protocols.py")
  assert sorted(suite.evals) == ["knn20", "knn200", "probe_mdssl",
                                 "probe_relicv2", "probe_solo_learn"]
  assert suite.evals.knn200.k == 200
  assert suite.evals.probe_relicv2.augment == "crop_flip"
  cpu = _load("linear_protocols.py:relicv2,cpu")
  assert list(cpu.evals) == ["probe_relicv2"]
  assert (cpu.evals.probe_relicv2.epochs,
          cpu.evals.probe_relicv2.batch_size) == (10.0, 256)
  fractions = _load("label_fractions.py")
  names = [f"{kind}_f{p}" for kind in ("knn", "probe")
           for p in (1, 5, 10, 50, 100)]
  assert sorted(fractions.evals) == sorted(names)
  assert fractions.evals.probe_f5.label_fraction == 0.05
  assert fractions.evals.knn_f50.label_fraction == 0.5
  assert fractions.evals.probe_f10.epochs == 100.0
  ft = _load("finetune.py")
  assert sorted(ft.evals) == ["finetune_f1", "finetune_f10"]
  assert ft.evals.finetune_f1.head_lr == 10.0
  assert ft.evals.finetune_f10.label_fraction == 0.1
  with pytest.raises(config_lib.ConfigError, match="Unknown config argument"):
    _load("linear_protocols.py:simclr")


def test_probe_optimizer_matches_optax_sgd_for_constant():
  # The default (constant) path is SGD with momentum, exactly.
  tx = linear_probe.make_optimizer(0.1, 0.9, 0.0, 10, nesterov=False,
                                   schedule="constant", milestones=(0.6,),
                                   decay=0.1)
  ref = optax.sgd(0.1, momentum=0.9)
  p = jnp.ones(3)
  s, r = tx.init(p), ref.init(p)
  for i in range(5):
    g = jnp.full(3, float(i + 1))
    u, s = tx.update(g, s, p)
    v, r = ref.update(g, r, p)
    np.testing.assert_allclose(u, v, rtol=1e-6)
