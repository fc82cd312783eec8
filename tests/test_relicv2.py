"""RELICv2 end to end (issue #3): EMA, target branch, masking, configs, a run.

The loss itself is tested against a NumPy reference in test_losses_relic.py
and the masking stage's unit behaviour in test_augment.py / test_pipeline.py;
here the pieces are checked together through the trainer. Compilation
dominates the runtime, so the jitted functions are built once per module and
XLA's optimisations are turned off for this module (the model is tiny).
"""

import ast
import functools
import json
import logging
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import jax
import numpy as np
import pytest

from mdssl_jax import config_lib
from mdssl_jax import optim
from mdssl_jax import presets
from mdssl_jax import sharding as sharding_lib
from mdssl_jax import train
from mdssl_jax.data import pipeline, sources
from mdssl_jax.methods import base

REPO = Path(__file__).resolve().parents[1]
LARGE, SMALL, PER_DOMAIN, SIZE = 4, 2, 8, 16
RUN_STEPS = 40


def load_config(name, arg=None):
  """get_config(arg) of configs/<name>.py."""
  path = str(REPO / "configs" / f"{name}.py")
  return config_lib.load_config(path if arg is None else f"{path}:{arg}")


def tiny_relic_config(steps=RUN_STEPS):
  """digits + textures at 16 px (small views 8 px), L = 4, S = 2, B = 16."""
  c = config_lib.get_default_config("relicv2")
  presets.tiny_test_config(c, steps=steps, domains=("digits", "textures"),
                           per_domain_batch=PER_DOMAIN, image_size=SIZE)
  c.views.large.count = LARGE
  c.views.small.count = SMALL
  c.views.small.size = SIZE // 2
  c.mesh_shape = 1
  c.model.conv_impl = "xla"  # Compiles faster than FastConv at this size.
  c.saliency.prob = 1.0  # Every large view of a textures image is masked.
  c.optim.lr_scaling = "none"
  c.optim.base_lr = 1.0
  c.optim.warmup_steps = 5
  c.ema.base = 0.9  # A visible EMA step (the default 0.996 barely moves).
  c.ema.schedule = "cosine"
  c.eval.at_end = True
  c.evals.probe.steps = 50
  return c


class _Messages(logging.Handler):
  """Collects absl/python log messages (module fixtures cannot use caplog)."""

  def __init__(self):
    super().__init__(logging.INFO)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


@pytest.fixture(scope="module", autouse=True)
def _fast_compile():
  """Cheap XLA compiles for this module; restores the global flag after."""
  old = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)
  jax.config.update("jax_threefry_partitionable", True)  # As the trainer.
  yield
  jax.config.update("jax_disable_most_optimizations", old)


@pytest.fixture(scope="module")
def tiny():
  config = tiny_relic_config()
  domains = sources.load_domains(config.data)
  setup = train.build_setup(config, train.run_shape(config, domains))
  it = pipeline.make_train_iterator(config, domains, start_step=0)
  batches = [next(it) for _ in range(2)]
  state0 = jax.device_get(train.create_state(setup, config))
  return types.SimpleNamespace(config=config, domains=domains, setup=setup,
                               batches=batches, state0=state0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A real RUN_STEPS-step run through the trainer (1 device), recorded."""
  config = tiny_relic_config()
  workdir = tmp_path_factory.mktemp("relicv2") / "run"
  consumed = []
  original = pipeline.make_train_iterator

  def recording(*args, **kwargs):
    for batch in original(*args, **kwargs):
      consumed.append(batch)
      yield batch

  handler = _Messages()
  logger = logging.getLogger("absl")
  old_level = logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  try:
    with pytest.MonkeyPatch.context() as mp:
      mp.setattr(pipeline, "make_train_iterator", recording)
      train.train_and_evaluate(config, str(workdir))
  finally:
    logger.removeHandler(handler)
    logger.setLevel(old_level)
  log = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  results = json.load(open(workdir / "results.json"))
  return types.SimpleNamespace(config=config, consumed=consumed, log=log,
                               results=results, messages=handler.messages)


@pytest.fixture(scope="module")
def eight_devices(tiny):
  """Two train steps on an 8-device mesh, plus d loss / d target params."""
  assert jax.device_count() == 8, "conftest forces 8 CPU devices"
  setup = tiny.setup
  method = setup.method
  mesh = sharding_lib.make_mesh(8)
  rep = sharding_lib.replicated(mesh)

  def step_and_target_grad(state, batch):
    def loss_of_target(target_params):
      inputs = base.StepInputs(
          params=state.params, batch_stats=state.batch_stats,
          target_params=target_params,
          target_batch_stats=state.target_batch_stats,
          buffers=state.buffers, batch=batch,
          rng=jax.random.fold_in(state.rng, state.step), step=state.step)
      return method.loss(inputs)[0]
    target_grad = jax.grad(loss_of_target)(state.target_params)
    new_state, metrics = train.train_step(state, batch, setup=setup)
    return new_state, metrics, target_grad

  fn = jax.jit(step_and_target_grad,
               in_shardings=(rep, sharding_lib.batch_sharding(mesh)),
               out_shardings=rep)
  s1, m1, g1 = fn(jax.device_put(tiny.state0, rep), tiny.batches[0])
  s2, m2, _ = fn(s1, tiny.batches[1])
  return types.SimpleNamespace(
      state1=jax.device_get(s1), state2=jax.device_get(s2),
      metrics=jax.device_get([m1, m2]), target_grad=jax.device_get(g1))


# ---- EMA ---------------------------------------------------------------------


def test_ema_schedule_cosine_and_constant():
  k = 1000
  cosine = optim.ema_schedule(0.996, k, "cosine")
  np.testing.assert_allclose(float(cosine(0)), 0.996, rtol=0, atol=1e-7)
  np.testing.assert_allclose(float(cosine(k // 2)), 0.998, atol=1e-7)
  np.testing.assert_allclose(float(cosine(k)), 1.0, atol=1e-7)
  quarter = 1 - 0.004 * (np.cos(np.pi / 4) + 1) / 2
  np.testing.assert_allclose(float(cosine(k // 4)), quarter, atol=1e-7)
  values = np.array([float(cosine(s)) for s in range(0, k + 1, 50)])
  assert np.all(np.diff(values) >= 0), "cosine EMA must rise monotonically"
  assert float(cosine(2 * k)) == pytest.approx(1.0)  # Clipped past K.
  constant = optim.ema_schedule(0.99, k, "constant")
  for s in (0, k // 2, k):
    assert float(constant(s)) == pytest.approx(0.99, abs=1e-7)
  with pytest.raises(ValueError, match="schedule"):
    optim.ema_schedule(0.99, k, "linear")


def test_trainer_uses_configured_ema_schedule(tiny):
  ema_fn, total = tiny.setup.ema_fn, tiny.setup.shape.total_steps
  assert total == RUN_STEPS
  np.testing.assert_allclose(
      [float(ema_fn(s)) for s in (0, total // 2, total)], [0.9, 0.95, 1.0],
      atol=1e-7)


def test_train_step_applies_ema_after_optimizer_step(tiny, eight_devices):
  method = tiny.setup.method
  s0, s1, s2 = tiny.state0, eight_devices.state1, eight_devices.state2
  # The target mirrors encoder + projector (no predictor), starting at θ.
  assert set(s0.target_params) == set(s0.params) - {"predictor"}
  assert "predictor" in s0.params
  jax.tree.map(np.testing.assert_array_equal, s0.target_params,
               method.target_subset(s0.params))
  for k, (old, new) in enumerate(((s0, s1), (s1, s2))):
    tau = float(tiny.setup.ema_fn(k))
    assert float(eight_devices.metrics[k]["tau"]) == tau  # Logged.
    # ξ_{k+1} = τ_k·ξ_k + (1 − τ_k)·θ_{k+1}, θ_{k+1} after the optimiser step.
    expected = jax.tree.map(
        lambda t, p, tau=tau: tau * t.astype(np.float64) + (1 - tau) * (
            p.astype(np.float64)),
        old.target_params, method.target_subset(new.params))
    jax.tree.map(lambda got, want: np.testing.assert_allclose(
        got, want, rtol=1e-6, atol=1e-8), new.target_params, expected)
  assert float(eight_devices.metrics[0]["tau"]) == pytest.approx(0.9)
  # Step 2 (lr > 0 after the first warm-up step) really moved θ, and ξ lags
  # behind it, so the check above is not trivially ξ == θ.
  for part in ("encoder", "projector", "predictor"):
    moved = jax.tree.leaves(jax.tree.map(
        lambda a, b: float(np.abs(a - b).max()), s1.params[part],
        s2.params[part]))
    assert max(moved) > 1e-6, f"{part} parameters did not change"
  gap = jax.tree.leaves(jax.tree.map(
      lambda t, p: float(np.abs(t - p).max()), s2.target_params,
      method.target_subset(s2.params)))
  assert max(gap) > 1e-7


# ---- Target branch -----------------------------------------------------------


def test_target_parameters_get_no_gradient(eight_devices):
  grads = jax.tree.leaves(eight_devices.target_grad)
  assert grads
  for g in grads:
    np.testing.assert_array_equal(g, np.zeros_like(g))
  m1, _ = eight_devices.metrics
  assert np.isfinite(float(m1["grad_norm"])) and float(m1["grad_norm"]) > 0


def test_target_branch_sees_only_large_views_one_per_pass(tiny, monkeypatch):
  calls = []
  original = base.Method.forward

  def recording(self, params, batch_stats, images, **kw):
    calls.append((kw.get("target", False), tuple(images.shape),
                  "predictor" in params))
    return original(self, params, batch_stats, images, **kw)

  monkeypatch.setattr(base.Method, "forward", recording)
  state = train.abstract_state(tiny.setup, tiny.config)
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
           for k, v in tiny.batches[0].items()}
  jax.eval_shape(functools.partial(train.train_step, setup=tiny.setup),
                 state, batch)
  rows = 2 * PER_DOMAIN
  # view_batch_stats="per_view" (RELICv2's default): one pass per view.
  assert tiny.config.model.view_batch_stats == "per_view"
  large = (rows, SIZE, SIZE, 3)
  small = (rows, SIZE // 2, SIZE // 2, 3)
  assert batch["large"].shape == (rows, LARGE, SIZE, SIZE, 3)
  assert batch["small"].shape == (rows, SMALL, SIZE // 2, SIZE // 2, 3)
  target_calls = [c for c in calls if c[0]]
  online_calls = [c for c in calls if not c[0]]
  # Target passes on the large views only, without predictor.
  assert [c[1] for c in target_calls] == [large] * LARGE
  assert not any(c[2] for c in target_calls)
  # Large and small views: online passes at their own sizes.
  assert sorted(c[1] for c in online_calls) == sorted(
      [large] * LARGE + [small] * SMALL)
  assert all(c[2] for c in online_calls)


def test_one_vs_eight_devices_same_loss(eight_devices, run):
  # The 1-device numbers are the trainer's own log of the same config,
  # initial state and batches (batches are a pure function of seed, step).
  one = np.array([r["loss"] for r in run.log[:2]])
  eight = np.array([float(m["loss"]) for m in eight_devices.metrics])
  np.testing.assert_allclose(eight, one, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose([float(m["tau"]) for m in eight_devices.metrics],
                             [r["tau"] for r in run.log[:2]], atol=1e-7)


# ---- Saliency masking --------------------------------------------------------


def test_masked_large_views_have_one_grey_background_per_view(tiny):
  config = tiny_relic_config()
  for col in ("odd", "even"):
    config.augment[col].update(dict(flip_p=0.0, jitter_p=0.0, gray_p=0.0,
                                    blur_p=0.0, solarize_p=0.0))
  config.augment.aspect = (1.0, 1.0)
  config.views.large.crop_area = (1.0, 1.0)
  config.saliency.prob = 1.0
  batch = next(pipeline.make_train_iterator(config, tiny.domains,
                                            start_step=3))
  mean = np.array(config.data.mean, np.float32)
  std = np.array(config.data.std, np.float32)
  views = batch["large"] * std + mean  # [B, L, H, W, 3] in [0, 1].
  textures = tiny.domains[1]
  for row in range(len(batch["domain"])):
    dom = tiny.domains[batch["domain"][row]]
    image = dom.train_images[batch["index"][row]].astype(np.float32) / 255
    if dom.train_masks is None:  # digits: never masked.
      for v in range(LARGE):
        np.testing.assert_allclose(views[row, v], image, atol=1e-4)
      continue
    assert dom is textures
    fg = dom.train_masks[batch["index"][row]] > 0.5
    assert 0.05 <= fg.mean() < 1.0
    greys = []
    for v in range(LARGE):
      np.testing.assert_allclose(views[row, v][fg], image[fg], atol=1e-4)
      background = views[row, v][~fg]
      np.testing.assert_allclose(background, background[0, 0], atol=1e-4)
      greys.append(background[0, 0])
    # A fresh grey level per view (independent draws).
    assert len(np.unique(np.round(greys, 3))) > 1


# ---- Configs -----------------------------------------------------------------


def test_r50_config_is_the_paper_setup():
  c = load_config("relicv2_r50")
  config_lib.validate(c)
  assert c.method == "relicv2"
  assert (c.views.large.count, c.views.large.size,
          tuple(c.views.large.crop_area)) == (4, 224, (0.08, 1.0))
  assert (c.views.small.count, c.views.small.size,
          tuple(c.views.small.crop_area)) == (2, 96, (0.05, 0.14))
  (domain,) = c.data.domains
  assert domain["source"] == "tfds" and domain["tfds_name"] == "imagenet2012"
  assert domain["in_memory"] is False and "mask_key" not in domain
  assert c.data.data_dir and not c.data.download
  assert c.data.per_domain_batch == 4096
  assert (c.model.depth, c.model.width_multiplier, c.model.stem) == (
      50, 1.0, "imagenet")
  for head in (c.projector, c.predictor):
    assert (tuple(head.hidden_dims), head.out_dim, head.norm) == (
        (4096,), 256, "batch")
  a = c.method_args
  assert (a.temperature, a.beta, a.num_negatives) == (0.2, 1.0, 10)
  assert (a.kl_mode_large, a.kl_mode_small) == ("reverse", "transpose")
  assert c.optim.name == "lars" and c.optim.weight_decay == 1.5e-6
  assert optim.peak_learning_rate(c.optim, 4096) == pytest.approx(4.8)
  shape = config_lib.run_shape(c, num_train_examples=1_281_167)
  # 1000 and 10 epochs.
  assert (shape.total_steps, shape.warmup_steps) == (312_785, 3_128)
  assert (c.ema.base, c.ema.schedule) == (0.996, "cosine")
  assert (c.saliency.prob, c.saliency.min_coverage) == (0.1, 0.05)
  specs = pipeline.view_specs_from_config(c)
  blur_solarize = lambda s: (s.params["blur_p"], s.params["solarize_p"])
  assert [blur_solarize(s) for s in specs["large"]] == [
      (0.1, 0.2), (1.0, 0.0), (0.1, 0.2), (1.0, 0.0)]
  assert [blur_solarize(s) for s in specs["small"]] == [(0.1, 0.2),
                                                        (1.0, 0.0)]
  assert [s.saliency for s in specs["large"] + specs["small"]] == [
      True] * 4 + [False] * 2
  for s in specs["large"] + specs["small"]:
    assert (s.params["flip_p"], s.params["jitter_p"], s.params["gray_p"]) == (
        0.5, 0.8, 0.2)
  doc = ast.get_docstring(ast.parse(
      (REPO / "configs" / "relicv2_r50.py").read_text()), clean=False)
  assert "python -m mdssl_jax.main --config=configs/relicv2_r50.py\n" in doc
  assert "77.1%" in doc


def test_r50_variants():
  for arg, arch in (("r200x2", (200, 2.0)), ("r50x4", (50, 4.0)),
                    ("r101", (101, 1.0))):
    c = load_config("relicv2_r50", arg)
    config_lib.validate(c)
    assert (c.model.depth, c.model.width_multiplier) == arch
  c = load_config("relicv2_r50", "r200x2,epochs=300")
  assert c.total_epochs == 300 and c.model.depth == 200
  c = load_config("relicv2_r50", "mask_key=saliency")
  config_lib.validate(c)
  assert c.data.domains[0]["mask_key"] == "saliency"
  c = load_config("relicv2_r50", "tfds_name=my_imagenet")
  assert c.data.domains[0]["tfds_name"] == "my_imagenet"
  with pytest.raises(config_lib.ConfigError, match="at most one"):
    load_config("relicv2_r50", "r200x2,r50x2")
  with pytest.raises(config_lib.ConfigError, match="Unknown config argument"):
    load_config("relicv2_r50", "r18")


@pytest.mark.parametrize("key,value,message", [
    ("kl_mode_small", "reverse", "only 'transpose'"),
    ("kl_mode_large", "forward", "kl_mode_large='forward'"),
    ("num_negatives", 16, r"num_negatives=16 .*\[1, global batch − 1 = 15\]"),
    ("temperature", 0.0, "temperature must be > 0"),
])
def test_bad_method_args_fail_at_startup(key, value, message):
  c = tiny_relic_config()
  c.method_args[key] = value
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(c)


def test_r50_without_imagenet_fails_at_startup_with_build_command(tmp_path):
  c = load_config("relicv2_r50")
  c.data.data_dir = str(tmp_path)
  config_lib.validate(c)  # The config itself is fine ...
  with pytest.raises(sources.DatasetNotFoundError,
                     match=re.escape(f"tfds build imagenet2012 --data_dir="
                                     f"{tmp_path}")):
    sources.load_domains(c.data)  # ... the data are missing.


def test_headline_command_prints_workdir_then_asks_for_imagenet(tmp_path):
  """`python -m mdssl_jax.main --config=configs/relicv2_r50.py`, verbatim."""
  (tmp_path / "configs").symlink_to(REPO / "configs")
  empty = tmp_path / "tfds"
  empty.mkdir()
  env = dict(os.environ, TFDS_DATA_DIR=str(empty), TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run(
      [sys.executable, "-m", "mdssl_jax.main",
       "--config=configs/relicv2_r50.py"],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
      check=False)
  assert proc.returncode == 1, proc.stderr[-3000:]
  match = re.search(r"workdir: (runs/relicv2_r50/\d{8}-\d{6})", proc.stdout)
  assert match, proc.stdout
  # Removed again: the run created it and failed before writing anything.
  assert not (tmp_path / match.group(1)).exists()
  assert f"tfds build imagenet2012 --data_dir={empty}" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_demo_config_runs_offline_with_masks():
  for arg in ("demo", "demo,tiny"):
    c = load_config("relicv2_r50", arg)
    config_lib.validate(c)
    assert c.method == "relicv2"
    assert (c.views.large.count, c.views.large.size) == (4, 32)
    assert (c.views.small.count, c.views.small.size) == (2, 16)
    assert {d["source"] for d in c.data.domains} == {"demo"}
    assert "textures" in [d["demo_name"] for d in c.data.domains]
    assert c.saliency.prob > 0


def test_shared_config(shared_data):
  c = load_config("relicv2_r50", f"shared,shared_dir={shared_data}")
  config_lib.validate(c)
  assert (c.views.large.count, c.views.small.count) == (4, 2)
  assert [d["path"] for d in c.data.domains] == [
      str(shared_data / n) for n in presets.SHARED_DOMAINS]
  c = load_config("relicv2_r50", f"shared,shared_dir={shared_data},"
                  "domains=cifar10+tinyimagenet")
  assert [d["name"] for d in c.data.domains] == ["cifar10", "tinyimagenet"]


def test_shared_config_rejects_unknown_domain():
  with pytest.raises(config_lib.ConfigError, match="unknown domains"):
    load_config("relicv2_r50", "shared,domains=cifar10+imagenet")


# ---- A real (short) run ------------------------------------------------------


def test_short_run_loss_falls_and_knn_beats_chance(run):
  losses = np.array([r["loss"] for r in run.log])
  assert [r["step"] for r in run.log] == list(range(1, RUN_STEPS + 1))
  assert np.all(np.isfinite(losses))
  assert losses[-8:].mean() < losses[:8].mean() - 0.3, losses
  taus = np.array([r["tau"] for r in run.log])
  assert taus[0] == pytest.approx(0.9) and np.all(np.diff(taus) >= 0)
  # 40 steps of a width-1/16 net at 16 px: clearly above chance on average
  # and on digits; 16 px textures are hard, so only "not below chance".
  domains = run.results["domains"]
  mean = run.results["mean"]
  assert mean["knn_top1"] > 2.5 * mean["chance"], mean
  assert domains["digits"]["knn_top1"] > 3 * domains["digits"]["chance"]
  for name, r in domains.items():
    assert r["knn_top1"] >= r["chance"], (name, r)


def test_masked_views_reach_the_step(run, tiny):
  assert len(run.consumed) == RUN_STEPS
  assert any(re.search(r"Saliency masking ON .*textures", m)
             for m in run.messages), run.messages
  # The trainer got masked large views: the same steps without masking
  # differ only in large views of textures images whose mask covers ≥ 5%
  # (and < 100%) of the image; digits rows and every small view are equal.
  config = tiny_relic_config()
  config.saliency.prob = 0.0
  coverage = (tiny.domains[1].train_masks > 0.5).mean(axis=(1, 2))
  maskable = changed = 0
  for step in (0, 1, RUN_STEPS - 1):
    plain = next(pipeline.make_train_iterator(config, tiny.domains,
                                              start_step=step))
    got = run.consumed[step]
    np.testing.assert_array_equal(got["index"], plain["index"])
    np.testing.assert_array_equal(got["small"], plain["small"])
    for row, dom in enumerate(got["domain"]):
      cov = coverage[got["index"][row]] if dom == 1 else 0.0
      diff = [not np.array_equal(got["large"][row, v], plain["large"][row, v])
              for v in range(LARGE)]
      if 0.05 <= cov < 1.0:
        maskable += LARGE
        changed += sum(diff)
      else:
        assert not any(diff), (step, row, cov)
  # A crop that falls entirely inside the foreground hides the mask, so
  # not every masked view differs; most must.
  assert maskable >= 3 * PER_DOMAIN * LARGE
  assert changed >= 0.75 * maskable, (changed, maskable)


def test_no_mask_source_turns_the_stage_off_and_says_so(tiny, caplog):
  config = tiny_relic_config()
  config.saliency.prob = 1.0
  caplog.set_level("INFO")
  batch = next(pipeline.make_train_iterator(config, tiny.domains[:1],
                                            start_step=0))
  assert re.search(r"Saliency masking OFF", caplog.text)
  assert batch["large"].shape[1] == LARGE
