"""Eval suites on a trained workdir: CLI, results log, feature cache, unseen."""

import csv
import json
import os
import pathlib
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from mdssl_jax import config_lib
from mdssl_jax import evaluate
from mdssl_jax import presets
from mdssl_jax import train
from mdssl_jax.evaluation import feature_cache
from mdssl_jax.evaluation import features
from mdssl_jax.evaluation import overrides
from mdssl_jax.evaluation import report
from mdssl_jax.evaluation import results_log
from mdssl_jax.evaluation import suite_config

_REPO = pathlib.Path(__file__).resolve().parents[1]
# Suite overrides that keep the probe and the arrays small.
_OVERRIDES = ("--config.evals.probe.steps=30",
              "--config.eval.max_test_per_domain=100")


def _suite(spec="configs/eval/default.py"):
  """A suite file as the CLI loads it, with `_OVERRIDES` applied."""
  suite = config_lib.load_config(str(_REPO / spec))
  suite.evals.probe.steps = 30
  suite.eval.max_test_per_domain = 100
  return suite


def _cli(*args, timeout=300):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "mdssl_jax.evaluate", *args],
                        cwd=_REPO, env=env, capture_output=True, text=True,
                        timeout=timeout)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A 3-step SimCLR run with checkpoints at steps 2 and 3."""
  c = config_lib.get_default_config("simclr")
  presets.tiny_test_config(c, steps=3)
  c.checkpoint.every_steps = 2
  path = str(tmp_path_factory.mktemp("suite_run"))
  train.train_and_evaluate(c, path)
  return path


@pytest.fixture(scope="module")
def cli_run(workdir):
  """The default suite on every checkpoint, by the CLI."""
  proc = _cli(f"--workdir={workdir}", "--config=configs/eval/default.py",
              "--step=all", *_OVERRIDES)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc, results_log.read(workdir)


def _metrics(rows, step):
  return {(r["evaluator"], r["domain"]): (r["top1"], r["top5"])
          for r in rows if r["step"] == step}


def test_cli_default_suite_logs_one_row_per_evaluator_domain_step(cli_run):
  proc, rows = cli_run
  assert len(rows) == 3 * 2 * 2  # evaluators × domains × steps
  assert {r["step"] for r in rows} == {2, 3}
  assert {r["evaluator"] for r in rows} == {"knn20", "knn200", "probe"}
  assert {r["domain"] for r in rows} == {"digits", "textures"}
  assert {(r["suite"], r["suite_hash"]) for r in rows} == {
      ("default", rows[0]["suite_hash"])}
  knn = [r for r in rows if r["evaluator"] == "knn200"]
  assert all(r["evaluator_config"]["k"] == 200 for r in knn)
  probe = [r for r in rows if r["evaluator"] == "probe"]
  assert all(r["evaluator_config"]["steps"] == 30 for r in probe)
  for r in rows:
    assert not r["unseen"] and r["source"] == "demo"
    assert r["n_test"] == 100 and r["image_size"] == 16
    assert 0.0 <= r["top1"] <= 100.0
  assert proc.stdout.count("mean ") == 2  # One table per step.
  assert "step 2, suite default" in proc.stdout


def test_csv_is_regenerated_with_every_row(cli_run, workdir):
  _, rows = cli_run
  with open(os.path.join(workdir, "eval", "results.csv")) as f:
    table = list(csv.DictReader(f))
  assert len(table) == len(rows)
  assert {"step", "suite_hash", "evaluator", "domain", "top1", "final_loss",
          "evaluator_config"} <= set(table[0])
  assert [float(t["top1"]) for t in table] == pytest.approx(
      [r["top1"] for r in rows])
  assert json.loads(table[0]["evaluator_config"]) == rows[0][
      "evaluator_config"]


def test_second_evaluation_hits_the_cache_with_identical_numbers(
    cli_run, workdir, monkeypatch):
  _, before = cli_run
  calls = []
  real = features.FeatureExtractor.__call__
  monkeypatch.setattr(features.FeatureExtractor, "__call__",
                      lambda self, *a: calls.append(1) or real(self, *a))
  logged = len(results_log.read(workdir))
  (results,) = evaluate.evaluate_suite(workdir, _suite(), steps=[3])
  assert not calls  # Every domain and split came from RUN/eval/features.
  rows = results_log.read(workdir)
  assert len(rows) == logged + 6
  assert _metrics(rows[-6:], 3) == _metrics(before, 3)
  with open(os.path.join(workdir, "eval", "results.csv")) as f:
    assert len(list(csv.DictReader(f))) == len(rows)
  assert results["suite"]["hash"] == before[0]["suite_hash"]

  # Another transform (here the test subsample) misses, and is cached.
  changed = _suite()
  changed.eval.max_test_per_domain = 80
  (results,) = evaluate.evaluate_suite(workdir, changed, steps=[3])
  assert len(calls) == 2 * 2  # domains × splits
  assert results["domains"]["digits"]["n_test"] == 80
  assert results["suite"]["hash"] != before[0]["suite_hash"]


def test_feature_cache_keys_step_transform_and_split(tmp_path):
  config = config_lib.get_default_config()
  entry = config.data.domains[0]
  desc = feature_cache.describe_domain(config, entry, max_train=10,
                                       max_test=5)
  cache = feature_cache.FeatureCache(str(tmp_path), step=7)
  feats = np.arange(6, dtype=np.float32).reshape(3, 2)
  got = cache.get(desc, "train", lambda: feats, num_rows=3)
  again = cache.get(desc, "train", lambda: feats + 1, num_rows=3)
  np.testing.assert_array_equal(again, got)
  assert (cache.hits, cache.misses) == (1, 1)
  config.data.std = (0.5, 0.5, 0.5)
  other = feature_cache.describe_domain(config, entry, max_train=10,
                                        max_test=5)
  keys = {cache.key(desc, "train"), cache.key(desc, "test"),
          cache.key(other, "train"),
          feature_cache.FeatureCache(str(tmp_path), step=8).key(desc,
                                                                "train")}
  assert len(keys) == 4
  # A file with the wrong row count is recomputed, not trusted.
  assert cache.get(desc, "train", lambda: feats[:2], num_rows=2).shape == (
      2, 2)
  assert cache.misses == 2


def _stripes_npz(root, size=12):
  """3 classes of vertical stripes (columns 0-3, 4-7, 8-11), grey."""
  rng = np.random.default_rng(0)
  for split, n in (("train", 60), ("test", 30)):
    labels = np.arange(n) % 3
    images = rng.integers(0, 30, (n, size, size, 1)).astype(np.uint8)
    for i, label in enumerate(labels):
      images[i, :, 4 * label:4 * label + 4] = 255
    np.savez(root / f"{split}.npz", images=images, labels=labels)
  return root


def test_unseen_npz_domain_gets_its_own_mean(workdir, tmp_path):
  stripes = tmp_path / "stripes"
  stripes.mkdir()
  _stripes_npz(stripes)
  suite = _suite(f"configs/eval/unseen.py:npz={stripes}")
  (results,) = evaluate.evaluate_suite(workdir, suite, steps=[3])
  row = results["domains"]["stripes"]
  assert row["unseen"] and row["num_classes"] == 3 and row["n_train"] == 60
  # Trivially separable: the frozen (3-step) encoder's kNN gets them right.
  assert row["knn20_top1"] >= 90.0, row
  assert results["mean_unseen"]["knn20_top1"] == row["knn20_top1"]
  seen = [results["domains"][n] for n in ("digits", "textures")]
  assert not any(r["unseen"] for r in seen)
  assert results["mean"]["probe_top1"] == pytest.approx(
      np.mean([r["probe_top1"] for r in seen]))
  lines = report.format_table(results).splitlines()
  assert any(l.startswith("stripes* ") for l in lines)
  assert [l.split("  ")[0] for l in lines[-3:-1]] == ["mean (seen)",
                                                     "mean (unseen)"]
  assert lines[-1].startswith("* unseen")
  rows = [r for r in results_log.read(workdir) if r["domain"] == "stripes"]
  assert len(rows) == 3 and all(r["unseen"] for r in rows)
  assert rows[0]["source"] == "npz" and rows[0]["data"]["domain"][
      "path"] == str(stripes)


def test_unseen_shared_mnist_without_training_domains(workdir, shared_data):
  suite = _suite(
      f"configs/eval/unseen.py:npz={shared_data / 'mnist'},seen=false")
  (results,) = evaluate.evaluate_suite(workdir, suite, steps=[3])
  assert list(results["domains"]) == ["mnist"]
  row = results["domains"]["mnist"]
  # 28x28x1 digits, brought to the run's 16 px and repeated to RGB.
  assert row["unseen"] and row["num_classes"] == 10
  assert row["n_train"] == 300 and row["n_test"] == 100  # The run's caps.
  # Measured ~42 % (chance 10 %) for this 3-step encoder.
  assert row["knn20_top1"] > 25.0, row
  assert results["mean"] == {}
  table = report.format_table(results)
  assert "mean (seen)    (no training domain evaluated)" in table


def test_workdir_config_path_writes_json_and_logs_rows(workdir):
  results = evaluate.evaluate_workdir(workdir, overrides=["probe.steps=20"])
  assert results["train"]["steps"] == 3
  for name in ("results.json", "results_step3.json"):
    with open(os.path.join(workdir, name)) as f:
      assert json.load(f)["mean"] == pytest.approx(results["mean"])
  rows = results_log.read(workdir)[-4:]  # knn, probe × 2 domains
  config = evaluate.load_config(workdir)
  config.evals.probe.steps = 20
  assert {(r["suite"], r["suite_hash"]) for r in rows} == {
      (evaluate.WORKDIR_SUITE, evaluate.workdir_suite_hash(config))}
  assert {r["evaluator"] for r in rows} == {"knn", "probe"}


def test_cli_rejects_misspelt_key_and_missing_npz_before_loading(workdir):
  proc = _cli(f"--workdir={workdir}", "--config=configs/eval/default.py",
              "--config.evals.knn20.kk=3", timeout=60)
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  assert "Did you mean --config.evals.knn20.k?" in proc.stderr
  proc = _cli(f"--workdir={workdir}",
              "--config=configs/eval/unseen.py:npz=/nonexistent/mnist",
              timeout=60)
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  assert "/nonexistent/mnist/train.npz does not exist" in proc.stderr
  proc = _cli(f"--workdir={workdir}", "--step=9", timeout=60)
  assert "no checkpoint at step(s) [9]; it has [2, 3]" in proc.stderr


def test_parse_steps():
  assert evaluate.parse_steps([]) is None
  assert evaluate.parse_steps(["all"]) == "all"
  assert evaluate.parse_steps(["30", "10,20"]) == [10, 20, 30]
  with pytest.raises(ValueError, match="'all' already means"):
    evaluate.parse_steps(["all", "3"])
  with pytest.raises(ValueError, match="expected a checkpoint step"):
    evaluate.parse_steps(["latest"])


def test_suite_config_validation():
  assert not suite_config.validate(_suite())
  suite = suite_config.base_suite("x")
  suite.training_domains = False
  suite.eval.max_train_per_domain = 0
  suite.evals.bad = {"type": "nope"}
  errors = "\n".join(suite_config.validate(suite))
  assert "evaluates nothing" in errors
  assert "eval.max_train_per_domain=0" in errors
  assert "evals.bad.type='nope'" in errors
  a, b = _suite(), _suite()
  assert suite_config.suite_hash(a) == suite_config.suite_hash(b)
  b.evals.knn20.k = 21
  assert suite_config.suite_hash(a) != suite_config.suite_hash(b)


def test_apply_suite_merges_settings_into_the_workdir_config():
  config = config_lib.get_default_config()
  suite = suite_config.base_suite("s")
  merged, effective = evaluate.apply_suite(config, suite, ["knn.k=7"])
  assert list(merged.evals) == ["knn", "probe"]  # Empty evals: the run's.
  assert merged.evals.knn.k == 7 and config.evals.knn.k == 20
  assert merged.eval.to_dict() == config.eval.to_dict()
  assert effective.evals.knn.k == 7
  assert effective.eval.max_test_per_domain == 5000
  suite = _suite()
  merged, effective = evaluate.apply_suite(config, suite)
  assert list(merged.evals) == ["knn20", "knn200", "probe"]
  assert merged.eval.max_test_per_domain == 100
  assert merged.eval.max_train_per_domain == 10_000  # None: the run's.
  suite.unseen_domains = [dict(name="digits", source="demo",
                               demo_name="photos")]
  with pytest.raises(ValueError, match="name of a training domain"):
    evaluate.apply_suite(config, suite)


def test_upgrade_fills_later_schema_keys_and_keeps_monitors_off():
  saved = config_lib.get_default_config("byol").to_dict()
  del saved["monitors"]  # Saved before the online monitors existed.
  del saved["evals"]["knn"]["temperature"]
  new = overrides.upgrade_config(ml_collections.ConfigDict(saved))
  assert new.monitors and not any(m.enabled for m in new.monitors.values())
  assert new.evals.knn.temperature == 0.07
  current = config_lib.get_default_config("byol")
  assert overrides.upgrade_config(current) is current
