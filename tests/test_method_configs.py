"""The zoo configs: per-method recipes, variants, ImageNet-100 handling.

No data are loaded and nothing is compiled here: TFDS variants validate
without their data, ../shared and ImageNet-100 variants are pointed at
directories of stand-in .npz files. tests/test_config_files.py validates
every `VARIANTS` entry of every config file; this file checks what the zoo
configs hold.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from mdssl_jax import config_lib
from mdssl_jax import methods
from mdssl_jax import presets
from mdssl_jax.data import sources

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# The zoo: methods with a configs/<method>.py of that method, each offering
# the reference, :in100, :demo and :shared setups.
ZOO = [m for m in methods.available() if (CONFIG_DIR / f"{m}.py").exists()]


def get(name: str, arg: str | None = None):
  """get_config(arg) of configs/<name>.py."""
  path = str(CONFIG_DIR / f"{name}.py")
  return config_lib.load_config(f"{path}:{arg}" if arg else path)


def _reference_arg(name: str, dirs: dict[str, str]) -> str | None:
  # MSBReg's default is ImageNet-100, the paper's setting.
  return f"in100_dir={dirs['in100']}" if name == "msbreg" else None


def _write_npz_dir(path: Path, num_classes: int = 10) -> Path:
  path.mkdir(parents=True, exist_ok=True)
  for split in ("train", "test"):
    np.savez(path / f"{split}.npz",
             images=np.zeros((num_classes, 8, 8, 3), np.uint8),
             labels=np.arange(num_classes))
  return path


@pytest.fixture(scope="module")
def fake_dirs(tmp_path_factory) -> dict[str, str]:
  """Stand-ins for ../shared/data and an ImageNet-100 directory."""
  root = tmp_path_factory.mktemp("data")
  for name in presets.SHARED_DOMAINS:
    _write_npz_dir(root / "shared" / name)
  _write_npz_dir(root / "in100", num_classes=100)
  return {"shared": str(root / "shared"), "in100": str(root / "in100")}


def variants_of(name: str) -> tuple[str, ...]:
  """The `VARIANTS` of configs/<name>.py."""
  path = CONFIG_DIR / f"{name}.py"
  spec = importlib.util.spec_from_file_location(f"_zoo_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.VARIANTS


def test_every_method_has_a_config():
  assert len(ZOO) >= 8 and "mdssl" not in ZOO  # MDSSL: demo.py, *_mix.py.
  used = {get(path.stem, arg).method
          for path in CONFIG_DIR.glob("*.py")
          for arg in variants_of(path.stem)}
  assert used == set(methods.available())


@pytest.mark.parametrize("name", ZOO)
def test_zoo_setups(name, fake_dirs, monkeypatch):
  monkeypatch.delenv("IMAGENET100_DIR", raising=False)
  for arg in variants_of(name):
    assert get(name, arg).method == name, (name, arg)
  demo = get(name, "demo")
  assert all(d["source"] == "demo" for d in demo.data.domains)
  assert demo.total_steps == 300 and demo.model.width_multiplier == 0.25
  assert get(name, "demo,steps=7").total_steps == 7
  shared = get(name, f"shared,shared_dir={fake_dirs['shared']}")
  config_lib.validate(shared)
  assert [d["name"] for d in shared.data.domains] == list(
      presets.SHARED_DOMAINS)
  in100 = get(name, f"in100,in100_dir={fake_dirs['in100']}")
  config_lib.validate(in100)
  assert in100.data.domains[0]["source"] == "npz"
  reference = get(name, _reference_arg(name, fake_dirs))
  assert reference.model.depth == 18 and reference.model.width_multiplier == 1
  assert reference.total_steps < 0 and reference.total_epochs >= 300
  assert reference.optim.name == "lars"


@pytest.mark.parametrize("name", ZOO)
def test_in100_defaults_to_streamed_tfds_subset(name, monkeypatch):
  monkeypatch.delenv("IMAGENET100_DIR", raising=False)
  config = get(name, None if name == "msbreg" else "in100")
  (domain,) = config.data.domains
  assert domain["source"] == "tfds" and domain["tfds_name"] == "imagenet2012"
  assert domain["class_subset"] == "imagenet100"
  assert domain["in_memory"] is False
  assert domain["eval_split"] == "validation"
  assert config.data.image_size == config.views.large.size == 224


def test_in100_reads_dir_from_environment(fake_dirs, monkeypatch):
  monkeypatch.setenv("IMAGENET100_DIR", fake_dirs["in100"])
  config = get("byol", "in100")
  (domain,) = config.data.domains
  assert domain["path"] == fake_dirs["in100"]
  assert domain["num_classes"] == 100
  assert config.data.image_size == config.views.large.size == 224
  assert config.model.stem == "imagenet"


def test_in100_rejects_labels_beyond_the_subset(tmp_path):
  # A 1000-class directory handed in by mistake fails when the data load.
  path = _write_npz_dir(tmp_path / "in1k", num_classes=1000)
  config = get("simclr", f"in100,in100_dir={path}")
  config.data.image_size = config.views.large.size = 16
  with pytest.raises(ValueError, match="num_classes=100"):
    sources.load_domains(config.data)


def test_imagenet100_streams_the_shipped_subset_from_mock_tfds(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  config = get("msbreg")
  config.data.image_size = config.views.large.size = 24
  config.data.data_dir = str(tmp_path)
  with open(sources.BUILTIN_CLASS_SUBSETS["imagenet100"]) as f:
    wnids = [line.split()[0] for line in f
             if line.strip() and not line.startswith("#")]
  assert len(wnids) == len(set(wnids)) == 100
  with tfds.testing.mock_data(num_examples=400):
    (domain,) = sources.load_domains(config.data)
    names = tfds.builder("imagenet2012").info.features["label"].names
  assert domain.is_streaming and domain.num_classes == 100
  kept = [names.index(w) for w in wnids]
  assert list(domain.stream.class_ids) == kept
  # Mock labels are uniform over 1000 classes: about 10% survive the subset.
  assert 10 <= domain.num_train <= 100


def test_imagenet100_explains_missing_imagenet(tmp_path):
  config = get("byol", "in100")
  config.data.data_dir = str(tmp_path / "no_tfds")
  with pytest.raises(sources.DatasetNotFoundError,
                     match="tfds build imagenet2012"):
    sources.load_domains(config.data)


def test_byol_stl10_is_msbreg_recipe_with_two_views():
  byol = get("byol", "stl10")
  msb = get("msbreg", "stl10")
  assert byol.method == "byol" and msb.method == "msbreg"
  assert byol.views.large.count == 2 and msb.views.large.count == 4
  assert byol.data.domains == msb.data.domains
  # Same peak-lr rule (base × B/256 × K) at K = 2.
  assert byol.optim.base_lr == pytest.approx(2 * msb.optim.base_lr)
  assert dict(byol.method_args) == config_lib.METHOD_ARGS["byol"]
  assert byol.evals.to_dict() == msb.evals.to_dict()


@pytest.mark.parametrize("name", ["byol", "msbreg"])
def test_norm_argument_switches_both_heads(name, fake_dirs):
  extra = "" if name == "byol" else f",in100_dir={fake_dirs['in100']}"
  config = get(name, "norm=layer" + extra)
  assert config.projector.norm == config.predictor.norm == "layer"
  assert config.model.norm == "batch"  # The encoder keeps BatchNorm.


def test_solo_learn_values_per_method(fake_dirs):
  """Spot checks of METHODS.md §4–§5 defaults in the reference configs."""
  cfg = {n: get(n, _reference_arg(n, fake_dirs)) for n in ZOO}
  assert cfg["byol"].optim.base_lr == 1.0 and cfg["byol"].ema.base == 0.99
  assert cfg["simclr"].projector.norm == "none"
  assert cfg["simclr"].method_args.temperature == 0.2
  assert cfg["mocov3"].projector.last_norm == "batch_noaffine"
  assert cfg["mocov3"].method_args.temperature == 0.2
  assert tuple(cfg["vicreg"].projector.hidden_dims) == (2048, 2048)
  assert cfg["vicreg"].augment.odd.solarize_p == 0.1
  assert cfg["barlow_twins"].method_args.scale == 0.1
  assert cfg["dino"].method_args.num_prototypes == 4096
  assert cfg["dino"].ema.base == 0.9995
  assert cfg["dino"].method_args.freeze_last_layer_steps == 196
  assert cfg["swav"].method_args.queue_size == 3840
  assert cfg["swav"].method_args.queue_start_step == 9766  # Epoch 50.
  for name, c in cfg.items():  # solo-learn's clipped LARS (METHODS §1.2).
    solo = name != "msbreg"
    assert c.optim.clip_lr == solo, name
    assert c.optim.trust_coefficient == (0.02 if solo else 1e-3), name
    demo = get(name, "demo")  # Tuned with plain LARS.
    assert not demo.optim.clip_lr and demo.optim.trust_coefficient == 1e-3
  msb = cfg["msbreg"]
  assert msb.views.large.count == 4 and msb.data.per_domain_batch == 512
  assert (msb.method_args.lambda_s, msb.method_args.lambda_b) == (0.004, 0.5)
  assert tuple(msb.projector.hidden_dims) == (512,)
  assert msb.projector.out_dim == msb.predictor.out_dim == 128
  assert msb.augment.odd.blur_p == msb.augment.even.blur_p == 1.0
  assert msb.augment.odd.solarize_p == msb.augment.even.solarize_p == 0.2
