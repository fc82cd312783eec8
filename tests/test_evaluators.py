"""Tests for the evaluator registry, the suite runner, the compile-once
feature extractor and the evaluation CLI's config handling."""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys
import types

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mdssl_jax import config_lib
from mdssl_jax import evaluate
from mdssl_jax.evaluation import overrides
from mdssl_jax.evaluation import registry
from mdssl_jax.evaluation import report
from mdssl_jax.evaluation import suite
from mdssl_jax.evaluation.features import FeatureExtractor

_REPO = Path(__file__).resolve().parents[1]

# The `config.eval` block of configs saved before `config.evals` existed.
_OLD_EVAL = {
    "knn_k": 20, "knn_temperature": 0.07, "probe_steps": 2000,
    "probe_batch_size": 1024, "probe_lr": 0.1, "probe_momentum": 0.9,
    "probe_schedule": "constant", "probe_standardize": True,
    "feature_batch_size": 256, "max_train_per_domain": 10000,
    "max_test_per_domain": 5000, "every_steps": 0, "at_end": True}


# --------------------------------------------------------------------------
# Registry.


def test_registry_lists_builtin_evaluators():
  assert {"knn", "linear_probe"} <= set(registry.available())
  for etype in registry.available():
    module = registry.get(etype)
    for attr in ("DEFAULTS", "validate", "run", "LABEL", "COLUMNS"):
      assert hasattr(module, attr), (etype, attr)
    cfg = registry.default_config(etype)
    assert cfg.type == etype and module.validate(cfg) == []
  bad_knn = registry.default_config("knn")
  bad_knn.update(k=0, temperature=0.0, chunk_size=-1)
  assert len(registry.get("knn").validate(bad_knn)) == 3


def test_registry_unknown_type():
  with pytest.raises(ValueError, match=r"Unknown evaluator type 'nope'.*knn"):
    registry.get("nope")


def test_registry_and_overrides_import_without_jax():
  code = ("import sys; from mdssl_jax.evaluation import overrides, registry; "
          "[registry.get(t) for t in registry.available()]; "
          "heavy = {'jax', 'flax', 'tensorflow'} & set(sys.modules); "
          "assert not heavy, heavy")
  proc = subprocess.run([sys.executable, "-c", code], cwd=_REPO,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]


def test_metric_columns_titles():
  config = config_lib.get_default_config()
  assert report.metric_columns(config.evals.to_dict()) == [
      ("kNN@1", "knn_top1"), ("kNN@5", "knn_top5"),
      ("probe@1", "probe_top1"), ("probe@5", "probe_top5")]
  # Two of one type: the evaluator names tell them apart. (ConfigDicts
  # keep their keys sorted, so evaluators run and print in name order.)
  config.evals.knn200 = dict(config.evals.knn.to_dict(), k=200)
  titles = [t for t, _ in report.metric_columns(config.evals.to_dict())]
  assert titles == ["knn@1", "knn@5", "knn200@1", "knn200@5", "probe@1",
                    "probe@5"]


# --------------------------------------------------------------------------
# Feature extractor: parameters are jit arguments.


def _counting_linear():
  """A features_fn x [b, ...] -> x.flat @ w, counting its traces."""
  traces = []

  def features_fn(params, batch_stats, images):
    traces.append(images.shape)
    flat = images.reshape(images.shape[0], -1)
    return flat @ params["w"] + batch_stats["b"]

  return features_fn, traces


def test_feature_extractor_compiles_once_per_shape():
  features_fn, traces = _counting_linear()
  extractor = FeatureExtractor(features_fn, batch_size=4)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(10, 2, 2, 3)).astype(np.float32)
  outputs = []
  for seed in range(3):  # Three "periodic evaluations", new params each.
    params = {"w": jnp.asarray(rng.normal(size=(12, 5)), jnp.float32)}
    stats = {"b": jnp.full((5,), float(seed))}
    feats = extractor(params, stats, images)
    np.testing.assert_allclose(
        feats, images.reshape(10, -1) @ np.asarray(params["w"]) + seed,
        rtol=1e-5, atol=1e-5)
    outputs.append(feats)
  assert traces == [(4, 2, 2, 3)]  # One trace (and compile) for all three.
  assert not np.allclose(outputs[0], outputs[1])  # Params not baked in.
  extractor(params, stats, images[:3])  # A smaller batch: one more.
  assert traces == [(4, 2, 2, 3), (3, 2, 2, 3)]


# --------------------------------------------------------------------------
# Suite runner.


def _separable_domain(rng, name, num_classes, n_train, n_test, shuffle=False):
  means = rng.normal(size=(num_classes, 2, 2, 3)) * 4.0

  def split(n):
    y = rng.permutation(np.arange(n) % num_classes)
    x = means[y] + 0.3 * rng.normal(size=(n, 2, 2, 3))
    if shuffle:  # Labels independent of the images.
      y = rng.permutation(y)
    return x.astype(np.float32), y.astype(np.int32)

  (xtr, ytr), (xte, yte) = split(n_train), split(n_test)
  return {"name": name, "train_images": xtr, "train_labels": ytr,
          "test_images": xte, "test_labels": yte, "num_classes": num_classes}


def _config(**evals):
  config = config_lib.get_default_config()
  config.evals.knn.k = 5
  config.evals.probe.update(steps=60, batch_size=32)
  for name, entry in evals.items():
    config.evals[name] = entry
  return config


def _linear_params(rng, scale=1.0):
  w, _ = np.linalg.qr(rng.normal(size=(12, 12)))  # Orthogonal: keeps classes.
  return ({"w": jnp.asarray(scale * w, jnp.float32)},
          {"b": jnp.zeros((12,), jnp.float32)})


def test_run_suite_separable_and_shuffled_labels():
  rng = np.random.default_rng(1)
  features_fn, traces = _counting_linear()
  extractor = FeatureExtractor(features_fn, batch_size=64)
  config = _config()
  separable = [_separable_domain(rng, "a", 4, 256, 128),
               _separable_domain(rng, "b", 6, 256, 128)]
  for scale in (1.0, 3.0):  # Two evaluations with different params.
    res = suite.run_suite(config, extractor, *_linear_params(rng, scale),
                          separable)
    for row in res["domains"].values():
      assert row["knn_top1"] == 100.0 and row["probe_top1"] == 100.0
      assert row["probe_train_top1"] == 100.0
  assert len(traces) == 1  # Both splits, both domains, both params: 1 shape.

  shuffled = [_separable_domain(rng, "noise", 10, 1000, 1000, shuffle=True)]
  res = suite.run_suite(config, extractor, *_linear_params(rng), shuffled)
  row = res["domains"]["noise"]
  # 1000 test points: top-1 chance 10% (std 0.95%), top-5 50% (std 1.6%).
  for key in ("knn_top1", "probe_top1"):
    assert 5.0 < row[key] < 15.0, (key, row)
  assert 42.0 < row["probe_top5"] < 58.0
  assert row["chance"] == 10.0
  assert len(traces) == 1  # Same batch shape: still the first compile.


def _toy_module():
  """An evaluator defined outside the package: nearest class mean."""

  def validate(cfg):
    return [] if cfg.min_count >= 1 else ["min_count must be ≥ 1."]

  def run(cfg, data):
    classes = np.arange(data.num_classes)
    centres = np.stack([data.train_features[data.train_labels == c].mean(0)
                        for c in classes])
    dists = ((data.test_features[:, None] - centres[None]) ** 2).sum(-1)
    top1 = 100.0 * np.mean(dists.argmin(1) == data.test_labels)
    # The context can re-encode images with the evaluated parameters.
    again = data.encode(data.test_images)
    return {"top1": top1,
            "reencode_err": float(np.abs(again - data.test_features).max()),
            "count": cfg.min_count}

  module = types.ModuleType("toy_centroid_evaluator")
  module.DEFAULTS = {"min_count": 1}
  module.LABEL = "centroid"
  module.COLUMNS = (("top1", "@1"),)
  module.validate = validate
  module.run = run
  return module


def test_toy_evaluator_plugs_in(monkeypatch):
  module = _toy_module()
  monkeypatch.setitem(sys.modules, module.__name__, module)
  monkeypatch.setitem(registry.EVALUATORS, "centroid", module.__name__)
  config = _config(mine={"type": "centroid", "min_count": 3})
  del config.evals["probe"]
  config_lib.validate(config)  # The schema takes the new type's keys.
  config.evals.mine.min_count = 0
  with pytest.raises(config_lib.ConfigError, match="evals.mine: min_count"):
    config_lib.validate(config)
  config.evals.mine.min_count = 3

  rng = np.random.default_rng(2)
  extractor = FeatureExtractor(_counting_linear()[0], batch_size=32)
  domains = [_separable_domain(rng, "a", 3, 60, 30),
             _separable_domain(rng, "b", 5, 60, 30)]
  res = suite.run_suite(config, extractor, *_linear_params(rng), domains)
  for row in res["domains"].values():
    assert row["mine_top1"] == 100.0 and row["mine_reencode_err"] == 0.0
    assert row["mine_count"] == 3 and row["knn_top1"] == 100.0
  assert res["mean"] == pytest.approx(
      {"knn_top1": 100.0, "mine_top1": 100.0, "chance": (100 / 3 + 20) / 2})
  assert res["eval_config"]["evals"]["mine"] == {"type": "centroid",
                                                 "min_count": 3}
  header = report.format_table(res).splitlines()[0].split()
  assert header[-3:] == ["kNN@1", "kNN@5", "centroid@1"]


# --------------------------------------------------------------------------
# Default suite: results and table.


_FLATTEN = FeatureExtractor(
    lambda params, stats, x: x.reshape(x.shape[0], -1), batch_size=16)


def test_default_suite_results_and_table():
  rng = np.random.default_rng(12)
  domains = [_separable_domain(rng, "blobs3", 3, 60, 30),
             _separable_domain(rng, "blobs_six", 6, 60, 24)]
  config = _config()
  res = suite.run_suite(config, _FLATTEN, None, None, domains)
  assert list(res["domains"]) == ["blobs3", "blobs_six"]
  d3, d6 = res["domains"]["blobs3"], res["domains"]["blobs_six"]
  # The keys results files have always had, plus "unseen".
  assert list(d3) == ["knn_top1", "knn_top5", "probe_top1", "probe_top5",
                      "probe_train_top1", "probe_final_loss", "n_train",
                      "n_test", "feature_dim", "num_classes", "chance",
                      "unseen"]
  assert d3["unseen"] is False
  assert (d3["n_train"], d3["n_test"], d3["num_classes"]) == (60, 30, 3)
  assert d3["chance"] == pytest.approx(100 / 3)
  assert d3["knn_top5"] is None and d3["probe_top5"] is None
  assert d6["knn_top5"] == 100.0 and d6["feature_dim"] == 12
  for d in (d3, d6):
    assert d["knn_top1"] == 100.0 and d["probe_top1"] == 100.0
  assert res["mean"] == pytest.approx(
      {"knn_top1": 100.0, "probe_top1": 100.0,
       "chance": (100 / 3 + 100 / 6) / 2})
  assert res["eval_config"] == {"eval": config.eval.to_dict(),
                                "evals": config.evals.to_dict()}
  assert res["eval_config"]["evals"]["knn"]["k"] == 5

  table = report.format_table(res)
  lines = table.splitlines()
  assert lines[0].split() == ["domain", "classes", "n_train", "n_test",
                              "chance", "kNN@1", "kNN@5", "probe@1",
                              "probe@5"]
  assert any(l.startswith("blobs3 ") for l in lines)
  assert any(l.startswith("blobs_six ") for l in lines)
  assert lines[-1].split()[0] == "mean"
  assert "100.00" in lines[-1] and "25.00" in lines[-1]
  assert len({len(l) for l in lines[:2]}) == 1  # Header and rule align.


def test_default_suite_table_matches_readme():
  """The README's demo table is exactly what format_table renders for its
  numbers (parsed back from the README), mean row included."""
  readme = (_REPO / "README.md").read_text()
  start = readme.index("domain     classes")
  shown = readme[start:readme.index("\n```", start)]
  keys = ("num_classes", "n_train", "n_test", "chance", "knn_top1",
          "knn_top5", "probe_top1", "probe_top5")
  domains = {}
  for line in shown.splitlines()[2:]:
    if line.startswith(("-", "mean")):
      continue
    name, *cells = line.split()
    values = [int(c) for c in cells[:3]] + [float(c) for c in cells[3:]]
    domains[name] = dict(zip(keys, values))
    domains[name]["chance"] = 100.0 / domains[name]["num_classes"]
  assert list(domains) == ["digits", "photos", "textures"]
  mean = {k: float(np.mean([d[k] for d in domains.values()]))
          for k in keys[3:]}
  config = config_lib.get_default_config()
  results = {"domains": domains, "mean": mean,
             "eval_config": {"evals": config.evals.to_dict()}}
  assert report.format_table(results) == shown


def test_run_suite_rejects_bad_input():
  rng = np.random.default_rng(13)
  dom = _separable_domain(rng, "a", 2, 8, 4)
  config = _config()
  with pytest.raises(ValueError, match="unique"):
    suite.run_suite(config, _FLATTEN, None, None, [dom, dom])
  with pytest.raises(ValueError, match="lacks keys"):
    suite.run_suite(config, _FLATTEN, None, None, [{"name": "x"}])
  with pytest.raises(ValueError, match="empty"):
    suite.run_suite(config, _FLATTEN, None, None, [])
  with pytest.raises(ValueError, match="num_classes must be >= 2"):
    suite.run_suite(config, _FLATTEN, None, None,
                    [dict(dom, num_classes=1)])
  config.evals.knn.type = "no_such_type"
  with pytest.raises(ValueError, match="Unknown evaluator type"):
    suite.run_suite(config, _FLATTEN, None, None, [dom])


# --------------------------------------------------------------------------
# Old configs and --eval_override.


def test_upgrade_old_config():
  old = ml_collections.ConfigDict(
      {"method": "byol", "seed": 3,
       "eval": dict(_OLD_EVAL, knn_chunk_size=None, probe_nesterov=True)})
  new = overrides.upgrade_config(old)
  assert "evals" not in old and new.seed == 3
  assert new.eval.to_dict() == config_lib.get_default_config().eval.to_dict()
  assert new.evals.to_dict() == {
      "knn": {"type": "knn", "k": 20, "temperature": 0.07, "chunk_size": 0,
              "label_fraction": 1.0, "subset_seed": 0},
      "probe": {"type": "linear_probe", "steps": 2000, "epochs": 0.0,
                "batch_size": 1024, "lr": 0.1, "lr_scaling": "none",
                "momentum": 0.9, "nesterov": True, "weight_decay": 0.0,
                "schedule": "constant", "milestones": (0.6, 0.8),
                "decay": 0.1, "augment": "none", "standardize": True,
                "label_fraction": 1.0, "subset_seed": 0, "seed": 0}}
  current = config_lib.get_default_config()
  assert overrides.upgrade_config(current) is current
  with pytest.raises(ValueError, match="eval.bogus"):
    overrides.upgrade_config(ml_collections.ConfigDict(
        {"eval": dict(_OLD_EVAL, bogus=1)}))


def test_load_config_upgrades_old_workdir(tmp_path):
  old = config_lib.get_default_config("byol").to_dict()
  del old["evals"]
  old["eval"] = dict(_OLD_EVAL, probe_steps=1500, max_test_per_domain=1000)
  (tmp_path / "config.json").write_text(json.dumps(old))
  config = evaluate.load_config(str(tmp_path))
  assert config.evals.probe.steps == 1500 and config.evals.knn.k == 20
  assert config.eval.max_test_per_domain == 1000
  assert "probe_steps" not in config.eval
  with pytest.raises(FileNotFoundError, match="config.json not found"):
    evaluate.load_config(str(tmp_path / "missing"))


def test_overrides_old_and_new_key_forms():
  config = config_lib.get_default_config()
  overrides.apply_overrides(config, [
      "knn_k=200", "probe_steps=4000", "knn_chunk_size=64",
      "probe.lr=0.5", "evals.probe.nesterov=true", "probe_standardize=no",
      "max_test_per_domain=500", "eval.feature_batch_size=128",
      "probe.schedule=cosine"])
  assert config.evals.knn.k == 200 and config.evals.knn.chunk_size == 64
  assert config.evals.probe.steps == 4000 and config.evals.probe.lr == 0.5
  assert config.evals.probe.nesterov is True
  assert config.evals.probe.standardize is False
  assert config.evals.probe.schedule == "cosine"
  assert config.eval.max_test_per_domain == 500
  assert config.eval.feature_batch_size == 128
  overrides.apply_overrides(config, {"knn.k": 7})  # A mapping works too.
  assert config.evals.knn.k == 7
  # Every evaluator key is settable.
  for name, entry in config.evals.items():
    for field in entry.keys():
      if field != "type":
        assert f"{name}.{field}" in overrides.valid_keys(config)


@pytest.mark.parametrize("item,match", [
    ("knn.kk=3", r"Unknown eval override key 'knn.kk'. Did you mean "
                 r"'knn.k'\? Valid keys: .*knn.k, .*probe.steps.*knn_k"),
    ("nope=1", "Valid keys: at_end"),
    ("knn_k", "not key=value"),
    ("knn.k=abc", "expected an integer"),
    ("probe.lr=fast", "expected a number"),
    ("probe.nesterov=maybe", "expected true or false"),
    ("knn.k=0", "evals.knn: k=0 must be"),
    ("probe.schedule=linear", "schedule='linear'"),
    ("probe.label_fraction=1.5", "label_fraction=1.5 must be in"),
    ("knn.type=linear_probe", "type cannot be overridden"),
])
def test_overrides_reject_bad_items(item, match):
  with pytest.raises(ValueError, match=match):
    overrides.apply_overrides(config_lib.get_default_config(), [item])


def test_old_names_need_their_evaluator():
  config = config_lib.get_default_config()
  del config.evals["knn"]
  with pytest.raises(ValueError, match="Unknown eval override key 'knn_k'"):
    overrides.apply_overrides(config, ["knn_k=5"])


@pytest.mark.parametrize("args,match", [
    (["--workdir=/nonexistent/run"], "config.json not found"),
    (["--eval_override=knn.kk=1"], "Unknown eval override key 'knn.kk'"),
])
def test_evaluate_cli_errors_are_one_line(tmp_path, args, match):
  old = {"method": "byol", "eval": _OLD_EVAL}
  (tmp_path / "config.json").write_text(json.dumps(old))
  cmd = [sys.executable, "-m", "mdssl_jax.evaluate", f"--workdir={tmp_path}"]
  proc = subprocess.run(cmd + args, cwd=_REPO, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and match in last, proc.stderr[-3000:]
