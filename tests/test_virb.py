"""The ViRB-style end-task battery (issue #16): tasks, heads, metrics,
analysis, TFDS tasks, the battery and its report."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from scipy import stats
import tensorflow_datasets as tfds

from mdssl_jax import config_lib
from mdssl_jax import presets
from mdssl_jax import train
from mdssl_jax.virb import analysis
from mdssl_jax.virb import battery
from mdssl_jax.virb import config as virb_config
from mdssl_jax.virb import encoders as encoders_lib
from mdssl_jax.virb import heads
from mdssl_jax.virb import metrics
from mdssl_jax.virb import report
from mdssl_jax.virb import tasks
from mdssl_jax.virb import tfds_tasks
from mdssl_jax.virb import train_heads

REPO = Path(__file__).resolve().parents[1]
OFFLINE = str(REPO / "configs" / "virb" / "offline.py")


# ---- Generators --------------------------------------------------------------


@pytest.mark.parametrize("name", list(tasks.TASK_SPECS))
def test_generators_are_deterministic_per_seed_and_split(name):
  kw = dict(image_size=16, max_objects=3, num=4)
  x1, y1 = tasks.generate(name, seed=3, split="train", **kw)
  x2, y2 = tasks.generate(name, seed=3, split="train", **kw)
  x3, _ = tasks.generate(name, seed=3, split="test", **kw)
  x4, _ = tasks.generate(name, seed=4, split="train", **kw)
  np.testing.assert_array_equal(x1, x2)
  np.testing.assert_array_equal(y1, y2)
  assert not np.array_equal(x1, x3) and not np.array_equal(x1, x4)
  two_frame = tasks.TASK_SPECS[name][1] in ("fusion", "siamese")
  assert x1.shape == ((4, 2, 16, 16, 3) if two_frame else (4, 16, 16, 3))
  assert x1.dtype == np.float32 and 0.0 <= x1.min() and x1.max() <= 1.0


def test_count_equals_the_number_of_separate_visible_shapes():
  found = []
  for x, label, scene, _ in tasks.examples(
      "count", seed=0, split="train", num=40, image_size=32, max_objects=4):
    fg = tasks.render(scene, 32)["fg"]
    _, components = ndimage.label(fg)
    assert label + 1 == len(scene.shapes) == components
    found.append(int(label))
    assert x.shape == (32, 32, 3)
  assert sorted(set(found)) == [0, 1, 2, 3]


def test_depth_and_classes_follow_the_nearest_shape():
  # A near square (z=3) over a far circle (z=5), both centred.
  tex = np.zeros((32, 32, 3), np.float32)
  near = tasks.Shape(1, (1.0, 0.0, 0.0), 0.0, 0.0, 3.0, 3.0 * 4 / 16)
  far = tasks.Shape(0, (0.0, 1.0, 0.0), 0.0, 0.0, 5.0, 5.0 * 7 / 16)
  out = tasks.render(tasks.Scene(tex, (near, far)), 16)
  assert out["depth"][8, 8] == 3.0 and out["classes"][8, 8] == 2
  assert np.allclose(out["image"][8, 8], (1.0, 0.0, 0.0))
  # 6 px from the centre: outside the square (half side 3.2 px), inside
  # the circle (radius 7 px).
  assert out["depth"][8, 14] == 5.0 and out["classes"][8, 14] == 1
  assert out["depth"][0, 0] == tasks.BACKGROUND_DEPTH
  assert out["classes"][0, 0] == 0 and not out["fg"][0, 0]
  # The generated depth targets are exactly the rendered depths.
  for _, depth, scene, _ in tasks.examples(
      "depth", seed=1, split="test", num=5, image_size=16, max_objects=4):
    np.testing.assert_array_equal(depth[..., 0],
                                  tasks.render(scene, 16)["depth"])
    allowed = {s.z for s in scene.shapes} | {tasks.BACKGROUND_DEPTH}
    assert set(np.unique(depth).tolist()) <= {np.float32(a) for a in allowed}


def test_flow_moves_each_shape_pixel_onto_its_class_in_frame_two():
  agree, still = [], []
  rows, cols = np.mgrid[0:32, 0:32]
  for _, flow, scene, camera in tasks.examples(
      "flow", seed=0, split="train", num=12, image_size=32, max_objects=4):
    first = tasks.render(scene, 32)
    second = tasks.render(scene, 32, camera)
    for out, moved in ((agree, flow), (still, 0 * flow)):
      u = np.rint(cols + moved[..., 0]).astype(int)
      v = np.rint(rows + moved[..., 1]).astype(int)
      keep = (u >= 0) & (u < 32) & (v >= 0) & (v < 32) & first["fg"]
      out.append(np.mean(second["classes"][v[keep], u[keep]]
                         == first["classes"][keep]))
  # Measured 0.94 (rounding to whole pixels, occlusions); no motion 0.40.
  assert np.mean(agree) > 0.9 and np.mean(still) < 0.6, (agree, still)
  # Pure sideways motion shifts the background plane by f * tx / depth.
  bg = np.full((32, 32), tasks.BACKGROUND_DEPTH, np.float32)
  flow = tasks.flow_field(bg, (0.6, 0.0, 0.0))
  np.testing.assert_allclose(flow[..., 0], -32 * 0.6 / 8, rtol=1e-5)
  np.testing.assert_allclose(flow[..., 1], 0.0, atol=1e-6)


def test_tasks_have_their_label_spaces_and_chance_levels():
  t = tasks.make_task("class_seg", seed=0, image_size=16, num_train=20,
                      num_test=10, max_objects=3)
  assert t.num_outputs == len(tasks.SHAPES) + 1
  assert t.train_y.shape == (20, 16, 16) and t.train_y.max() < t.num_outputs
  chance = metrics.trivial_score("miou", t.train_y, t.test_y, t.num_outputs)
  background = np.mean(t.test_y == 0)  # All-background: IoU_0, others 0.
  assert chance == pytest.approx(background / len(np.unique(t.test_y)))
  ego = tasks.make_task("egomotion", seed=0, image_size=16, num_train=12,
                        num_test=6)
  assert ego.num_outputs == 6 and ego.train_y.max() < 6


# ---- Metrics and analysis ----------------------------------------------------


def test_mean_iou_and_l1_match_numpy_references():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, (3, 8, 8))
  pred = np.where(rng.random((3, 8, 8)) < 0.6, labels,
                  rng.integers(0, 4, (3, 8, 8)))
  ious = [np.sum((pred == k) & (labels == k))
          / np.sum((pred == k) | (labels == k)) for k in range(4)]
  assert metrics.mean_iou(pred, labels, 4) == pytest.approx(np.mean(ious))
  # A class absent from both prediction and labels is not averaged.
  assert metrics.mean_iou(np.array([0, 0, 1]), np.array([0, 1, 1]), 5) == (
      pytest.approx((1 / 2 + 1 / 2) / 2))
  a, b = rng.normal(size=(4, 5, 5, 2)), rng.normal(size=(4, 5, 5, 2))
  assert metrics.l1(a, b) == pytest.approx(np.mean(np.abs(a - b)))
  assert metrics.score("neg_l1", a, b, 2) == pytest.approx(-metrics.l1(a, b))
  logits = np.eye(3)[[0, 2, 1, 1]]
  assert metrics.score("top1", logits, np.array([0, 2, 2, 1]), 3) == 0.75
  with pytest.raises(ValueError, match=r"classes must lie in \[0, 2\)"):
    metrics.mean_iou(np.array([0, 2]), np.array([0, 1]), 2)


def test_normalised_scores_category_means_and_spearman():
  scores = np.array([[0.20, 0.50, 1.0, -3.0],   # baseline
                     [0.40, 0.40, 1.0, -2.0],
                     [0.60, 0.70, 1.0, -2.5]])
  norm = analysis.normalised_scores(scores, 0)
  std0 = np.std([0.2, 0.4, 0.6])
  np.testing.assert_allclose(norm[:, 0], [0.0, 0.2 / std0, 0.4 / std0])
  np.testing.assert_allclose(norm[:, 1],
                             (scores[:, 1] - 0.5) / np.std(scores[:, 1]))
  np.testing.assert_array_equal(norm[:, 2], 0.0)  # All tie.
  near = scores.copy()
  near[1, 2] += 1e-4  # Within MIN_STD: still a tie, not a score of ±2.
  np.testing.assert_array_equal(analysis.normalised_scores(near, 0)[:, 2],
                                0.0)
  assert np.isnan(analysis.spearman_matrix(near)[2]).all()
  means = analysis.category_means(norm, ["a", "b", "a", "b"])
  np.testing.assert_allclose(means["a"], norm[:, [0, 2]].mean(1))
  np.testing.assert_allclose(means["b"], norm[:, [1, 3]].mean(1))
  rng = np.random.default_rng(1)
  many = rng.normal(size=(7, 4))
  many[3, 1] = many[5, 1]  # A tie.
  np.testing.assert_allclose(analysis.spearman_matrix(many),
                             stats.spearmanr(many).statistic, atol=1e-12)
  spear = analysis.spearman_matrix(scores)
  assert np.isnan(spear[2]).all() and spear[0, 0] == pytest.approx(1.0)
  np.testing.assert_allclose(spear[0, 1],
                             stats.spearmanr(scores[:, 0],
                                             scores[:, 1]).statistic)
  np.testing.assert_allclose(analysis.rankdata([3, 1, 3, 2]),
                             stats.rankdata([3, 1, 3, 2]))


# ---- Heads -------------------------------------------------------------------


def _tiny_encoder_config():
  """tests/test_end_to_end.py's 60-step demo run, without evaluations."""
  c = presets.tiny_test_config(config_lib.get_default_config("mdssl"),
                               steps=60, domains=("photos", "textures"),
                               per_domain_batch=16, image_size=16)
  c.model.width_multiplier = 0.125
  c.views.large.crop_area = (0.3, 1.0)
  c.method_args.temperature = 0.2
  c.optim.base_lr = 1.0
  c.optim.weight_decay = 1e-5
  c.optim.warmup_steps = 5
  c.mesh_shape = 1
  return c


@pytest.fixture(scope="module")
def random_encoder():
  config = _tiny_encoder_config()
  shape = config_lib.run_shape(config, 1000)
  setup = train.build_setup(config, shape)
  state = train.create_state(setup, config)
  return encoders_lib.Encoder("random_init", setup.method.network,
                              state.params, state.batch_stats, config)


@pytest.mark.parametrize("name", ["shape_class", "egomotion", "fg_seg",
                                  "depth", "flow"])
def test_every_head_overfits_a_tiny_generated_set(random_encoder, name):
  task = tasks.make_task(name, seed=0, image_size=16, num_train=8,
                         num_test=2)
  cfg = virb_config.base_config().heads
  cfg.decoder_width = 16
  cfg.fusion_dim = 32
  head = battery.make_head(task, cfg)
  inputs = battery.head_inputs(random_encoder, task, task.train_x, 8)
  pixel = task.head not in ("linear", "fusion")
  loss = "l1" if task.metric == "neg_l1" else "ce"
  # Larger steps than the battery's 3e-4 to overfit fast; with L1, Adam
  # at 3e-3 stalls at ~0.37 (measured), 1e-3 does not.
  steps = 600 if loss == "l1" else 300
  trained, losses = train_heads.train_head(
      head, inputs, task.train_y, loss=loss, steps=steps, batch_size=8,
      lr={"linear": 1e-2, "fusion": 3e-3}.get(task.head, 1e-3), seed=0,
      out_size=16 if pixel else None)
  assert losses.shape == (steps,)
  # CE in nats; L1 in units of the targets' std (the first steps: ~0.8).
  assert np.mean(losses[-10:]) < (0.15 if loss == "l1" else 0.1), (
      losses[:3], losses[-10:])
  outputs = train_heads.predict(head, trained, inputs, batch_size=4,
                                out_size=16 if pixel else None)
  train_score = metrics.score(task.metric, outputs, task.train_y,
                              task.num_outputs)
  chance = metrics.trivial_score(task.metric, task.train_y, task.train_y,
                                 task.num_outputs)
  assert train_score > chance + 0.3 * abs(chance), (train_score, chance)


def test_heads_shapes_and_the_siamese_u_net_class():
  task = tasks.make_task("flow", seed=0, image_size=16, num_train=2,
                         num_test=1)
  head = battery.make_head(task, virb_config.base_config().heads)
  assert isinstance(head, heads.SiameseUNet) and head.out_channels == 2
  seg = battery.make_head(
      tasks.make_task("class_seg", seed=0, image_size=16, num_train=2,
                      num_test=1), virb_config.base_config().heads)
  assert isinstance(seg, heads.DeepLabHead) and seg.num_classes == 6
  assert encoders_lib.select_levels(
      ["stem", "stage2", "stage1", "stage10", "stage1_block1"]) == [
          "stage1", "stage2", "stage10"]
  vit_names = ["stem"] + [f"stage1_block{j}" for j in range(1, 13)]
  assert encoders_lib.select_levels(vit_names) == [
      "stem", "stage1_block1", "stage1_block5", "stage1_block8",
      "stage1_block12"]


# ---- TFDS tasks --------------------------------------------------------------


def test_tfds_tasks_under_mock_data_and_missing_data(tmp_path):
  cfg = virb_config.base_config().tfds
  cfg.data_dir = str(tmp_path)
  cfg.num_train, cfg.num_test, cfg.image_size = 5, 3, 16
  with tfds.testing.mock_data(num_examples=6):
    for name, (outputs, y_shape) in {
        "eurosat": (10, (5,)), "cifar100": (100, (5,)),
        "pets_seg": (3, (5, 16, 16)), "nyu_depth": (1, (5, 16, 16, 1))
    }.items():
      t = tfds_tasks.load_task(name, cfg)
      assert t.train_x.shape == (5, 16, 16, 3) and t.test_y.shape[0] == 3
      assert t.num_outputs == outputs and t.train_y.shape == y_shape
      assert 0.0 <= t.train_x.min() and t.train_x.max() <= 1.0
      if name == "pets_seg":
        assert set(np.unique(t.train_y)) <= {0, 1, 2}
  with pytest.raises(FileNotFoundError) as info:
    tfds_tasks.load_task("dtd", cfg)
  assert f"tfds build dtd --data_dir={tmp_path}" in str(info.value)
  assert "--config.tfds.download=True" in str(info.value)


# ---- Config ------------------------------------------------------------------


def test_config_variants_validate_and_bad_configs_are_named():
  module = config_lib.load_config(OFFLINE)
  assert virb_config.validate(module) == []
  for arg in ("smoke", "tfds", "smoke,tfds"):
    assert virb_config.validate(config_lib.load_config(f"{OFFLINE}:{arg}")) \
        == []
  assert config_lib.load_config(f"{OFFLINE}:tfds").tfds.tasks == (
      virb_config.TFDS_TASKS)
  bad = virb_config.base_config()
  bad.tasks = ("depth", "depht")
  bad.image_size = 20
  bad.heads.lr = 0.0
  errors = "\n".join(virb_config.validate(bad))
  assert "unknown task 'depht'" in errors
  assert "image_size must be a multiple of 8" in errors
  assert "heads.lr must be > 0" in errors
  with pytest.raises(ValueError, match="Invalid ViRB battery config"):
    virb_config.check(bad)


# ---- The battery on a trained encoder ----------------------------------------


@pytest.fixture(scope="module")
def trained_encoders(tmp_path_factory):
  """A 60-step MDSSL encoder (16 px demo photos/textures) and the baseline."""
  config = _tiny_encoder_config()
  workdir = str(tmp_path_factory.mktemp("virb") / "mdssl60")
  train.train_and_evaluate(config, workdir)
  return encoders_lib.load_encoders([workdir])


def test_battery_runs_writes_its_report_and_training_helps(trained_encoders,
                                                           tmp_path):
  config = config_lib.load_config(f"{OFFLINE}:smoke")
  with config.unlocked():
    config.image_size = 16
    config.tasks = ("shape_class", "count", "fg_seg", "depth")
    config.heads.image_steps = 300
    # 48 test images are too few to tell the encoders apart on photos.
    config.max_train_per_domain = 400
    config.max_test_per_domain = 200
  lines = []
  results = battery.run_battery(config, trained_encoders, log=lines.append)
  names = [t["name"] for t in results["tasks"]]
  assert names == ["shape_class", "count", "fg_seg", "depth",
                   "domain:photos"]
  assert results["encoders"] == ["random_init", "mdssl60"]
  assert len(lines) == 1 + 2 * len(names)
  for row in results["tasks"]:
    assert row["normalised"]["random_init"] == 0.0
    sizes = (400, 200) if row["name"] == "domain:photos" else (96, 48)
    assert (row["num_train"], row["num_test"]) == sizes
  # Measured: domain:photos top-1 0.56 (random init) -> 0.60 (60 steps
  # under the tests' 8 simulated devices; 0.65 on one device).
  semantic = [t for t in results["tasks"]
              if t["category"].startswith("semantic")]
  assert any(t["scores"]["mdssl60"] > t["scores"]["random_init"]
             for t in semantic), [t["scores"] for t in semantic]
  paths = report.write_report(results, str(tmp_path / "out"))
  assert all(os.path.getsize(p) > 0 for p in paths.values())
  with open(paths["json"]) as f:
    assert json.load(f)["encoders"] == ["random_init", "mdssl60"]
  with open(paths["csv"]) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 2 * len(names)
  assert {r["encoder"] for r in rows} == {"random_init", "mdssl60"}
  summary = open(paths["markdown"]).read()
  assert "## Spearman correlation" in summary and "domain:photos" in summary
