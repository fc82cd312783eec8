"""Tests for mdssl_jax.models.fast_conv (FastConv, conv_kernel_grad)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdssl_jax.models import fast_conv
from mdssl_jax.models.fast_conv import FastConv

@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
  """These tests compile ~100 tiny programs; skip XLA's slow optimisations.

  Both sides of every comparison are compiled the same way, and the
  numerics under test (the GEMM kernel gradient) do not depend on them.
  """
  old = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


# (kernel, stride, padding, spatial size, batch): every (kernel, stride,
# padding) combination a ResNet uses (symmetric k // 2) plus TF-style
# "SAME"/"VALID", odd and even sizes, batch 1..8.
_CASES = [
    (1, 1, "resnet", 8, 2), (1, 2, "resnet", 9, 1), (1, 2, "SAME", 8, 3),
    (3, 1, "resnet", 8, 2), (3, 1, "resnet", 9, 8), (3, 1, "SAME", 7, 1),
    (3, 2, "resnet", 8, 2), (3, 2, "resnet", 9, 1), (3, 2, "SAME", 8, 4),
    (3, 2, "VALID", 9, 2), (7, 2, "resnet", 9, 2), (7, 2, "resnet", 10, 1),
    (7, 2, "SAME", 8, 2), (7, 1, "VALID", 9, 1),
]


def _padding(pad, k):
  return ((k // 2, k // 2), (k // 2, k // 2)) if pad == "resnet" else pad


def _rel_close(actual, desired, rtol=1e-4):
  """|a - d| <= rtol · max|d| elementwise (float32 sums of many terms)."""
  actual, desired = np.asarray(actual), np.asarray(desired)
  assert actual.shape == desired.shape
  scale = max(float(np.max(np.abs(desired))), 1e-30)
  np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale)


def _both(features, k, s, pad, **kw):
  args = dict(features=features, kernel_size=(k, k), strides=(s, s),
              padding=_padding(pad, k), **kw)
  return nn.Conv(**args), FastConv(kernel_grad="gemm", **args)


def _numpy_kernel_grad(x, dy, k, s, pads):
  """float64 loops: dW[i,j,c,o] = Σ x_pad[n, s·h+i, s·w+j, c] dY[n,h,w,o]."""
  x = np.asarray(x, np.float64)
  dy = np.asarray(dy, np.float64)
  (pt, pb), (pl, pr) = pads
  xp = np.pad(x, ((0, 0), (max(pt, 0), max(pb, 0)), (max(pl, 0), max(pr, 0)),
                  (0, 0)))
  xp = xp[:, max(-pt, 0):xp.shape[1] - max(-pb, 0),
          max(-pl, 0):xp.shape[2] - max(-pr, 0)]  # Negative pads crop.
  _, ho, wo, f = dy.shape
  out = np.zeros((k, k, x.shape[-1], f))
  for i in range(k):
    for j in range(k):
      for h in range(ho):
        for w in range(wo):
          out[i, j] += xp[:, s * h + i, s * w + j, :].T @ dy[:, h, w, :]
  return out


def _forward_and_grads(module, params, x, g):
  """jit: (y, d params, d x) of Σ module(x) · g."""
  def fn(params, x):
    y, vjp = jax.vjp(module.apply, params, x)
    return (y,) + vjp(g)
  return jax.jit(fn)(params, x)


def _check_against_nn_conv(kw, x, kernel_grad="auto", exact_grads=False):
  ref, fast = nn.Conv(**kw), FastConv(kernel_grad=kernel_grad, **kw)
  params = ref.init(jax.random.PRNGKey(1), x)
  g = jax.random.normal(jax.random.PRNGKey(2),
                        jax.eval_shape(ref.apply, params, x).shape)
  y_ref, gp_ref, gx_ref = _forward_and_grads(ref, params, x, g)
  y_fast, gp_fast, gx_fast = _forward_and_grads(fast, params, x, g)
  np.testing.assert_array_equal(y_fast, y_ref)  # Same XLA convolution.
  np.testing.assert_array_equal(gx_fast, gx_ref)  # Same XLA input grad.
  for name in gp_ref["params"]:
    if exact_grads:
      np.testing.assert_array_equal(gp_fast["params"][name],
                                    gp_ref["params"][name])
    else:
      _rel_close(gp_fast["params"][name], gp_ref["params"][name])


@pytest.mark.parametrize("k,s,pad,hw,batch", _CASES)
def test_gemm_kernel_grad_matches_nn_conv(k, s, pad, hw, batch):
  x = jax.random.normal(jax.random.PRNGKey(0), (batch, hw, hw, 3))
  _check_against_nn_conv(
      dict(features=5, kernel_size=(k, k), strides=(s, s),
           padding=_padding(pad, k)), x, kernel_grad="gemm")


@pytest.mark.parametrize("k,s,hw,c", [
    (3, 1, 8, 24),     # tap shifting
    (3, 2, 9, 32),     # strided: im2col
    (3, 1, 16, 3),     # 3-channel stem: im2col (9 stacked columns)
    (3, 1, 4, 32),     # 4 rows: im2col
    (1, 2, 4, 4),      # 1×1
])
def test_auto_mode_is_the_gemm_kernel_grad(k, s, hw, c):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, hw, hw, c))
  conv = dict(features=4, kernel_size=(k, k), strides=(s, s),
              padding=_padding("resnet", k))
  grads = {}
  for mode in ("auto", "gemm"):
    model = FastConv(**conv, kernel_grad=mode)
    params = model.init(jax.random.PRNGKey(1), x)
    grads[mode] = jax.jit(jax.grad(
        lambda p, x_, m=model: jnp.sum(jnp.sin(m.apply(p, x_))),
        argnums=(0, 1)))(params, x)
  jax.tree.map(np.testing.assert_array_equal, grads["auto"], grads["gemm"])
  _check_against_nn_conv(conv, x)


def test_xla_mode_is_exactly_nn_conv():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 32))
  _check_against_nn_conv(
      dict(features=4, kernel_size=(3, 3), padding=((1, 1), (1, 1))), x,
      kernel_grad="xla", exact_grads=True)


@pytest.mark.parametrize(
    "n,hw,c,f,k,s,pads",
    [
        (2, 10, 24, 4, 3, 1, ((1, 1), (1, 1))),  # tap shifting (Ho >= 8)
        (3, 9, 32, 3, 3, 1, ((0, 2), (2, 0))),   # shifting, asymmetric pads
        (1, 12, 16, 2, 5, 1, ((2, 2), (2, 2))),  # 5×5 shifting
        (2, 10, 3, 4, 3, 1, ((1, 1), (1, 1))),   # narrow (RGB): im2col
        (2, 6, 3, 5, 3, 1, ((1, 1), (1, 1))),    # small map: im2col
        (2, 9, 3, 4, 3, 2, ((1, 1), (1, 1))),    # strided im2col
        (2, 8, 3, 4, 3, 2, ((0, 1), (0, 1))),    # TF "SAME", stride 2
        (2, 7, 3, 4, 1, 2, ((0, 0), (0, 0))),    # 1×1 shortcut
        (1, 11, 2, 3, 7, 2, ((3, 3), (3, 3))),   # ImageNet stem
        (2, 10, 3, 2, 3, 1, ((-1, 0), (0, -1))),  # negative pads crop
    ])
def test_kernel_grad_matches_numpy_reference(n, hw, c, f, k, s, pads):
  kx, kd = jax.random.split(jax.random.PRNGKey(3))
  x = jax.random.normal(kx, (n, hw, hw, c))
  (pt, pb), (pl, pr) = pads
  ho = (hw + pt + pb - k) // s + 1
  wo = (hw + pl + pr - k) // s + 1
  dy = jax.random.normal(kd, (n, ho, wo, f))
  got = jax.jit(lambda x, dy: fast_conv.conv_kernel_grad(
      x, dy, kernel_hw=(k, k), strides=(s, s), padding=pads))(x, dy)
  assert got.shape == (k, k, c, f) and got.dtype == jnp.float32
  _rel_close(got, _numpy_kernel_grad(x, dy, k, s, pads), rtol=1e-5)


def test_parameters_are_interchangeable_with_nn_conv():
  x = jnp.ones((1, 8, 8, 3))
  ref, fast = _both(4, 3, 1, "resnet")
  p_ref = ref.init(jax.random.PRNGKey(0), x)
  p_fast = fast.init(jax.random.PRNGKey(0), x)
  assert jax.tree.map(jnp.shape, p_ref) == jax.tree.map(jnp.shape, p_fast)
  # Same default initialisers, same rng -> same parameters.
  jax.tree.map(np.testing.assert_array_equal, p_ref, p_fast)
  ref_nb, fast_nb = _both(4, 3, 1, "resnet", use_bias=False)
  assert set(fast_nb.init(jax.random.PRNGKey(0), x)["params"]) == {"kernel"}
  assert set(ref_nb.init(jax.random.PRNGKey(0), x)["params"]) == {"kernel"}


@pytest.mark.parametrize("shape", [(2, 3, 8, 8, 3), (8, 8, 3)])
def test_batch_dims_like_nn_conv(shape):
  ref, fast = _both(4, 3, 2, "resnet")
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  params = ref.init(jax.random.PRNGKey(1), x)
  y = fast.apply(params, x)
  np.testing.assert_array_equal(y, ref.apply(params, x))
  gk = lambda m: jax.grad(lambda p: jnp.sum(m.apply(p, x) ** 2))(params)
  _rel_close(gk(fast)["params"]["kernel"], gk(ref)["params"]["kernel"])


@pytest.mark.parametrize("padding", ["CIRCULAR", "REFLECT", 1, (1, (2, 0))])
def test_other_padding_forms_match_nn_conv(padding):
  args = dict(features=3, kernel_size=(3, 3), padding=padding)
  ref, fast = nn.Conv(**args), FastConv(kernel_grad="gemm", **args)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 9, 2))
  params = ref.init(jax.random.PRNGKey(1), x)
  np.testing.assert_array_equal(fast.apply(params, x), ref.apply(params, x))
  gk = lambda m: jax.grad(lambda p: jnp.sum(jnp.sin(m.apply(p, x))))(params)
  _rel_close(gk(fast)["params"]["kernel"], gk(ref)["params"]["kernel"])


def test_bfloat16_compute():
  ref, fast = _both(8, 3, 1, "resnet", dtype=jnp.bfloat16, use_bias=False)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 4))
  params = ref.init(jax.random.PRNGKey(1), x)
  y = fast.apply(params, x)
  assert y.dtype == jnp.bfloat16
  loss = lambda m: lambda p: jnp.sum(m.apply(p, x).astype(jnp.float32) ** 2)
  g_fast = jax.jit(jax.grad(loss(fast)))(params)["params"]["kernel"]
  g_ref = jax.grad(loss(ref))(params)["params"]["kernel"]
  assert g_fast.dtype == jnp.float32  # param_dtype
  assert np.all(np.isfinite(g_fast))
  _rel_close(g_fast, g_ref, rtol=3e-2)  # bf16 inputs, fp32 accumulation.


def test_gradient_finite_for_zero_input():
  fast = FastConv(4, (3, 3), kernel_grad="gemm")
  x = jnp.zeros((1, 8, 8, 2))
  params = fast.init(jax.random.PRNGKey(0), x)
  g = jax.grad(lambda p, x: jnp.sum(fast.apply(p, x)), argnums=(0, 1))(
      params, x)
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(g))
  np.testing.assert_array_equal(g[0]["params"]["kernel"], 0.0)


def test_get_conv():
  assert fast_conv.get_conv("xla") is nn.Conv
  assert fast_conv.get_conv("matmul") is FastConv
  expected = FastConv if jax.default_backend() == "cpu" else nn.Conv
  assert fast_conv.get_conv("auto") is expected
  with pytest.raises(ValueError, match="conv_impl"):
    fast_conv.get_conv("cudnn")


@pytest.mark.parametrize("kwargs,shape,match", [
    (dict(kernel_size=(3, 3, 3)), (1, 8, 8, 2), "kernel_size"),
    (dict(kernel_size=(3, 3), padding="CAUSAL"), (1, 8, 8, 2), "padding"),
    (dict(kernel_size=(3, 3), padding=((1, 1),)), (1, 8, 8, 2), "padding"),
    (dict(kernel_size=(3, 3)), (8, 2), "H, W, C"),
    (dict(kernel_size=(3, 3), strides=0), (1, 8, 8, 2), "strides"),
    (dict(kernel_size=(3, 3), kernel_grad="fast"), (1, 8, 8, 2),
     "kernel_grad"),
])
def test_bad_arguments_raise(kwargs, shape, match):
  with pytest.raises(ValueError, match=match):
    FastConv(4, **kwargs).init(jax.random.PRNGKey(0), jnp.ones(shape))


def test_resnet_stack_matches_nn_conv():
  resnet = pytest.importorskip("mdssl_jax.models.resnet")
  # Stages at 16² and 8² (GEMM kernel gradients under "auto", including
  # the strided 3×3 and the 1×1 shortcut) after a 3-channel stem (XLA's),
  # with BatchNorm in train mode.
  kw = dict(stage_sizes=(1, 1), block="basic", width_multiplier=0.5,
            stem="cifar")
  ref = resnet.ResNet(**kw)
  fast = resnet.ResNet(conv=FastConv, **kw)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
  variables = ref.init(jax.random.PRNGKey(1), x, train=False)
  assert (jax.tree.map(jnp.shape, variables) == jax.tree.map(
      jnp.shape, fast.init(jax.random.PRNGKey(1), x, train=False)))

  def loss(model):
    def fn(params, x):
      (feats, _), _ = model.apply(
          {**variables, "params": params}, x, train=True,
          mutable=["batch_stats"])
      return jnp.sum(jnp.tanh(feats))
    return jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))

  (l_ref, (gp_ref, gx_ref)) = loss(ref)(variables["params"], x)
  (l_fast, (gp_fast, gx_fast)) = loss(fast)(variables["params"], x)
  np.testing.assert_allclose(l_fast, l_ref, rtol=1e-5)
  _rel_close(gx_fast, gx_ref, rtol=1e-3)
  flat_ref = jax.tree_util.tree_leaves_with_path(gp_ref)
  flat_fast = jax.tree.leaves(gp_fast)
  for (path, g_ref), g_fast in zip(flat_ref, flat_fast):
    # BatchNorm in train mode amplifies float32 rounding a little.
    try:
      _rel_close(g_fast, g_ref, rtol=1e-3)
    except AssertionError as e:
      raise AssertionError(f"gradient mismatch at {path}") from e


def test_data_parallel_sharding_matches_single_device():
  devices = jax.devices()
  if len(devices) < 2:
    pytest.skip("needs several (simulated) devices; conftest sets 8")
  mesh = jax.sharding.Mesh(np.array(devices), ("data",))
  batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  fast = FastConv(8, (3, 3), padding=((1, 1), (1, 1)), kernel_grad="gemm")
  x = jax.random.normal(jax.random.PRNGKey(0), (len(devices), 8, 8, 4))
  params = fast.init(jax.random.PRNGKey(1), x)
  grad = jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.sin(fast.apply(p, x)))))
  g_sharded = grad(params, jax.device_put(x, batch))
  g_single = grad(params, x)
  _rel_close(np.asarray(g_sharded["params"]["kernel"]),
             np.asarray(g_single["params"]["kernel"]), rtol=1e-5)
