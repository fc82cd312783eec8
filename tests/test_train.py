"""The shared trainer: sharding, resume, non-finite guard, a real short run."""

import functools
import json
import os

import jax
import numpy as np
import pytest

from mdssl_jax import checkpoint as ckpt_lib
from mdssl_jax import config_lib
from mdssl_jax import presets
from mdssl_jax import sharding as sharding_lib
from mdssl_jax import train
from mdssl_jax.data import pipeline, sources


def tiny_config(method="mdssl", steps=6):
  c = config_lib.get_default_config(method)
  presets.tiny_test_config(c, steps=steps)
  c.optim.base_lr = 0.5
  c.checkpoint.every_steps = 3
  c.eval.probe_steps = 100
  return c


def _loss_on_mesh(config, num_devices):
  mesh = sharding_lib.make_mesh(num_devices)
  domains = sources.load_domains(config.data)
  setup = train.build_setup(config, domains)
  rep = sharding_lib.replicated(mesh)
  state = jax.jit(functools.partial(train.init_state, setup, config),
                  out_shardings=rep)()
  batch = next(pipeline.make_train_iterator(config, domains, start_step=0))
  batch = jax.device_put(batch, sharding_lib.batch_sharding(mesh))
  step = jax.jit(functools.partial(train.train_step, setup=setup),
                 out_shardings=(rep, rep))
  state, m1 = step(state, batch)
  _, m2 = step(state, batch)
  return np.array([float(m1["loss"]), float(m2["loss"])])


@pytest.mark.parametrize("method", ["mdssl", "simclr"])
def test_one_vs_eight_devices_same_loss(method):
  assert jax.device_count() == 8, "conftest forces 8 CPU devices"
  config = tiny_config(method)
  one = _loss_on_mesh(config, 1)
  eight = _loss_on_mesh(config, 8)
  np.testing.assert_allclose(one, eight, rtol=1e-4, atol=1e-4)


def _params(workdir, config):
  domains = sources.load_domains(config.data)
  setup = train.build_setup(config, domains)
  abstract = jax.eval_shape(functools.partial(train.init_state, setup,
                                              config))
  with ckpt_lib.Checkpointer(workdir, async_save=False) as ck:
    return ck.restore(abstract)


def test_killed_and_resumed_run_matches_uninterrupted(tmp_path):
  config = tiny_config(steps=6)
  config.mesh_shape = 1
  full = str(tmp_path / "full")
  parts = str(tmp_path / "parts")
  train.train_and_evaluate(config, full)
  first = train.train_and_evaluate(config, parts, max_steps_this_run=4)
  assert int(first.step) == 4
  with ckpt_lib.Checkpointer(parts, async_save=False) as ck:
    assert ck.latest_step() == 4
  train.train_and_evaluate(config, parts)  # Resumes at 4, ends at 6.
  a, meta = _params(full, config)
  b, _ = _params(parts, config)
  assert int(a.step) == int(b.step) == 6 and meta["step"] == 6
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6,
                                                       atol=1e-7),
               (a.params, a.batch_stats, a.opt_state),
               (b.params, b.batch_stats, b.opt_state))
  log = [json.loads(l) for l in open(os.path.join(parts, "metrics.jsonl"))]
  assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  config = tiny_config(steps=12)
  config.mesh_shape = 1
  config.optim.name = "sgd"
  config.optim.warmup_steps = 3
  config.optim.base_lr = 1e30  # lr(0) = 0, then a blow-up at step 2.
  config.checkpoint.every_steps = 1
  workdir = str(tmp_path / "nan")
  with pytest.raises(train.NonFiniteLossError, match="last good checkpoint"):
    train.train_and_evaluate(config, workdir)
  with ckpt_lib.Checkpointer(workdir, async_save=False) as ck:
    steps = ck.all_steps()
  assert steps and max(steps) < 12
  state, _ = _params(workdir, config)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.params))


def test_corrupt_checkpoint_gives_clear_error_and_deletes_nothing(tmp_path):
  config = tiny_config(steps=3)
  config.mesh_shape = 1
  workdir = str(tmp_path / "corrupt")
  train.train_and_evaluate(config, workdir)
  ck_dir = os.path.join(workdir, "checkpoints", "3")
  for root, _, files in os.walk(ck_dir):
    for f in files:
      if "state" in root and not f.startswith("_"):
        with open(os.path.join(root, f), "wb") as fh:
          fh.write(b"garbage")
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  with pytest.raises(ckpt_lib.CheckpointError, match="corrupt"):
    train.train_and_evaluate(config, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before
