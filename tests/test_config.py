"""Start-up validation: bad input fails before any data loading or compile."""

import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from mdssl_jax import config_lib
from mdssl_jax import main as main_lib
from mdssl_jax import presets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def demo_config(method="mdssl"):
  c = config_lib.get_default_config(method)
  presets.demo_data(c, per_domain_batch=8)
  c.total_steps = 10
  return c


def test_default_config_validates():
  config_lib.validate(demo_config())


def test_unknown_key_names_key_and_close_match():
  c = demo_config()
  with c.unlocked():
    c.optim.base_lrr = 1.0
  with pytest.raises(config_lib.ConfigError, match=r"optim.base_lrr.*base_lr"):
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
  from mdssl_jax.methods.simclr import MDSSL  # pylint: disable=g-import-not-at-top
  args = ml_collections.ConfigDict({"lambda1": -0.9,
                                    "sign_convention": "figure"})
  assert MDSSL.equation_lambda1(args) == pytest.approx(0.9)


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
  assert main_lib.default_workdir("configs/relicv2_r50.py", now) == os.path.join(
      "runs", "relicv2_r50", "20261122-010203")
  assert main_lib.default_workdir("x/demo.py:tiny", now).startswith(
      os.path.join("runs", "demo_tiny"))


@pytest.mark.parametrize("path,args", [
    ("configs/demo.py", [None, "simclr", "tiny"]),
    ("configs/mdssl_cifar_mix.py", [None, "runlocal"]),
    ("configs/simclr_cifar_mix.py", [None]),
])
def test_config_files_validate(path, args):
  module = config_lib.load_sibling(os.path.join(REPO, path),
                                   os.path.splitext(os.path.basename(path))[0])
  for arg in args:
    config_lib.validate(module.get_config(arg))


def test_shared_mix_config_validates(shared_data):
  module = config_lib.load_sibling(os.path.join(REPO, "configs/x.py"),
                                   "shared_mix")
  config_lib.validate(module.get_config(f"shared_dir={shared_data}"))
  config_lib.validate(module.get_config("simclr"))


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
