"""BatchNorm batch statistics of the views and of MDSSL's domains (issue #11).

* `model.view_batch_stats`: under "per_view" a view's outputs do not depend
  on the other views (online and EMA-target branch), under "joint" they do;
  "per_group" keeps the large and small groups apart; running averages are
  updated once per pass, sequentially; "joint" is the one-pass computation
  bit for bit; every method's forward passes have the rows its mode says.
* MDSSL `bn_groups` / `encode_domains_separately`: per-domain statistics
  make a domain's projections independent of the other domains; the
  separate (checkpointed) route gives the one-batch route's loss, gradients
  and running averages under per-domain BN, with a smaller compiled
  footprint, and on 8 devices as on one; bad combinations fail at start-up.

The model is a width-1/16 ResNet-18 on 8 px images, with XLA's
optimisations off for this module (compilation dominates).
"""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdssl_jax import config_lib
from mdssl_jax import methods
from mdssl_jax import presets
from mdssl_jax import sharding as sharding_lib
from mdssl_jax.methods import base

SIZE, SMALL_SIZE, PER_DOMAIN = 8, 4, 4
DEMO = ("digits", "textures", "photos")


@pytest.fixture(scope="module", autouse=True)
def _fast_compile():
  old = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


def tiny_config(method, *, num_domains=2, **overrides):
  """Tiny `method` config on `num_domains` demo domains (repeats renamed)."""
  c = config_lib.get_default_config(method)
  presets.tiny_test_config(c, domains=DEMO[:2], per_domain_batch=PER_DOMAIN,
                           image_size=SIZE)
  c.data.domains = [{"name": f"domain{i}", "source": "demo",
                     "demo_name": DEMO[i % len(DEMO)]}
                    for i in range(num_domains)]
  c.views.small.size = SMALL_SIZE
  c.model.conv_impl = "xla"
  c.mesh_shape = 1
  c.update_from_flattened_dict(overrides)
  config_lib.validate(c)
  return c


def build(method, *, num_domains=2, **overrides):
  """A method instance with its initial variables (online and target)."""
  config = tiny_config(method, num_domains=num_domains, **overrides)
  m = methods.get_method(method)(config, total_steps=10)
  rows = len(config.data.domains) * PER_DOMAIN
  params, stats = m.init(jax.random.PRNGKey(0),
                         jnp.zeros((rows, SIZE, SIZE, 3)))
  return types.SimpleNamespace(method=m, params=params, stats=stats,
                               rows=rows)


def images(rows, views, size, seed):
  return jax.random.normal(jax.random.PRNGKey(seed),
                           (rows, views, size, size, 3))


def perturb(x, view):
  """x with view `view` replaced by other images (the rest unchanged)."""
  other = jax.random.normal(jax.random.PRNGKey(99), x[:, view].shape) * 2.0
  return x.at[:, view].set(other)


def max_diff(a, b):
  return float(jnp.max(jnp.abs(a - b)))


@pytest.fixture(scope="module")
def byol_nets():
  return {mode: build("byol", **{"model.view_batch_stats": mode})
          for mode in ("joint", "per_view")}


# ---- view_batch_stats --------------------------------------------------------


@pytest.mark.parametrize("target", [False, True])
def test_per_view_outputs_ignore_the_other_views(byol_nets, target):
  x = images(8, 2, SIZE, seed=0)
  changed = perturb(x, 1)
  for mode, net in byol_nets.items():
    params = net.method.target_subset(net.params) if target else net.params
    stats = net.method.target_subset(net.stats) if target else net.stats
    encode = lambda v: net.method.encode_views(params, stats, v,
                                               target=target)[0]
    a, b = encode(x), encode(changed)
    assert ("pred" in a) != target
    assert max_diff(a["proj"][1], b["proj"][1]) > 1e-2  # View 2 changed.
    if mode == "per_view":
      assert max_diff(a["proj"][0], b["proj"][0]) < 1e-6, (mode, target)
      assert max_diff(a["features"][0], b["features"][0]) < 1e-6
    else:
      assert max_diff(a["proj"][0], b["proj"][0]) > 1e-2, (mode, target)


def test_per_view_updates_running_averages_once_per_view(byol_nets):
  net = byol_nets["per_view"]
  m, x = net.method, images(8, 2, SIZE, seed=1)
  _, stats = m.encode_views(net.params, net.stats, x)
  # The reference: the network called on view 1, then on view 2.
  _, expected = m.forward(net.params, net.stats, x[:, 0])
  _, expected = m.forward(net.params, expected, x[:, 1])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               stats, expected)
  # Not the joint statistics.
  _, joint = byol_nets["joint"].method.encode_views(net.params, net.stats, x)
  diffs = jax.tree.leaves(jax.tree.map(max_diff, stats, joint))
  assert max(diffs) > 1e-3


def test_joint_is_the_one_pass_computation_bit_for_bit(byol_nets):
  net = byol_nets["joint"]
  m, x = net.method, images(8, 2, SIZE, seed=2)
  out, stats = m.encode_views(net.params, net.stats, x)
  rows, expected_stats = m.forward(net.params, net.stats, m.stack_views(x))
  for key, value in rows.items():
    np.testing.assert_array_equal(out[key], m.split_views(value, 2))
  jax.tree.map(np.testing.assert_array_equal, stats, expected_stats)


def test_per_group_keeps_large_and_small_views_apart():
  net = build("dino", **{"views.small.count": 2})
  m = net.method
  assert m.config.model.view_batch_stats == "per_group"  # DINO's default.
  large, small = images(8, 2, SIZE, 3), images(8, 2, SMALL_SIZE, 4)
  for target in (False, True):
    params = m.target_subset(net.params) if target else net.params
    encode = lambda v, p=params: m.encode_views(p, net.stats, v,
                                                target=target)[0]["head"]
    # Within a resolution group the statistics are joint ...
    assert max_diff(encode(large)[0], encode(perturb(large, 1))[0]) > 1e-3
    assert max_diff(encode(small)[0], encode(perturb(small, 1))[0]) > 1e-3
  # ... and the large views' pass never sees the small views: the loss
  # path encodes each group on its own (checked on the traced shapes).
  assert forward_rows("dino", **{"views.small.count": 2}) == {
      ("online", "encoder", SIZE): [16],
      ("online", "encoder", SMALL_SIZE): [16],
      ("online", "heads", None): [32],  # The head sees every crop at once.
      ("target", "all", SIZE): [16]}


def test_per_group_heads_see_every_crop_encoders_one_group():
  large, small = images(8, 2, SIZE, 5), images(8, 2, SMALL_SIZE, 6)
  changed = perturb(small, 0)
  for mode in ("per_group", "joint"):
    net = build("swav", **{"views.small.count": 2,
                           "model.view_batch_stats": mode})
    encode = lambda s, n=net: n.method.encode_multicrop(
        n.params, n.stats, [large, s])[0][0]
    a, b = encode(small), encode(changed)
    # The large views' backbone pass never sees the small views ...
    assert max_diff(a["features"], b["features"]) < 1e-6, mode
    # ... but SwAV's projection head (BatchNorm) sees every crop at once.
    if mode == "per_group":
      assert max_diff(a["proj"], b["proj"]) > 1e-3
    else:
      assert max_diff(a["proj"], b["proj"]) < 1e-6


def forward_rows(method, **overrides):
  """{(branch, stage, image size or None): rows of each forward call}.

  Recorded while tracing `method.loss` (abstract shapes, nothing runs).
  """
  net = build(method, **overrides)
  m, rows = net.method, net.rows
  calls = {}
  original = m.forward

  def recording(params, stats, x, **kw):
    stage = kw.get("stage", "all")
    key = ("target" if kw.get("target") else "online", stage,
           None if stage == "heads" else x.shape[1])
    calls.setdefault(key, []).append(x.shape[0])
    return original(params, stats, x, **kw)

  m.forward = recording
  c = m.config
  batch = {"large": jnp.zeros((rows, c.views.large.count, SIZE, SIZE, 3)),
           "domain": jnp.repeat(jnp.arange(len(c.data.domains)), PER_DOMAIN),
           "label": jnp.zeros((rows,), jnp.int32)}
  if c.views.small.count:
    batch["small"] = jnp.zeros((rows, c.views.small.count, SMALL_SIZE,
                                SMALL_SIZE, 3))
  target = m.target_subset(net.params) if m.has_target else {}
  target_stats = m.target_subset(net.stats) if m.has_target else {}
  inputs = base.StepInputs(
      params=net.params, batch_stats=net.stats, target_params=target,
      target_batch_stats=target_stats, buffers=m.init_buffers(), batch=batch,
      rng=jax.random.PRNGKey(0), step=jnp.zeros((), jnp.int32))
  jax.eval_shape(lambda: m.loss(inputs))
  return calls


# Views per method in forward_rows (large, small); DINO and SwAV multi-crop.
VIEWS = {"relicv2": (4, 2), "msbreg": (4, 0), "dino": (2, 2), "swav": (2, 2)}


@pytest.mark.parametrize("method", sorted(config_lib.VIEW_BATCH_STATS))
def test_every_method_encodes_as_its_default_mode_says(method):
  large, small = VIEWS.get(method, (2, 0))
  overrides = {"views.large.count": large, "views.small.count": small}
  if method == "relicv2":  # Fewer negatives than the tiny batch.
    overrides["method_args.num_negatives"] = 3
  calls = forward_rows(method, **overrides)
  mode = config_lib.VIEW_BATCH_STATS[method]
  assert tiny_config(method, **overrides).model.view_batch_stats == mode
  rows = 2 * PER_DOMAIN  # One view's rows.
  per = lambda v: [rows] * v if mode == "per_view" else [v * rows]
  if mode == "per_group" and small:  # MultiCropWrapper.
    expected = {("online", "encoder", SIZE): [large * rows],
                ("online", "encoder", SMALL_SIZE): [small * rows],
                ("online", "heads", None): [(large + small) * rows]}
  else:
    expected = {("online", "all", SIZE): per(large)}
    if small:
      expected["online", "all", SMALL_SIZE] = per(small)
  if methods.get_method(method).has_target:
    expected["target", "all", SIZE] = per(large)
  assert calls == expected, mode


def test_bad_view_batch_stats_fails_at_startup():
  with pytest.raises(config_lib.ConfigError, match="view_batch_stats"):
    tiny_config("byol", **{"model.view_batch_stats": "per_crop"})


# ---- MDSSL: BN groups and separate encoding -------------------------------


def mdssl_inputs(net, seed=5, large=None):
  rows = net.rows
  large = images(rows, 2, SIZE, seed) if large is None else large
  batch = {"large": large,
           "domain": jnp.repeat(jnp.arange(rows // PER_DOMAIN), PER_DOMAIN)}
  return base.StepInputs(
      params=net.params, batch_stats=net.stats, target_params={},
      target_batch_stats={}, buffers={}, batch=batch,
      rng=jax.random.PRNGKey(0), step=jnp.zeros((), jnp.int32))


def loss_and_grads(net, inputs):
  def objective(params):
    return net.method.loss(dataclass_replace(inputs, params=params))
  (loss, aux), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(
      inputs.params)
  return loss, grads, aux.batch_stats


def dataclass_replace(inputs, **kw):
  return base.StepInputs(**{**inputs.__dict__, **kw})


@pytest.fixture(scope="module")
def mdssl_nets():
  nets = {}
  for name, groups, separate in (("global", "global", False),
                                 ("per_domain", "per_domain", False),
                                 ("separate", "auto", True)):
    nets[name] = build("mdssl", **{
        "method_args.bn_groups": groups,
        "method_args.encode_domains_separately": separate})
  return nets


def test_per_domain_projections_ignore_the_other_domains(mdssl_nets):
  for name, net in mdssl_nets.items():
    inputs = mdssl_inputs(net)
    changed = inputs.batch["large"].at[PER_DOMAIN:].multiply(-3.0)
    z1, z2, _ = net.method.projections(inputs)
    c1, c2, _ = net.method.projections(
        mdssl_inputs(net, large=changed))
    assert max_diff(z1[PER_DOMAIN:], c1[PER_DOMAIN:]) > 1e-2
    first = max(max_diff(z1[:PER_DOMAIN], c1[:PER_DOMAIN]),
                max_diff(z2[:PER_DOMAIN], c2[:PER_DOMAIN]))
    if name == "global":
      assert first > 1e-2, name
    else:
      assert first < 1e-6, name


def test_per_domain_statistics_are_over_each_domains_two_views(mdssl_nets):
  net = mdssl_nets["per_domain"]
  m, inputs = net.method, mdssl_inputs(net)
  z1, z2, _ = m.projections(inputs)
  # Domain 1 alone, both views in one pass: its 2N rows.
  dom = inputs.batch["large"][PER_DOMAIN:]
  out, _ = m.forward(net.params, net.stats, m.stack_views(dom))
  np.testing.assert_allclose(out["proj"][:PER_DOMAIN], z1[PER_DOMAIN:],
                             atol=1e-5)
  np.testing.assert_allclose(out["proj"][PER_DOMAIN:], z2[PER_DOMAIN:],
                             atol=1e-5)


def test_global_bn_is_the_simclr_pass_bit_for_bit(mdssl_nets):
  net = mdssl_nets["global"]
  inputs = mdssl_inputs(net)
  z1, z2, stats = net.method.projections(inputs)
  rows, expected = net.method.forward(
      net.params, net.stats, net.method.stack_views(inputs.batch["large"]))
  np.testing.assert_array_equal(jnp.stack([z1, z2]),
                                net.method.split_views(rows["proj"], 2))
  jax.tree.map(np.testing.assert_array_equal, stats, expected)


def test_separate_encoding_equals_one_batch_under_per_domain_bn(mdssl_nets):
  one = mdssl_nets["per_domain"]
  sep = mdssl_nets["separate"]
  assert sep.method.bn_per_domain()  # "auto" with separate encoding.
  inputs = mdssl_inputs(one)
  loss_a, grads_a, stats_a = loss_and_grads(one, inputs)
  loss_b, grads_b, stats_b = loss_and_grads(sep, inputs)
  np.testing.assert_allclose(loss_a, loss_b, rtol=1e-5, atol=1e-5)
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  jax.tree.map(close, grads_a, grads_b)
  jax.tree.map(close, stats_a, stats_b)
  # The global route is a different model.
  loss_g, _, _ = loss_and_grads(mdssl_nets["global"], inputs)
  assert abs(float(loss_g) - float(loss_a)) > 1e-4


def test_separate_encoding_has_a_smaller_compiled_footprint():
  temp = {}
  for separate in (False, True):
    net = build("mdssl", num_domains=4,
                **{"method_args.bn_groups": "per_domain",
                   "method_args.encode_domains_separately": separate})
    inputs = mdssl_inputs(net)
    grad = jax.jit(jax.grad(
        lambda p, i=inputs, m=net.method: m.loss(
            dataclass_replace(i, params=p))[0]))
    temp[separate] = grad.lower(inputs.params).compile().memory_analysis(
    ).temp_size_in_bytes
  assert temp[True] < 0.75 * temp[False], temp


@pytest.mark.parametrize("overrides, message", [
    ({"method_args.bn_groups": "per_dataset"}, "bn_groups"),
    ({"method_args.bn_groups": "global",
      "method_args.encode_domains_separately": True}, "per_domain"),
])
def test_bad_mdssl_bn_settings_fail_at_startup(overrides, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    tiny_config("mdssl", **overrides)


def test_separate_encoding_on_eight_devices_matches_one(mdssl_nets):
  net = mdssl_nets["separate"]
  inputs = mdssl_inputs(net)
  mesh = sharding_lib.make_mesh(8)
  loss_of = lambda batch: net.method.loss(
      dataclass_replace(inputs, batch=batch))[0]
  sharded = jax.jit(loss_of,
                    in_shardings=(sharding_lib.batch_sharding(mesh),))
  np.testing.assert_allclose(sharded(inputs.batch),
                             jax.jit(loss_of)(inputs.batch), rtol=1e-5)
