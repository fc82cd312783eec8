"""The config schema: defaults, loading, derived quantities, validation.

Bad input fails at start-up, before any data loading or compilation.
"""

import math
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from mdssl_jax import config_lib
from mdssl_jax import main as main_lib
from mdssl_jax import methods
from mdssl_jax import presets
from mdssl_jax.evaluation import registry as eval_registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def demo_config(method="mdssl"):
  c = config_lib.get_default_config(method)
  presets.demo_data(c, per_domain_batch=8)
  c.total_steps = 10
  return c


def test_default_config_validates():
  config_lib.validate(demo_config())


def test_eval_suite_keys_and_named_evaluators():
  c = config_lib.get_default_config()
  assert set(c.eval) == {"every_steps", "at_end", "feature_batch_size",
                         "max_train_per_domain", "max_test_per_domain",
                         "train_split"}
  assert dict(c.evals.knn) == {"type": "knn", "k": 20, "temperature": 0.07,
                               "chunk_size": 0, "label_fraction": 1.0,
                               "subset_seed": 0}
  assert c.evals.probe.type == "linear_probe"
  assert (c.evals.probe.steps, c.evals.probe.batch_size) == (2000, 1024)


def test_method_args_come_from_the_schema():
  for name in methods.available():
    assert dict(config_lib.get_default_config(name).method_args) == (
        config_lib.METHOD_ARGS[name]), name
  with pytest.raises(config_lib.ConfigError, match="available: .*simclr"):
    config_lib.method_args("simclr2")


def test_load_config_by_path_with_argument():
  path = os.path.join(REPO, "configs", "byol.py")
  c = config_lib.load_config(path + ":demo,steps=7")
  assert c.method == "byol" and c.total_steps == 7
  assert config_lib.load_config(path).total_steps == -1
  with pytest.raises(config_lib.ConfigError, match="Unknown config argument"):
    config_lib.load_config(path + ":dmeo")
  with pytest.raises(config_lib.ConfigError, match="does not exist"):
    config_lib.load_config(os.path.join(REPO, "configs", "nope.py"))


def test_global_batch_is_domains_times_per_domain_batch():
  c = demo_config()
  assert config_lib.global_batch(c) == 3 * 8
  presets.demo_data(c, ("digits",), per_domain_batch=5)
  assert config_lib.global_batch(c) == 5


def test_run_shape_steps_win_over_epochs():
  c = demo_config()  # total_steps=10; warm-up: 10 epochs by default.
  c.total_epochs = 5.0
  c.optim.warmup_steps = 3
  shape = config_lib.run_shape(c, num_train_examples=1000)
  assert shape == config_lib.RunShape(
      global_batch=24, num_train_examples=1000, steps_per_epoch=1000 / 24,
      total_steps=10, warmup_steps=3)


def test_run_shape_epochs_round_up_and_warmup_is_capped():
  c = demo_config()
  c.total_steps, c.total_epochs = -1, 2.5
  c.optim.warmup_steps, c.optim.warmup_epochs = -1, 0.5
  shape = config_lib.run_shape(c, num_train_examples=1000)
  assert shape.total_steps == math.ceil(2.5 * 1000 / 24) == 105
  assert shape.warmup_steps == math.ceil(0.5 * 1000 / 24) == 21
  c.optim.warmup_epochs = 10.0  # 417 warm-up steps > 105 total: capped.
  assert config_lib.run_shape(c, 1000).warmup_steps == 105
  c.optim.warmup_steps = 500  # A step count is capped too.
  assert config_lib.run_shape(c, 1000).warmup_steps == 105


def test_run_shape_epoch_is_at_least_one_step():
  c = demo_config()
  c.total_steps, c.total_epochs = -1, 3.0
  shape = config_lib.run_shape(c, num_train_examples=10)  # < one batch.
  assert shape.steps_per_epoch == 1.0 and shape.total_steps == 3
  c.total_epochs = 0.0
  with pytest.raises(config_lib.ConfigError, match="resolves to 0"):
    config_lib.run_shape(c, num_train_examples=10)


def test_unknown_key_names_key_and_close_match():
  c = demo_config()
  with c.unlocked():
    c.optim.base_lrr = 1.0
  with pytest.raises(config_lib.ConfigError, match=r"optim.base_lrr.*base_lr"):
    config_lib.validate(c)


def test_unknown_key_inside_an_evaluator():
  c = demo_config()
  with c.evals.knn.unlocked():
    c.evals.knn.kk = 3
  with pytest.raises(config_lib.ConfigError,
                     match=r"'evals\.knn\.kk'\. Did you mean .*'k'"):
    config_lib.validate(c)


def test_old_eval_keys_are_rejected():
  c = demo_config()
  with c.eval.unlocked():
    c.eval.probe_steps = 100
  with pytest.raises(config_lib.ConfigError, match=r"'eval\.probe_steps'"):
    config_lib.validate(c)


def test_did_you_mean_names_the_full_key():
  c = demo_config()
  with c.unlocked():
    c.optim.base_lrr = 1.0
  with c.evals.knn.unlocked():
    c.evals.knn.kk = 3
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(c)
  assert "Did you mean 'optim.base_lr'?" in str(e.value)
  assert "Did you mean 'evals.knn.k'?" in str(e.value)


def test_unknown_evaluator_type_lists_the_types():
  c = demo_config()
  c.evals.probe.type = "linear_prob"
  c.evals.svm = ml_collections.ConfigDict({"type": "svm", "c": 1.0})
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(c)
  for name, etype in (("probe", "linear_prob"), ("svm", "svm")):
    assert (f"evals.{name}.type={etype!r}; use one of "
            f"{eval_registry.available()}") in str(e.value)


def test_evaluator_missing_keys_fail_with_config_error():
  c = demo_config()
  c.evals.knn200 = ml_collections.ConfigDict({"type": "knn", "k": 200})
  with pytest.raises(config_lib.ConfigError,
                     match=r"evals\.knn200 lacks \['chunk_size', "
                           r"'label_fraction', 'subset_seed', "
                           r"'temperature'\]"):
    config_lib.validate(c)


def test_evaluator_helper_fills_defaults_and_rejects_unknown_keys():
  entry = config_lib.evaluator("linear_probe", steps=30_000)
  assert entry.steps == 30_000 and entry.type == "linear_probe"
  assert entry.lr == eval_registry.default_config("linear_probe").lr
  with pytest.raises(config_lib.ConfigError, match="has no keys"):
    config_lib.evaluator("knn", kk=3)


def test_old_eval_key_names_its_new_place():
  c = demo_config()
  with c.eval.unlocked():
    c.eval.probe_steps = 10
  with pytest.raises(config_lib.ConfigError,
                     match=r"It moved to 'evals\.probe\.steps'"):
    config_lib.validate(c)


def test_zero_total_steps_is_rejected():
  c = demo_config()
  c.total_steps = 0
  with pytest.raises(config_lib.ConfigError, match="total_steps=0"):
    config_lib.validate(c)


def test_more_named_evaluators_and_their_checks():
  c = demo_config()
  c.evals.knn200 = eval_registry.default_config("knn")
  c.evals.knn200.k = 200
  config_lib.validate(c)
  c.evals.knn200.k = 0
  c.evals.probe.schedule = "linear"
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(c)
  assert "evals.knn200: k=0 must be ≥ 1" in str(e.value)
  assert "evals.probe: schedule='linear'" in str(e.value)


@pytest.mark.parametrize("key,value", [
    ("method_args.lambda1", float("nan")),
    ("optim.base_lr", float("inf")),
    ("evals.knn.temperature", -float("inf")),
    ("evals.probe.lr", float("nan")),
])
def test_non_finite_hyperparameters_name_the_key(key, value):
  c = demo_config()
  parent, leaf = key.rsplit(".", 1)
  node = c
  for part in parent.split("."):
    node = node[part]
  node[leaf] = value
  with pytest.raises(config_lib.ConfigError,
                     match=rf"{key}={value}: must be a finite number"):
    config_lib.validate(c)


def test_non_finite_tuple_entry_names_its_index():
  c = demo_config()
  c.data.mean = (0.5, float("nan"), 0.5)
  with pytest.raises(config_lib.ConfigError, match=r"data\.mean\.1=nan"):
    config_lib.validate(c)


def test_unknown_method_lists_available():
  c = demo_config()
  c.method = "simclr2"
  with pytest.raises(config_lib.ConfigError, match="available: .*mdssl"):
    config_lib.validate(c)


def test_unknown_tfds_dataset_and_demo_name():
  c = demo_config()
  c.data.domains = [{"name": "x", "source": "tfds", "tfds_name": "cifar1O"}]
  with pytest.raises(config_lib.ConfigError, match="unknown TFDS dataset"):
    config_lib.validate(c)
  c.data.domains = [{"name": "x", "source": "demo", "demo_name": "faces"}]
  with pytest.raises(config_lib.ConfigError, match="valid demo names"):
    config_lib.validate(c)


def test_missing_npz_directory(tmp_path):
  c = demo_config()
  c.data.domains = [{"name": "x", "source": "npz",
                     "path": str(tmp_path / "nowhere")}]
  with pytest.raises(config_lib.ConfigError, match="train.npz"):
    config_lib.validate(c)


def test_unreadable_npz_fails_at_load_with_file_name(tmp_path):
  from mdssl_jax.data import sources  # pylint: disable=g-import-not-at-top
  (tmp_path / "train.npz").write_bytes(b"not a zip file")
  np.savez(tmp_path / "test.npz", images=np.zeros((2, 8, 8, 3), np.uint8),
           labels=np.zeros(2, np.int64))
  c = demo_config()
  c.data.domains = [{"name": "x", "source": "npz", "path": str(tmp_path)}]
  config_lib.validate(c)  # The file exists; its content is read at load.
  with pytest.raises(ValueError, match=r"train.npz: unreadable or corrupt"):
    sources.load_domains(c.data)


@pytest.mark.parametrize("lam1,lam2", [(-0.9, 0.1), (1.5, 0.1), (1.0, -0.1)])
def test_lambda_out_of_range_warns_but_runs(lam1, lam2):
  c = demo_config()
  c.method_args.lambda1, c.method_args.lambda2 = lam1, lam2
  with pytest.warns(UserWarning, match="λ"):
    config_lib.validate(c)


def test_figure_sign_convention_negates_lambda1():
  args = ml_collections.ConfigDict({"lambda1": -0.9,
                                    "sign_convention": "figure"})
  assert methods.get_method("mdssl").equation_lambda1(args) == (
      pytest.approx(0.9))


def test_batch_not_divisible_by_devices():
  c = demo_config()
  c.data.per_domain_batch = 3  # 3 domains × 3 = 9 rows on 8 devices.
  with pytest.raises(config_lib.ConfigError, match="not divisible by the 8"):
    config_lib.validate(c)
  c.mesh_shape = 1
  config_lib.validate(c)


def test_bad_optimizer_and_views():
  c = demo_config()
  c.optim.name = "adam"
  c.views.large.count = 3
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(c)
  assert "optim.name" in str(e.value) and "views.large.count" in str(e.value)


def test_parse_arg():
  a = config_lib.parse_arg("demo,steps=20", demo=False, steps=100, name="x")
  assert a.demo is True and a.steps == 20 and a.name == "x"
  with pytest.raises(config_lib.ConfigError, match="Unknown config argument"):
    config_lib.parse_arg("stepz=3", steps=1)


def test_default_workdir():
  import datetime  # pylint: disable=g-import-not-at-top
  now = datetime.datetime(2026, 11, 22, 1, 2, 3)
  assert main_lib.default_workdir("configs/relicv2_r50.py", now) == (
      os.path.join("runs", "relicv2_r50", "20261122-010203"))
  assert main_lib.default_workdir("x/demo.py:tiny", now).startswith(
      os.path.join("runs", "demo_tiny"))


def test_cli_rejects_bad_override_before_compiling():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "mdssl_jax.main", "--config=configs/demo.py",
       "--workdir=/tmp/never_created_mdssl", "--config.method=nope"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "Unknown method 'nope'" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not os.path.exists("/tmp/never_created_mdssl")


def test_predictor_must_match_projector_width():
  c = demo_config("byol")
  config_lib.validate(c)
  c.predictor.out_dim = c.projector.out_dim * 2
  with pytest.raises(config_lib.ConfigError, match="predictor.out_dim"):
    config_lib.validate(c)


def test_cli_names_misspelt_override_keys_without_traceback(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
  workdir = tmp_path / "never_created"
  proc = subprocess.run(
      [sys.executable, "-m", "mdssl_jax.main", "--config=configs/demo.py",
       f"--workdir={workdir}", "--config.optim.bas_lr=2",
       "--config.evals.knn.kk=3", "--config.nosuch.key=1"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  err = proc.stderr
  assert "Traceback" not in err
  assert "Did you mean --config.optim.base_lr?" in err
  assert "Did you mean --config.evals.knn.k?" in err
  assert "Unknown config key 'nosuch.key'" in err
  assert not workdir.exists()


def test_cli_rejects_nan_hyperparameter_before_compiling(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "mdssl_jax.main", "--config=configs/demo.py",
       f"--workdir={tmp_path / 'wd'}", "--config.method_args.lambda1=nan"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "method_args.lambda1=nan: must be a finite number" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "wd" / "checkpoints").exists()


def test_native_startup_noise_is_dropped_and_other_lines_kept(capfd):
  from mdssl_jax import cli  # pylint: disable=g-import-not-at-top
  with cli._drop_native_startup_noise():  # pylint: disable=protected-access
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() "
                b"is called are written to STDERR\n")
    os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on.\n")
    os.write(2, b"E0000 something real went wrong\n")
  err = capfd.readouterr().err
  assert "something real went wrong" in err
  assert "oneDNN" not in err and "InitializeLog" not in err


def test_main_prints_only_project_lines(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "mdssl_jax.main", "--config=configs/demo.py:tiny",
       f"--workdir={tmp_path / 'wd'}", "--config.total_steps=2",
       "--config.eval.at_end=False", "--config.log_every=1"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout + proc.stderr
  assert "step 2/2" in out
  for noise in ("oneDNN", "InitializeLog", "Unable to initialize backend",
                "libtpu", "orbax", "etils"):
    assert noise not in out, noise
