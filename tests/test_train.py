"""The shared trainer: sharding, resume, non-finite guard, checkpoints.

One real 6-step run (`full`, module-scoped) is the reference for the resume,
one-vs-eight-devices, corrupt-checkpoint and `load_for_eval` tests; the
other programs are compiled without most XLA optimisations (a few steps of
a tiny model: compile time is what counts).
"""

import dataclasses
import json
import os
import shutil
import types

import jax
import numpy as np
import pytest

from mdssl_jax import checkpoint as ckpt_lib
from mdssl_jax import config_lib
from mdssl_jax import presets
from mdssl_jax import train
from mdssl_jax.data import sources

STEPS = 6


def tiny_config(method="mdssl", steps=STEPS):
  c = config_lib.get_default_config(method)
  presets.tiny_test_config(c, steps=steps)
  c.optim.base_lr = 0.5
  c.checkpoint.every_steps = 3
  c.mesh_shape = 1
  return c


def read_log(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
  """An uninterrupted STEPS-step MDSSL run on one device."""
  config = tiny_config()
  workdir = str(tmp_path_factory.mktemp("full"))
  state = train.train_and_evaluate(config, workdir)
  return types.SimpleNamespace(config=config, workdir=workdir,
                               state=jax.device_get(state),
                               log=read_log(workdir))


def test_one_vs_eight_devices_same_loss_mdssl(full, first_losses,
                                              fast_compile):
  assert jax.device_count() == 8, "conftest forces 8 CPU devices"
  # One device: the trainer's own log of the same config and batches
  # (batches are a pure function of seed and step).
  one = np.array([r["loss"] for r in full.log[:2]])
  with fast_compile():
    eight = first_losses(full.config, 8)
  np.testing.assert_allclose(one, eight, rtol=1e-4, atol=1e-4)


def test_one_vs_eight_devices_same_loss_simclr(first_losses, fast_compile):
  config = tiny_config("simclr")
  with fast_compile():
    one = first_losses(config, 1)
    eight = first_losses(config, 8)
  np.testing.assert_allclose(one, eight, rtol=1e-4, atol=1e-4)


def _restore(workdir, config, step=None):
  setup, state, _ = train.load_for_eval(config, workdir, step=step)
  return setup, jax.device_get(state)


def test_killed_and_resumed_run_matches_uninterrupted(full, tmp_path):
  parts = str(tmp_path / "parts")
  first = train.train_and_evaluate(full.config, parts, max_steps_this_run=4)
  assert int(first.step) == 4
  with ckpt_lib.Checkpointer(parts, async_save=False) as ck:
    assert ck.latest_step() == 4
  train.train_and_evaluate(full.config, parts)  # Resumes at 4, ends at 6.
  _, b = _restore(parts, full.config)
  a = full.state
  assert int(a.step) == int(b.step) == STEPS
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6,
                                                       atol=1e-7),
               (a.params, a.batch_stats, a.opt_state),
               (b.params, b.batch_stats, b.opt_state))
  assert [r["step"] for r in read_log(parts)] == list(range(1, STEPS + 1))
  np.testing.assert_allclose([r["loss"] for r in read_log(parts)],
                             [r["loss"] for r in full.log], rtol=1e-5)


def test_load_for_eval_restores_the_trained_and_earlier_states(full):
  setup, last = _restore(full.workdir, full.config)
  with pytest.raises(dataclasses.FrozenInstanceError):
    setup.tx = None  # A plain frozen dataclass, built once per run.
  assert setup.shape == config_lib.run_shape(
      full.config, sum(d.num_train for d in sources.load_domains(
          full.config.data)))
  assert setup.shape.total_steps == STEPS
  jax.tree.map(np.testing.assert_array_equal,
               (last.step, last.params, last.opt_state),
               (full.state.step, full.state.params, full.state.opt_state))
  _, mid = _restore(full.workdir, full.config, step=3)
  assert int(mid.step) == 3
  moved = jax.tree.leaves(jax.tree.map(
      lambda x, y: float(np.abs(x - y).max()), mid.params, last.params))
  assert max(moved) > 0
  with ckpt_lib.Checkpointer(full.workdir, async_save=False) as ck:
    _, meta = ck.restore(train.abstract_state(setup, full.config))
  assert meta == {"step": STEPS, "method": "mdssl", "total_steps": STEPS}
  with pytest.raises(ckpt_lib.CheckpointError):
    train.load_for_eval(full.config, full.workdir, step=4)


@pytest.mark.parametrize("every", [1, 1000])
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(
    tmp_path, every, fast_compile):
  config = tiny_config(steps=12)
  config.optim.name = "sgd"
  config.optim.warmup_steps = 3
  config.optim.base_lr = 1e30  # lr(0) = 0, then a blow-up at step 2.
  config.checkpoint.every_steps = every
  workdir = str(tmp_path / "nan")
  with fast_compile(), pytest.raises(train.NonFiniteLossError) as e:
    train.train_and_evaluate(config, workdir)
  message = str(e.value)
  assert "float32" not in message  # The run already is float32.
  if every == 1000:
    assert "no checkpoint was written yet" in message, message
    assert "last good" not in message
    assert os.path.exists(os.path.join(workdir, "metrics.jsonl"))
    assert ckpt_lib.finished_step(workdir) is None
    return
  assert "the last good checkpoint (step 2)" in message, message
  with ckpt_lib.Checkpointer(workdir, async_save=False) as ck:
    assert max(ck.all_steps()) == 2
  _, state = _restore(workdir, config)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.params))


def test_corrupt_checkpoint_gives_clear_error_and_deletes_nothing(full,
                                                                  tmp_path):
  workdir = str(tmp_path / "corrupt")
  shutil.copytree(full.workdir, workdir)
  ck_dir = os.path.join(workdir, "checkpoints", str(STEPS))
  for root, _, files in os.walk(ck_dir):
    for f in files:
      if "state" in root and not f.startswith("_"):
        with open(os.path.join(root, f), "wb") as fh:
          fh.write(b"garbage")
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  with pytest.raises(ckpt_lib.CheckpointError, match="corrupt"):
    train.train_and_evaluate(full.config, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before
