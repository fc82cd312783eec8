"""Every registered method trains on the shared trainer (issue #4 item 6).

Real short runs through `train.train_and_evaluate`, each starting from the
method's own offline demo config (`configs/<method>.py:demo`; MDSSL:
`configs/demo.py`) shrunk to test size — the digits and textures demo
domains at 16 px, a width-1/16 ResNet-18, the demo's peak learning rate:

* every method: finite loss that falls (mean of the first vs the last three
  logged losses in metrics.jsonl) and the collapse-monitor keys logged;
* BYOL, MSBReg, VICReg and SimCLR: kNN top-1 after a short run at least
  twice chance and above the same encoder at initialisation;
* the LayerNorm head switch of configs/msbreg.py (seed 002 Table 4);
* the registry.

On CPU, XLA compilation dominates these runs, so the module turns most XLA
optimisations off (compiles ~3× faster; the tiny steps run slower, which
costs less) and compiles each method once (RELICv2 is tested elsewhere).
"""

import functools
import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from mdssl_jax import config_lib
from mdssl_jax import methods
from mdssl_jax import optim
from mdssl_jax import presets
from mdssl_jax import sharding as sharding_lib
from mdssl_jax import train
from mdssl_jax.data import sources

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
ALL_METHODS = ("barlow_twins", "byol", "dino", "mdssl", "mocov3", "msbreg",
               "relicv2", "simclr", "swav", "vicreg")
KNN_METHODS = ("byol", "msbreg", "vicreg", "simclr")
LOSS_ONLY_METHODS = ("mdssl", "mocov3", "barlow_twins", "dino", "swav")
MONITOR_KEYS = ("monitor/z_std_ratio", "monitor/effective_rank",
                "monitor/uniformity", "monitor/alignment")
DOMAINS = ("digits", "textures")


@pytest.fixture(scope="module", autouse=True)
def _fast_compile():
  """Cheaper XLA compiles for this module only (restored afterwards)."""
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


def demo_config(method: str, *, steps: int, log_every: int = 1,
                per_domain_batch: int = 32):
  """`configs/<method>.py:demo` at test size, keeping the demo's peak lr."""
  if method == "mdssl":
    config = config_lib.load_sibling(str(CONFIG_DIR / "x.py"),
                                     "demo").get_config()
  else:
    config = config_lib.load_sibling(str(CONFIG_DIR / "x.py"),
                                     method).get_config("demo")
  demo_batch = len(config.data.domains) * config.data.per_domain_batch
  peak = optim.peak_learning_rate(config.optim, demo_batch)
  presets.tiny_test_config(config, steps=steps, domains=DOMAINS,
                           per_domain_batch=per_domain_batch, image_size=16)
  config.optim.update(lr_scaling="none", base_lr=peak, warmup_steps=3)
  config.log_every = log_every
  config.mesh_shape = 1
  config.checkpoint.every_steps = 10_000
  config.eval.update(probe_steps=50, max_train_per_domain=1000,
                     max_test_per_domain=400)
  batch = len(DOMAINS) * per_domain_batch
  if method == "swav":  # Exercise the queue: full after 2 steps, then used.
    config.method_args.update(queue_size=2 * batch, queue_start_step=0)
  return config


def read_metrics(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def check_loss_falls_and_monitor(records: list[dict], method: str) -> None:
  losses = np.array([r["loss"] for r in records])
  assert np.all(np.isfinite(losses)), (method, losses)
  first, last = losses[:3].mean(), losses[-3:].mean()
  assert last < first, (method, losses.round(3).tolist())
  for r in records:
    for key in MONITOR_KEYS:
      assert key in r and np.isfinite(r[key]), (method, key, r)


# ---- Registry ----------------------------------------------------------------


def test_registry_lists_all_ten_methods():
  assert methods.available() == sorted(ALL_METHODS)
  for name in ALL_METHODS:
    cls = methods.get_method(name)
    assert cls.name == name
    defaults = config_lib.get_default_config(name)
    assert defaults.method == name


def test_unknown_method_is_a_config_error_listing_every_method():
  config = config_lib.get_default_config("byol")
  config.method = "byoll"
  with pytest.raises(config_lib.ConfigError) as err:
    config_lib.validate(config)
  for name in ALL_METHODS:
    assert name in str(err.value)
  assert "--config.method" in str(err.value)


# ---- Short real runs -----------------------------------------------------------


@pytest.mark.parametrize("method", LOSS_ONLY_METHODS)
def test_method_trains_with_falling_loss(method, tmp_path):
  config = demo_config(method, steps=24, log_every=3)
  train.train_and_evaluate(config, str(tmp_path))
  records = read_metrics(tmp_path)
  assert [r["step"] for r in records] == list(range(3, 25, 3))
  check_loss_falls_and_monitor(records, method)


@pytest.fixture(scope="module")
def init_knn() -> dict[str, float]:
  """kNN top-1 per domain of the encoder at initialisation (step 0).

  The encoder's parameters are initialised from (seed, model config) under
  the module path "encoder", so they are the same for every method of
  `KNN_METHODS`; one evaluation serves them all.
  """
  config = demo_config("simclr", steps=1)
  domains = sources.load_domains(config.data)
  setup = train.build_setup(config, domains)
  state = jax.jit(functools.partial(train.init_state, setup, config))()
  mesh = sharding_lib.make_mesh(1)
  results = train.evaluate_state(config, setup, state, domains, mesh)
  return {name: r["knn_top1"] for name, r in results["domains"].items()}


@pytest.mark.slow
@pytest.mark.parametrize("method", KNN_METHODS)
def test_short_run_knn_beats_chance_and_initialisation(method, init_knn,
                                                       tmp_path):
  config = demo_config(method, steps=60, log_every=5)
  config.eval.at_end = True
  train.train_and_evaluate(config, str(tmp_path))
  check_loss_falls_and_monitor(read_metrics(tmp_path), method)
  with open(tmp_path / "results.json") as f:
    results = json.load(f)
  knn = {name: r["knn_top1"] for name, r in results["domains"].items()}
  chance = results["mean"]["chance"]
  mean_knn = float(np.mean(list(knn.values())))
  mean_init = float(np.mean(list(init_knn.values())))
  assert mean_knn >= 2 * chance, (method, knn, chance)
  assert mean_knn > mean_init, (method, knn, init_knn)


# ---- The LayerNorm switch (seed 002 Table 4) --------------------------------


def _head_norm_layers(tree, head: str) -> dict:
  return {k: v for k, v in tree.get(head, {}).items() if k.startswith("norm")}


@pytest.mark.parametrize("method", ["msbreg", "byol"])
def test_layer_norm_switch_changes_heads_and_trains(method, tmp_path):
  config = demo_config(method, steps=4)
  domains = sources.load_domains(config.data)
  shapes = jax.eval_shape(functools.partial(
      train.init_state, train.build_setup(config, domains), config))
  for head in ("projector", "predictor"):  # Default: BatchNorm heads.
    assert set(shapes.batch_stats[head]) == {"norm0"}
    assert set(shapes.params[head]["norm0"]) == {"scale", "bias"}

  # Exactly the command-line override documented in configs/msbreg.py.
  config.update_from_flattened_dict({"projector.norm": "layer",
                                     "predictor.norm": "layer"})
  setup = train.build_setup(config, domains)
  shapes = jax.eval_shape(functools.partial(train.init_state, setup, config))
  for head in ("projector", "predictor"):
    norms = _head_norm_layers(shapes.params, head)
    assert set(norms) == {"norm0"}
    assert set(norms["norm0"]) == {"scale", "bias"}
    assert head not in shapes.batch_stats  # LayerNorm keeps no statistics.
  assert "encoder" in shapes.batch_stats  # The encoder keeps BatchNorm.
  assert "predictor" not in shapes.target_batch_stats

  state = train.train_and_evaluate(config, str(tmp_path))
  losses = [r["loss"] for r in read_metrics(tmp_path)]
  assert len(losses) == 4 and np.all(np.isfinite(losses)), losses
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.params))
