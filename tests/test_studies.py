"""Budgets, dataset fractions and mixes, init baselines and sweeps."""

import csv
import json
import math
import os
import textwrap

import jax
import numpy as np
import pytest

from mdssl_jax import config_lib
from mdssl_jax import presets
from mdssl_jax import resources
from mdssl_jax import sweep as sweep_lib
from mdssl_jax import train
from mdssl_jax.data import fractions
from mdssl_jax.data import pipeline
from mdssl_jax.data import sources


# ---- Budgets -----------------------------------------------------------------


def test_budget_sets_steps_and_records_c_e_d():
  c = config_lib.get_default_config("simclr")
  presets.demo_data(c, ("digits", "textures"), per_domain_batch=24)
  c.total_steps = -1
  c.budget.images_seen = 10_000
  config_lib.validate(c, check_devices=False)
  shape = config_lib.run_shape(c, 3_000)
  assert shape.global_batch == 48
  assert shape.total_steps == math.ceil(10_000 / 48) == 209
  assert shape.images_seen == 209 * 48
  budget = shape.budget()
  np.testing.assert_allclose(budget["epochs"], 209 * 48 / 3_000)
  np.testing.assert_allclose(budget["diversity"], 3_000 / (209 * 48))
  assert budget["unique_images"] == 3_000
  # Step-driven runs record the same three quantities.
  c.budget.images_seen = -1
  c.total_steps = 100
  assert config_lib.run_shape(c, 3_000).budget()["images_seen"] == 4_800


@pytest.mark.parametrize("steps, images, match", [
    (50, 1000, "both set the run length"),
    (-1, 0, "budget.images_seen=0"),
])
def test_budget_errors(steps, images, match):
  c = config_lib.get_default_config("simclr")
  c.total_steps = steps
  c.budget.images_seen = images
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(c, check_devices=False)


# ---- Fractions and mixes -----------------------------------------------------


def test_fraction_indices_are_stable_nested_and_stored(tmp_path):
  n = 1000
  small = fractions.fraction_indices("cifar", n, 0.1, seed=0)
  half = fractions.fraction_indices("cifar", n, 0.5, seed=0)
  assert len(small) == 100 and len(half) == 500
  assert set(small) <= set(half)
  np.testing.assert_array_equal(
      small, fractions.fraction_indices("cifar", n, 0.1, seed=0))
  rest = fractions.fraction_indices("cifar", n, (0.5, 1.0), seed=0)
  assert not set(rest) & set(half) and len(rest) + len(half) == n
  # Another dataset name or data seed: another permutation.
  assert not np.array_equal(
      small, fractions.fraction_indices("svhn", n, 0.1, seed=0))
  # Stored once, then read back (even if the generator changed).
  stored = fractions.fraction_indices("cifar", n, 0.1, 0, str(tmp_path))
  np.testing.assert_array_equal(stored, small)
  perm = np.load(tmp_path / "cifar-n1000.npy")
  np.save(tmp_path / "cifar-n1000.npy", perm[::-1])
  np.testing.assert_array_equal(
      fractions.fraction_indices("cifar", n, 0.1, 0, str(tmp_path)),
      np.sort(perm[::-1][:100]))
  np.save(tmp_path / "cifar-n1000.npy", np.zeros(n, np.int64))
  with pytest.raises(ValueError, match="not a permutation"):
    fractions.fraction_indices("cifar", n, 0.1, 0, str(tmp_path))


@pytest.mark.parametrize("fraction", [0.0, 1.5, (0.6, 0.4), "half"])
def test_bad_fraction_is_named(fraction):
  c = config_lib.get_default_config("simclr")
  c.data.domains = [dict(name="digits", source="demo", demo_name="digits",
                         fraction=fraction)]
  with pytest.raises(config_lib.ConfigError, match="fraction="):
    config_lib.validate(c, check_devices=False)


def test_domain_fraction_and_mix_composition(tmp_path):
  c = config_lib.get_default_config("simclr")
  presets.demo_data(c, ("digits",), image_size=16)
  full = sources.load_domains(c.data)[0]
  b = dict(name="digits", source="demo", demo_name="digits", fraction=0.5)
  a_in = dict(name="digits_rest", source="demo", demo_name="digits",
              fraction=(0.5, 1.0))
  a_out = dict(name="tex", source="demo", demo_name="textures",
               max_train=200)
  c.data.domains = [b, dict(name="b_in", source="mix", parts=[b, a_in]),
                    dict(name="b_out", source="mix", parts=[b, a_out])]
  config_lib.validate(c, check_devices=False)
  index_dir = str(tmp_path / "index")
  half, mix_in, mix_out = sources.load_domains(c.data, index_dir)
  assert half.num_train == round(full.num_train / 2)
  # B ∪ A: B first with its labels, A unlabelled (-1); B's test split.
  assert mix_in.num_train == full.num_train
  np.testing.assert_array_equal(mix_in.train_images[:half.num_train],
                                half.train_images)
  np.testing.assert_array_equal(mix_in.train_labels[:half.num_train],
                                half.train_labels)
  assert (mix_in.train_labels[half.num_train:] == -1).all()
  assert mix_out.num_train == half.num_train + 200
  assert mix_out.num_classes == full.num_classes
  np.testing.assert_array_equal(mix_out.test_labels, half.test_labels)
  # The in-distribution A holds exactly the other half of the images.
  rows = lambda x: {r.tobytes() for r in x}
  assert rows(mix_in.train_images) == rows(full.train_images)
  # A fraction limits pretraining, not evaluation: probes and the kNN bank
  # train on B's whole dataset, labelled, in B's label space ...
  for dom in (half, mix_out):
    (arrays,) = pipeline.make_eval_arrays(c, [dom])
    assert len(arrays["train_labels"]) == full.num_train
    assert (arrays["train_labels"] >= 0).all()
  # ... unless eval.train_split="pretraining": only B's pretraining rows.
  c.eval.train_split = "pretraining"
  for dom in (half, mix_out):
    (arrays,) = pipeline.make_eval_arrays(c, [dom])
    assert len(arrays["train_labels"]) == half.num_train
    np.testing.assert_array_equal(np.sort(arrays["train_labels"]),
                                  np.sort(half.train_labels))
  c.eval.train_split = "whole"
  with pytest.raises(config_lib.ConfigError, match="eval.train_split"):
    config_lib.validate(c, check_devices=False)
  # One index for the dataset, shared by B and its complement A.
  assert sorted(os.listdir(index_dir)) == [f"digits-n{full.num_train}.npy"]


def test_mix_rejects_bad_parts():
  c = config_lib.get_default_config("simclr")
  one = dict(name="d", source="demo", demo_name="digits")
  c.data.domains = [dict(name="m", source="mix", parts=[one])]
  with pytest.raises(config_lib.ConfigError, match="two or more"):
    config_lib.validate(c, check_devices=False)
  c.data.domains = [dict(name="m", source="mix", parts=[one, one])]
  with pytest.raises(config_lib.ConfigError, match="distinct"):
    config_lib.validate(c, check_devices=False)


# ---- Sweeps ------------------------------------------------------------------

_TRAIN_CONFIG = '''
from mdssl_jax import config_lib, presets

def get_config(arg=None):
  c = config_lib.get_default_config("simclr")
  presets.tiny_test_config(c, steps=4)
  c.eval.at_end = True
  c.evals.probe.steps = 50
  c.monitors.online_knn.bank_size = 64
  return c
'''

_SWEEP = '''
import ml_collections

def get_config(arg=None):
  train = {config!r}
  c = ml_collections.ConfigDict()
  c.name = "tiny"
  c.cells = [
      dict(name="a_s0", config=train, overrides={{"seed": 0}},
           tags={{"method": "simclr", "seed": 0}}),
      dict(name="a_s1", config=train, overrides={{"seed": 1}},
           tags={{"method": "simclr", "seed": 1}}),
      dict(name="broken", config=train,
           overrides={{"data.domains": [dict(name="bad", source="npz",
                                             path={broken!r})]}},
           tags={{"method": "broken", "seed": 0}}),
      dict(name="init", config=train, init=True,
           tags={{"method": "init", "seed": 0}}),
  ]
  c.eval_suite = ""
  c.metrics = ("knn", "probe")
  c.plots = [dict(x="diversity", y="knn", series="method"),
             dict(kind="bars", y="knn")]
  return c
'''


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  root = tmp_path_factory.mktemp("sweep")
  train_path = root / "tiny_train.py"
  train_path.write_text(_TRAIN_CONFIG)
  sweep_path = root / "tiny_sweep.py"
  # Valid at start-up (the directory exists), unreadable when loaded.
  broken = root / "broken_npz"
  broken.mkdir()
  for split in ("train", "test"):
    (broken / f"{split}.npz").write_bytes(b"not an npz file")
  sweep_path.write_text(textwrap.dedent(_SWEEP.format(
      config=str(train_path), broken=str(broken))))
  workdir = str(root / "run")
  # An interrupted cell: 2 of its 4 steps done before the sweep starts.
  config = config_lib.load_config(str(train_path))
  config.seed = 1
  train.train_and_evaluate(config, os.path.join(workdir, "cells", "a_s1"),
                           max_steps_this_run=2)
  with pytest.MonkeyPatch.context() as env:
    # The cell processes share this run's compilation cache.
    env.setenv("JAX_COMPILATION_CACHE_DIR",
               jax.config.jax_compilation_cache_dir)
    env.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    env.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    first = sweep_lib.run_sweep(str(sweep_path), workdir)
    logs = {n: os.path.getsize(os.path.join(workdir, "logs", f"{n}.log"))
            for n in first}
    second = sweep_lib.run_sweep(str(sweep_path), workdir)
  return str(sweep_path), workdir, first, second, logs


def test_sweep_runs_resumes_and_records_failures(swept):
  _, workdir, first, second, logs = swept
  assert {n: s["status"] for n, s in first.items()} == {
      "a_s0": "done", "a_s1": "done", "broken": "failed", "init": "done"}
  assert "train.npz" in first["broken"]["error"]
  # The rerun skips finished cells and retries only the failed one.
  assert set(second) == {"broken"}
  for name in ("a_s0", "a_s1", "init"):
    assert os.path.getsize(os.path.join(workdir, "logs",
                                        f"{name}.log")) == logs[name]
  # The interrupted cell resumed from its step-2 checkpoint.
  runs = resources.read_runs(os.path.join(workdir, "cells", "a_s1"))
  assert [(r["start_step"], r["end_step"]) for r in runs] == [(0, 2), (2, 4)]


def test_sweep_reports(swept):
  _, workdir, _, _, _ = swept
  with open(os.path.join(workdir, "sweep.csv")) as f:
    rows = {r["cell"]: r for r in csv.DictReader(f)}
  assert rows["broken"]["status"] == "failed"
  assert rows["init"]["steps"] == "0"
  for name in ("a_s0", "a_s1"):
    r = rows[name]
    assert r["steps"] == "4" and float(r["images_seen"]) == 64
    assert float(r["knn/mean"]) > 0 and float(r["wall_clock_seconds"]) > 0
    assert float(r["checkpoint_mb"]) > 0 and r["devices"] == "8"
    assert f"{float(r['knn/mean']):.10g}" == r["knn/mean"]
  mean = np.mean([float(rows[n]["knn/mean"]) for n in ("a_s0", "a_s1")])
  std = np.std([float(rows[n]["knn/mean"]) for n in ("a_s0", "a_s1")],
               ddof=1)
  table = open(os.path.join(workdir, "sweep.md")).read()
  assert f"{mean:.2f} ± {std:.2f}" in table
  assert "| simclr | 2 |" in table and "Failed cells" in table
  plots = sorted(os.listdir(os.path.join(workdir, "plots")))
  assert plots == ["knn_per_domain.png", "knn_vs_diversity_by_method.png"]


def test_sweep_dry_run_and_bad_cells(swept, tmp_path, capsys):
  spec, _, _, _, _ = swept
  rows = sweep_lib.dry_run(spec, images_per_sec=32.0)
  assert [r["steps"] for r in rows] == [4, 4, 4, 0]
  assert rows[0]["estimated_seconds"] == pytest.approx(64 / 32.0)
  assert "total ≈" in capsys.readouterr().out
  bad = tmp_path / "bad.py"
  bad.write_text(_SWEEP.format(config="x.py", broken="y").replace(
      '"a_s1"', '"a_s0"'))
  with pytest.raises(sweep_lib.SweepError, match="Duplicate cell names"):
    sweep_lib.load_sweep(str(bad))
  cell = sweep_lib.Cell("c", spec.replace("tiny_sweep", "tiny_train"),
                        {"optim.nope": 1}, {})
  with pytest.raises(sweep_lib.SweepError, match="optim.nope"):
    sweep_lib.cell_config(cell)


def test_init_only_evaluates_the_untrained_encoder(swept):
  _, workdir, _, _, _ = swept
  cell = os.path.join(workdir, "cells", "init")
  with open(os.path.join(cell, "results.json")) as f:
    results = json.load(f)
  assert results["train"]["steps"] == 0 and results["train"]["initialisation"]
  assert not os.path.exists(os.path.join(cell, "checkpoints", "4"))


@pytest.mark.parametrize("name", ["table1_shared", "diversity_shared"])
def test_study_sweeps_are_valid(name, shared_data):
  spec = f"configs/sweeps/{name}.py:shared_dir={shared_data}"
  _, cells = sweep_lib.load_sweep(spec)
  estimates = [sweep_lib.estimate(c) for c in cells]  # Validates each.
  trained = [e for e, c in zip(estimates, cells) if not c.init]
  # Every trained cell of a study sees the same budget C.
  assert len({e["images_seen"] for e in trained}) == 1
  assert sum(c.init for c in cells) == 1
