"""Every file in configs/: light to load, and every variant validates.

Each config file lists its setups in a module-level `VARIANTS` tuple (the
config arguments, "" for the default); the tests here read it. Validation
loads no data and compiles nothing: TFDS variants validate without their
data, ../shared variants are pointed at stand-in .npz files.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mdssl_jax import config_lib
from mdssl_jax import presets

REPO = Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted((REPO / "configs").glob("*.py"))


def load_module(path: Path):
  """Imports a config file by path (configs/ is not a package)."""
  spec = importlib.util.spec_from_file_location(
      f"_test_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


VARIANTS = {path.stem: load_module(path).VARIANTS for path in CONFIG_FILES}
CASES = [(name, arg) for name, args in VARIANTS.items() for arg in args]

# Loads every variant of every file, then reports the heavy modules present.
_LIGHT_SCRIPT = """
import json, sys
from mdssl_jax import config_lib
count = 0
for path, args in json.loads(sys.argv[1]).items():
  for arg in args:
    config_lib.load_config(f"{path}:{arg}" if arg else path)
    count += 1
heavy = [m for m in ("tensorflow", "jax", "flax") if m in sys.modules]
print(json.dumps({"count": count, "heavy": heavy}))
"""


def test_every_file_lists_its_variants():
  assert len(CONFIG_FILES) >= 10
  for name, args in VARIANTS.items():
    assert isinstance(args, tuple) and args[0] == "", name
    assert len(set(args)) == len(args), name


def test_loading_every_variant_imports_no_tensorflow_jax_or_flax():
  specs = {str(REPO / "configs" / f"{name}.py"): list(args)
           for name, args in VARIANTS.items()}
  proc = subprocess.run(
      [sys.executable, "-c", _LIGHT_SCRIPT, json.dumps(specs)], cwd=REPO,
      capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  assert report == {"count": len(CASES), "heavy": []}


def test_no_config_file_imports_another():
  for path in CONFIG_FILES:
    text = path.read_text()
    assert "load_sibling" not in text and "importlib" not in text, path.name


@pytest.fixture(scope="module")
def fake_shared_dir(tmp_path_factory) -> str:
  """A stand-in for ../shared/data: tiny train/test .npz per domain."""
  root = tmp_path_factory.mktemp("shared")
  for name in set(presets.SHARED_DOMAINS) | {"tinyimagenet"}:
    (root / name).mkdir()
    for split in ("train", "test"):
      np.savez(root / name / f"{split}.npz",
               images=np.zeros((4, 8, 8, 3), np.uint8),
               labels=np.arange(4))
  return str(root)


@pytest.mark.parametrize("name,arg", CASES)
def test_variant_validates(name, arg, fake_shared_dir, monkeypatch):
  monkeypatch.setattr(presets, "DEFAULT_SHARED_DIR", fake_shared_dir)
  monkeypatch.delenv("IMAGENET100_DIR", raising=False)
  path = REPO / "configs" / f"{name}.py"
  config = config_lib.load_config(f"{path}:{arg}" if arg else str(path))
  config_lib.validate(config)


def test_relicv2_r50_setups_take_only_their_arguments():
  path = str(REPO / "configs" / "relicv2_r50.py")

  def load(arg):
    return config_lib.load_config(f"{path}:{arg}")

  assert load("demo").total_steps == 300
  assert load("demo,tiny").total_steps == 60
  assert load("demo,tiny,steps=40").total_steps == 40
  assert load("shared").total_steps == 1500
  assert load("shared,steps=9,width=0.25").model.width_multiplier == 0.25
  for arg, setup, stray in (("demo,r50x2", "demo", "r50x2"),
                            ("demo,shared", "demo", "shared"),
                            ("shared,tiny", "shared", "tiny"),
                            ("r50x2,domains=mnist", "imagenet", "domains")):
    with pytest.raises(config_lib.ConfigError,
                       match=rf"the {setup} setup does not take \['{stray}'\]"):
      load(arg)


# Brightness semantics per reference (issue #11 item 4): deepmind BYOL's
# table (RELICv2 App. B.1, MSBReg's supplement) adds a delta; torchvision's
# ColorJitter (solo-learn, MDSSL's PyTorch code) multiplies.
_ADDITIVE = {"relicv2_r50": None, "msbreg": None, "byol": ("stl10",)}


@pytest.mark.parametrize("name,arg", CASES)
def test_brightness_mode_follows_the_reference(name, arg):
  path = REPO / "configs" / f"{name}.py"
  config = config_lib.load_config(f"{path}:{arg}" if arg else str(path))
  additive = name in _ADDITIVE and (
      _ADDITIVE[name] is None or any(a in arg.split(",")
                                     for a in _ADDITIVE[name]))
  expected = "additive" if additive else "multiplicative"
  for col in ("odd", "even"):
    assert config.augment[col].brightness_mode == expected, (name, arg, col)
