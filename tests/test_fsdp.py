"""FSDP sharding rules, FSDP vs data-parallel steps, per-process input
shards."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from mdssl_jax import config_lib
from mdssl_jax import presets
from mdssl_jax import sharding as sharding_lib
from mdssl_jax import train
from mdssl_jax.data import pipeline
from mdssl_jax.data import shards as shards_lib
from mdssl_jax.data import sources


# ---- The rules ---------------------------------------------------------------


def test_leaf_spec_rules():
  spec = sharding_lib.leaf_spec
  # Default: the largest axis fsdp divides, above min_size; else replicated.
  assert spec("params/conv/kernel", (3, 3, 64, 128), 4) == P(
      None, None, None, "fsdp")
  assert spec("params/dense/kernel", (512, 6), 4) == P("fsdp", None)
  assert spec("params/dense/bias", (6,), 4) == P()  # 4 does not divide 6.
  assert spec("params/conv/kernel", (3, 3, 64, 128), 4,
              min_size=10 ** 6) == P()
  assert spec("step", (), 4) == P()
  assert spec("params/conv/kernel", (3, 3, 64, 128), 1) == P()
  # Rules win in order: an axis, auto (-1), or None (replicated).
  rules = [("head", None), ("stem/kernel", 2), ("kernel", -1)]
  assert spec("params/head/kernel", (512, 128), 4, rules) == P()
  assert spec("params/stem/kernel", (3, 3, 64, 128), 4, rules) == P(
      None, None, "fsdp", None)
  assert spec("params/x/kernel", (8, 4), 4, rules, min_size=10 ** 6) == P(
      "fsdp", None)
  with pytest.raises(ValueError, match="does not divide"):
    spec("params/stem/kernel", (3, 3, 6, 128), 4, rules)


def tiny(method="byol", **kw):
  c = config_lib.get_default_config(method)
  presets.tiny_test_config(c, **kw)
  for name in c.monitors:
    c.monitors[name].enabled = False
  return c


@pytest.mark.parametrize("fsdp, rules, match", [
    (0, (), "mesh.fsdp=0"),
    (3, (), "does not divide the 8 devices"),
    (1, (("[", 0),), "bad regex"),
    (1, (("kernel", "x"),), "use \\(regex, axis\\)"),
])
def test_mesh_config_errors(fsdp, rules, match):
  c = tiny()
  c.mesh.fsdp = fsdp
  c.mesh.rules = rules
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(c)


@pytest.mark.parametrize("shards, match", [
    (0, "data.input_shards=0"),
    (3, "not divisible by data.input_shards=3"),
])
def test_input_shard_config_errors(shards, match):
  c = tiny()
  c.data.input_shards = shards
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(c)


# ---- FSDP and data-parallel steps agree --------------------------------------


def run_steps(config, steps=3):
  """(losses, final state on the host) of `steps` steps on all 8 devices."""
  mesh = sharding_lib.mesh_from_config(config)
  domains = sources.load_domains(config.data)
  setup = train.build_setup(config, train.run_shape(config, domains))
  placement = train.state_sharding(setup, config, mesh)
  state = train.create_state(setup, config, placement)
  step_fn = train.make_train_step(setup, mesh, placement)
  batches = train.global_batches(
      pipeline.make_train_iterator(config, domains, start_step=0), mesh)
  losses = []
  for _ in range(steps):
    state, metrics = step_fn(state, next(batches))
    losses.append(float(metrics["loss"]))
  return np.array(losses), state


@pytest.fixture(scope="module")
def dp_and_fsdp(fast_compile):
  """BYOL (an EMA target) on 8 devices: pure data parallel vs 2 × 4 FSDP."""
  out = {}
  with fast_compile():
    for fsdp in (1, 4):
      c = tiny()
      c.mesh.fsdp = fsdp
      c.mesh.fsdp_min_size = 256
      config_lib.validate(c)
      out[fsdp] = run_steps(c)
  return out


def test_fsdp_shards_params_optimiser_state_and_target(dp_and_fsdp):
  _, state = dp_and_fsdp[4]
  mesh = jax.tree.leaves(state.params)[0].sharding.mesh
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4}

  def sharded(tree):
    return {sharding_lib.path_name(p): "fsdp" in tuple(x.sharding.spec)
            for p, x in jax.tree_util.tree_leaves_with_path(tree)}
  params = sharded(state.params)
  assert sum(params.values()) >= 5, params
  # Small leaves stay whole.
  assert not any(v for k, v in params.items() if k.endswith("bias"))
  # The EMA target follows the parameters' sharding leaf for leaf.
  target = sharded(state.target_params)
  assert target and all(target[k] == params[k] for k in target)
  # So do the optimiser's moments.
  assert sum(sharded(state.opt_state).values()) >= sum(params.values())


def test_fsdp_and_data_parallel_give_the_same_loss_and_params(dp_and_fsdp):
  (dp_losses, dp), (fsdp_losses, fsdp) = dp_and_fsdp[1], dp_and_fsdp[4]
  assert np.isfinite(dp_losses).all()
  np.testing.assert_allclose(fsdp_losses, dp_losses, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(dp.params), jax.tree.leaves(fsdp.params)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5,
                               atol=1e-5)
  for a, b in zip(jax.tree.leaves(dp.target_params),
                  jax.tree.leaves(fsdp.target_params)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5,
                               atol=1e-5)


# ---- Input shards ------------------------------------------------------------


def test_input_shards_are_disjoint_and_cover_each_domain():
  c = tiny()
  domains = sources.load_domains(c.data)
  total = 4
  parts = [shards_lib.Held.split(domains, total,
                                 shards_lib.held_shards(total, p, 2))
           for p in range(2)]
  assert [sorted(h.domains) for h in parts] == [[0, 1], [2, 3]]
  for k, dom in enumerate(domains):
    rows = lambda x: [r.tobytes() for r in x]
    shard_rows = [rows(h.domains[s][k].train_images)
                  for h in parts for s in h.domains]
    flat = [r for rs in shard_rows for r in rs]
    # Disjoint, and together every training image exactly once.
    assert sorted(flat) == sorted(rows(dom.train_images))
    sizes = [len(rs) for rs in shard_rows]
    assert max(sizes) - min(sizes) <= 1
    for h in parts:
      assert h.domains[min(h.domains)][k].global_num_train == dom.num_train
    # A process's merged rows are its shards' rows, in shard order.
    merged = parts[1].merged()[k]
    assert rows(merged.train_images) == shard_rows[2] + shard_rows[3]
  with pytest.raises(ValueError, match="multiple of 2"):
    shards_lib.held_shards(3, 0, 2)


def test_process_batches_tile_the_one_process_batch():
  """The global batch depends on data.input_shards, not on the number of
  processes: two processes' batches, concatenated, are one process's."""
  c = tiny("mdssl", per_domain_batch=4)
  c.data.input_shards = 2
  domains = sources.load_domains(c.data)

  def batches(process, count, steps=2):
    held = shards_lib.Held.split(
        domains, 2, shards_lib.held_shards(2, process, count))
    it = pipeline.make_train_iterator(c, None, start_step=3, held=held)
    return [next(it) for _ in range(steps)]

  one = batches(0, 1)
  two = [batches(p, 2) for p in range(2)]
  for step in range(2):
    for key in one[step]:
      np.testing.assert_array_equal(
          np.concatenate([two[0][step][key], two[1][step][key]]),
          one[step][key], err_msg=key)
  # Shard-major layout: N/S rows of every domain per shard.
  np.testing.assert_array_equal(one[0]["domain"], [0, 0, 1, 1] * 2)
  # Each shard draws only its own images (global index ≡ shard mod S).
  assert (two[1][0]["index"] % 2 == 1).all()
  assert (two[0][0]["index"] % 2 == 0).all()
