"""Every registered method trains on the shared trainer (issue #4 item 6).

Each method of `methods.available()` has an entry in EXPECTATIONS (a test
checks that every registered method has one). A method's short run is one
real `train.train_and_evaluate` call, made once per module and shared by
the tests that read it; it starts from the method's own offline demo config
(`configs/<method>.py:demo`; MDSSL: `configs/demo.py`) shrunk to test size:
the digits and textures demo domains at 16 px, 32 images per domain per
step, a width-1/16 ResNet-18 and the demo's peak learning rate.

* LOSS: finite loss that falls (mean of the first vs the last three
  records, each the mean over `RECORD_EVERY` steps of metrics.jsonl; for
  DINO its KL term, see FALLING_METRIC) and the collapse-monitor keys in
  every step's metrics;
* KNN: the same, and mean kNN top-1 (photos and textures domains) after a
  60-step run at least twice chance and above the same encoder at
  initialisation;
* OWN_MODULE: tested by its own module (RELICv2: tests/test_relicv2.py);
* the LayerNorm switch of configs/msbreg.py (seed 002 Table 4);
* the registry.

On CPU, XLA compilation dominates: the trainer compiles initialisation
without most optimisations and the step with them (it runs ~7× faster).
"""

import contextlib
import json
import os
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest

from mdssl_jax import config_lib
from mdssl_jax import methods
from mdssl_jax import optim
from mdssl_jax import presets
from mdssl_jax import train
from mdssl_jax.data import sources

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
LOSS, KNN, OWN_MODULE = "loss falls", "knn beats chance and init", "own"
EXPECTATIONS = {
    "barlow_twins": LOSS, "byol": KNN, "dino": LOSS, "mdssl": LOSS,
    "mocov3": LOSS, "msbreg": KNN, "relicv2": OWN_MODULE, "simclr": KNN,
    "swav": LOSS, "vicreg": KNN,
}
TRAINED = [m for m in methods.available()
           if EXPECTATIONS.get(m) in (LOSS, KNN)]
KNN_METHODS = [m for m in methods.available() if EXPECTATIONS.get(m) == KNN]
# The metric a short run must lower. DINO's loss is H(teacher) + KL(teacher
# || student): the student's gradient lowers only the KL, while centring
# raises the teacher's entropy early in training (24 steps: loss 6.59 ->
# 6.58 but KL 1.76 -> 1.42), so the KL is what shows that it learns.
FALLING_METRIC = {"dino": "kl"}

# Steps and records (means over RECORD_EVERY steps) of a short run.
RUN_STEPS = {LOSS: 24, KNN: 60}
RECORD_EVERY = {LOSS: 3, KNN: 5}
MONITOR_KEYS = ("monitor/z_std_ratio", "monitor/effective_rank",
                "monitor/uniformity", "monitor/alignment")
DOMAINS = ("digits", "textures")
# Random conv features already give ~80% kNN top-1 on digits (about what
# pixels give), a bar a 60-step run of a width-1/16 net does not clear
# (BYOL measured 81% → 63%); photos and textures start at 56% and 15%.
KNN_DOMAINS = ("photos", "textures")


@contextlib.contextmanager
def xla_optimizations(enabled: bool):
  """Compiles inside the block with (or without) most XLA optimisations."""
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", not enabled)
  try:
    yield
  finally:
    jax.config.update("jax_disable_most_optimizations", old)


def demo_config(method: str, *, steps: int, per_domain_batch: int = 32,
                domains: tuple[str, ...] = DOMAINS
                ) -> ml_collections.ConfigDict:
  """`configs/<method>.py:demo` at test size, keeping the demo's peak lr."""
  if method == "mdssl":
    config = config_lib.load_config(str(CONFIG_DIR / "demo.py"))
  else:
    config = config_lib.load_config(str(CONFIG_DIR / f"{method}.py:demo"))
  peak = optim.peak_learning_rate(config.optim,
                                  config_lib.global_batch(config))
  presets.tiny_test_config(config, steps=steps, domains=domains,
                           per_domain_batch=per_domain_batch, image_size=16)
  config.optim.update(lr_scaling="none", base_lr=peak, warmup_steps=3)
  config.mesh_shape = 1
  # XLA's own convolution: at this size it compiles ~35% faster and steps
  # ~2x faster than the CPU default FastConv ("auto"), which
  # test_fast_conv.py, test_train.py and test_end_to_end.py cover.
  config.model.conv_impl = "xla"
  config.evals.probe.steps = 50
  config.eval.update(max_train_per_domain=1000, max_test_per_domain=400)
  if method == "swav":  # Exercise the queue: full after 2 steps, then used.
    config.method_args.update(queue_size=2 * config_lib.global_batch(config),
                              queue_start_step=0)
  config_lib.validate(config)
  return config


def read_metrics(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def short_run(method: str, workdir: str) -> dict:
  """The method's short run through `train.train_and_evaluate`.

  Returns:
    {"steps": metrics.jsonl (every step), "records": means over
    RECORD_EVERY steps, "state": the final state; for KNN methods also
    "final" (results.json) and "init" (the same evaluation of the initial
    state)}.
  """
  kind = EXPECTATIONS[method]
  domains = KNN_DOMAINS if kind == KNN else DOMAINS
  config = demo_config(method, steps=RUN_STEPS[kind], domains=domains)
  config.eval.at_end = kind == KNN
  out = {"state": train.train_and_evaluate(config, workdir)}
  steps = read_metrics(workdir)
  n = RECORD_EVERY[kind]
  out["steps"] = steps
  out["records"] = [
      {k: float(np.mean([m[k] for m in steps[i:i + n]])) for k in steps[0]}
      for i in range(0, len(steps) - n + 1, n)]
  if kind == KNN:
    with open(os.path.join(workdir, "results.json")) as f:
      out["final"] = json.load(f)
    loaded = sources.load_domains(config.data)
    setup = train.build_setup(config, train.run_shape(config, loaded))
    out["init"] = train.evaluate_state(
        config, setup, train.create_state(setup, config), loaded)
  return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """method -> its short run, each made on first use and then shared."""
  cache = {}

  def get(method):
    if method not in cache:
      cache[method] = short_run(method, str(tmp_path_factory.mktemp(method)))
    return cache[method]
  return get


# ---- Registry ----------------------------------------------------------------


def test_expectations_cover_every_registered_method():
  assert sorted(EXPECTATIONS) == methods.available()
  assert set(EXPECTATIONS.values()) <= {LOSS, KNN, OWN_MODULE}


def test_registry_names_and_defaults():
  for name in methods.available():
    cls = methods.get_method(name)
    assert cls.name == name
    defaults = config_lib.get_default_config(name)
    assert defaults.method == name
    # The one place for method_args defaults is config_lib.METHOD_ARGS.
    assert cls.default_args().to_dict() == config_lib.METHOD_ARGS[name]
    assert defaults.method_args.to_dict() == config_lib.METHOD_ARGS[name]


def test_unknown_method_is_a_config_error_listing_every_method():
  config = config_lib.get_default_config("byol")
  config.method = "byoll"
  with pytest.raises(config_lib.ConfigError) as err:
    config_lib.validate(config)
  for name in methods.available():
    assert name in str(err.value)
  assert "--config.method" in str(err.value)


# ---- Short real runs ---------------------------------------------------------


@pytest.mark.parametrize("method", TRAINED)
def test_method_trains_with_falling_loss(method, runs):
  run = runs(method)
  kind = EXPECTATIONS[method]
  assert [m["step"] for m in run["steps"]] == list(
      range(1, RUN_STEPS[kind] + 1))
  assert len(run["records"]) == RUN_STEPS[kind] // RECORD_EVERY[kind]
  for m in run["steps"]:
    for key in MONITOR_KEYS:
      assert key in m and np.isfinite(m[key]), (method, key, m)
  key = FALLING_METRIC.get(method, "loss")
  losses = np.array([r[key] for r in run["records"]])
  assert np.all(np.isfinite(losses)), (method, losses)
  first, last = losses[:3].mean(), losses[-3:].mean()
  assert last < first, (method, key, losses.round(3).tolist())
  assert all(np.all(np.isfinite(x))
             for x in jax.tree.leaves(run["state"].params))


@pytest.mark.slow
@pytest.mark.parametrize("method", KNN_METHODS)
def test_short_run_knn_beats_chance_and_initialisation(method, runs):
  run = runs(method)
  knn = {name: r["knn_top1"] for name, r in run["final"]["domains"].items()}
  init = {name: r["knn_top1"] for name, r in run["init"]["domains"].items()}
  assert set(knn) == set(init) == set(KNN_DOMAINS)
  chance = run["final"]["mean"]["chance"]
  mean_knn = float(np.mean(list(knn.values())))
  mean_init = float(np.mean(list(init.values())))
  assert mean_knn >= 2 * chance, (method, knn, chance)
  assert mean_knn > mean_init, (method, knn, init)


# ---- The LayerNorm switch (seed 002 Table 4) --------------------------------


def _head_norm_layers(tree, head: str) -> dict:
  return {k: v for k, v in tree.get(head, {}).items() if k.startswith("norm")}


@pytest.mark.parametrize("method", ["msbreg", "byol"])
def test_layer_norm_switch_changes_heads_and_trains(method, tmp_path):
  config = demo_config(method, steps=4)
  domains = sources.load_domains(config.data)
  shape = train.run_shape(config, domains)
  shapes = train.abstract_state(train.build_setup(config, shape), config)
  for head in ("projector", "predictor"):  # Default: BatchNorm heads.
    assert set(shapes.batch_stats[head]) == {"norm0"}
    assert set(shapes.params[head]["norm0"]) == {"scale", "bias"}

  # Exactly the command-line override documented in configs/msbreg.py.
  config.update_from_flattened_dict({"projector.norm": "layer",
                                     "predictor.norm": "layer"})
  shapes = train.abstract_state(train.build_setup(config, shape), config)
  for head in ("projector", "predictor"):
    norms = _head_norm_layers(shapes.params, head)
    assert set(norms) == {"norm0"}
    assert set(norms["norm0"]) == {"scale", "bias"}
    assert head not in shapes.batch_stats  # LayerNorm keeps no statistics.
  assert "encoder" in shapes.batch_stats  # The encoder keeps BatchNorm.
  assert "predictor" not in shapes.target_batch_stats

  with xla_optimizations(False):  # 4 steps: compile time is what counts.
    state = train.train_and_evaluate(config, str(tmp_path))
  records = read_metrics(tmp_path)
  assert all(key in r for r in records for key in MONITOR_KEYS)
  losses = [r["loss"] for r in records]
  assert len(losses) == 4 and np.all(np.isfinite(losses)), losses
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.params))
