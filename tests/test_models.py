"""Tests for mdssl_jax.models (ResNet encoders and heads).

Numerics are checked against independent float64 NumPy re-implementations
(loops over kernel taps, explicit BatchNorm/GroupNorm/LayerNorm formulas).
Full-width models are only traced (`jax.eval_shape`), never allocated.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from mdssl_jax import models
from mdssl_jax.models import heads as heads_lib
from mdssl_jax.models import resnet as resnet_lib


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
  # Tiny models: compile time dominates, and these flags only affect speed.
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


_JITTED = {}


def _jitted(model, kind):
  """One jitted init/apply per (module, kind): compiles are the cost here."""
  key = (model, kind)
  if key not in _JITTED:
    if kind == "init":
      _JITTED[key] = jax.jit(model.init, static_argnames="train")
    else:
      _JITTED[key] = jax.jit(model.apply, static_argnames=("train", "mutable"))
  return _JITTED[key]


def _init(model, x):
  return _jitted(model, "init")(jax.random.key(0), x, train=False)


def _apply(model, variables, x, train):
  fn = _jitted(model, "apply")
  if train and "batch_stats" in variables:
    return fn(variables, x, train=True, mutable=("batch_stats",))
  return fn(variables, x, train=train)


def _shapes(model, x):
  """(variables, outputs) shape trees without allocating or compiling."""
  def f():
    v = model.init(jax.random.key(0), x, train=False)
    return v, model.apply(v, x, train=False)
  return jax.eval_shape(f)


def _randn(seed, shape):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape),
                     jnp.float32)


def _num_params(tree) -> int:
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def _randomize(variables, seed=0):
  """Random BN/GN affine params and running stats (positive variances)."""
  rng = np.random.default_rng(seed)
  def leaf(path, a):
    name = path[-1].key
    if name == "kernel":
      return a
    if name == "var":
      return jnp.asarray(rng.uniform(0.5, 2.0, a.shape), jnp.float32)
    if name == "scale":
      return jnp.asarray(rng.uniform(0.5, 1.5, a.shape), jnp.float32)
    return jnp.asarray(rng.normal(0.0, 0.3, a.shape), jnp.float32)
  return jax.tree_util.tree_map_with_path(leaf, variables)


# ----------------------------------------------------------------------------
# Independent NumPy reference for the ResNet forward pass (float64).


def _np_conv(x, k, stride):
  kh, kw = k.shape[:2]
  ph, pw = kh // 2, kw // 2
  xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  ho = (x.shape[1] + 2 * ph - kh) // stride + 1
  wo = (x.shape[2] + 2 * pw - kw) // stride + 1
  out = np.zeros((x.shape[0], ho, wo, k.shape[3]))
  for dy in range(kh):
    for dx in range(kw):
      patch = xp[:, dy:dy + stride * (ho - 1) + 1:stride,
                 dx:dx + stride * (wo - 1) + 1:stride, :]
      out += patch @ k[dy, dx]
  return out


def _np_maxpool(x):
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  ho, wo = (x.shape[1] - 1) // 2 + 1, (x.shape[2] - 1) // 2 + 1
  out = np.full((x.shape[0], ho, wo, x.shape[3]), -np.inf)
  for dy in range(3):
    for dx in range(3):
      out = np.maximum(out, xp[:, dy:dy + 2 * (ho - 1) + 1:2,
                               dx:dx + 2 * (wo - 1) + 1:2, :])
  return out


class _NpNet:
  """Float64 ResNet forward with explicit parameter lookup by name."""

  def __init__(self, variables, train, norm="batch"):
    to64 = lambda a: np.asarray(a, np.float64)
    self.p = jax.tree.map(to64, variables["params"])
    self.stats = jax.tree.map(to64, variables.get("batch_stats", {}))
    self.train, self.norm_kind = train, norm
    self.new_stats = {}

  def norm(self, x, scope, name):
    p = scope[name]
    if self.norm_kind == "batch":
      if self.train:
        mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
      else:
        mean, var = self.stats_at(name)
      return (x - mean) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]
    groups = math.gcd(32, x.shape[-1]) if self.norm_kind == "group" else 1
    b, h, w, c = x.shape
    xg = x.reshape(b, h, w, groups, c // groups)
    mean = xg.mean((1, 2, 4), keepdims=True)
    var = xg.var((1, 2, 4), keepdims=True)
    y = ((xg - mean) / np.sqrt(var + 1e-5)).reshape(x.shape)
    return y * p["scale"] + p["bias"]

  def stats_at(self, name):
    s = self._stats_scope[name]
    return s["mean"], s["var"]

  def block(self, x, name, stride, kind):
    p = self.p[name]
    self._stats_scope = self.stats.get(name, {})
    relu = lambda a: np.maximum(a, 0)
    if kind == "basic":
      y = relu(self.norm(_np_conv(x, p["conv1"]["kernel"], stride), p,
                         "norm1"))
      y = self.norm(_np_conv(y, p["conv2"]["kernel"], 1), p, "norm2")
    else:
      y = relu(self.norm(_np_conv(x, p["conv1"]["kernel"], 1), p, "norm1"))
      y = relu(self.norm(_np_conv(y, p["conv2"]["kernel"], stride), p,
                         "norm2"))
      y = self.norm(_np_conv(y, p["conv3"]["kernel"], 1), p, "norm3")
    if "shortcut_conv" in p:
      x = self.norm(_np_conv(x, p["shortcut_conv"]["kernel"], stride), p,
                    "shortcut_norm")
    return relu(x + y)

  def __call__(self, x, stage_sizes, kind, stem):
    x = np.asarray(x, np.float64)
    self._stats_scope = self.stats
    stride = 2 if stem == "imagenet" else 1
    x = _np_conv(x, self.p["stem_conv"]["kernel"], stride)
    x = np.maximum(self.norm(x, self.p, "stem_norm"), 0)
    if stem == "imagenet":
      x = _np_maxpool(x)
    inter = {"stem": x}
    for i, n in enumerate(stage_sizes):
      for j in range(n):
        x = self.block(x, f"stage{i + 1}_block{j + 1}",
                       2 if i > 0 and j == 0 else 1, kind)
      inter[f"stage{i + 1}"] = x
    return x.mean((1, 2)), inter


def _tiny(block="basic", stem="cifar", **kw):
  return models.ResNet(stage_sizes=(1, 1), block=block,
                       width_multiplier=1 / 16, stem=stem, **kw)


# ----------------------------------------------------------------------------
# ResNet: shapes, widths, parameter counts.


@pytest.mark.parametrize("depth,w,expected", [
    (18, 1.0, 512), (34, 1.0, 512), (50, 1.0, 2048), (200, 1.0, 2048),
    (18, 0.125, 64), (50, 0.25, 512), (50, 0.125, 256),
    (18, 0.1, 48),  # round(6.4) = 6 base channels.
    (18, 0.001, 8),  # at least one base channel.
])
def test_feature_dim(depth, w, expected):
  assert models.feature_dim(depth, w) == expected
  assert resnet_lib.resnet(depth, width_multiplier=w).num_features == expected


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("stem,sizes", [
    ("imagenet", [8, 8, 4, 2, 1]), ("cifar", [32, 32, 16, 8, 4])])
def test_resnet_output_shapes(depth, stem, sizes):
  model = resnet_lib.resnet(depth, width_multiplier=0.125, stem=stem)
  _, (pooled, inter) = _shapes(model, jnp.zeros((3, 32, 32, 3)))
  assert pooled.shape == (3, models.feature_dim(depth, 0.125))
  assert pooled.dtype == jnp.float32
  names = ["stem", "stage1", "stage2", "stage3", "stage4"]
  assert sorted(inter) == sorted(names)
  exp = 4 if depth == 50 else 1
  channels = [8] + [8 * 2 ** i * exp for i in range(4)]
  for name, s, c in zip(names, sizes, channels):
    assert inter[name].shape == (3, s, s, c), name


@pytest.mark.parametrize("w", [0.25, 0.1, 0.03, 0.5])
def test_fractional_widths(w):
  base = max(1, round(64 * w))
  model = resnet_lib.resnet(18, width_multiplier=w, stem="cifar")
  variables, (pooled, inter) = _shapes(model, jnp.zeros((2, 16, 16, 3)))
  assert pooled.shape == (2, 8 * base)
  assert inter["stage2"].shape == (2, 8, 8, 2 * base)
  assert variables["params"]["stem_conv"]["kernel"].shape == (3, 3, 3, base)


def _reference_param_count(depth: int, stem: str = "imagenet") -> int:
  """conv + norm(scale, bias) parameters, counted from the architecture."""
  sizes, block = {18: ([2, 2, 2, 2], "basic"),
                  50: ([3, 4, 6, 3], "bottleneck")}[depth]
  k = 7 if stem == "imagenet" else 3
  total = k * k * 3 * 64 + 2 * 64
  cin = 64
  for i, n in enumerate(sizes):
    mid = 64 * 2 ** i
    for j in range(n):
      stride = 2 if i > 0 and j == 0 else 1
      if block == "basic":
        cout = mid
        total += 9 * cin * mid + 2 * mid + 9 * mid * mid + 2 * mid
      else:
        cout = 4 * mid
        total += (cin * mid + 2 * mid + 9 * mid * mid + 2 * mid
                  + mid * cout + 2 * cout)
      if stride != 1 or cin != cout:
        total += cin * cout + 2 * cout
      cin = cout
  return total


@pytest.mark.parametrize("depth,torchvision_count", [
    (18, 11_689_512 - (512 * 1000 + 1000)),
    (50, 25_557_032 - (2048 * 1000 + 1000)),
])
def test_param_counts_match_torchvision(depth, torchvision_count):
  variables, _ = _shapes(resnet_lib.resnet(depth), jnp.zeros((1, 32, 32, 3)))
  n = _num_params(variables["params"])
  assert n == torchvision_count == _reference_param_count(depth)
  assert n == {18: 11_176_512, 50: 23_508_032}[depth]
  # Running stats: one mean and one var per norm channel.
  scales = [a for path, a in jax.tree_util.tree_flatten_with_path(
      variables["params"])[0] if path[-1].key == "scale"]
  assert _num_params(variables["batch_stats"]) == 2 * _num_params(scales)
  # Convs carry no bias and use [kh, kw, in, out] kernels.
  flat = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
  for path, leaf in flat:
    keys = [p.key for p in path]
    if "conv" in keys[-2]:
      assert keys[-1] == "kernel" and leaf.ndim == 4, keys
  cifar, _ = _shapes(resnet_lib.resnet(18, stem="cifar"),
                     jnp.zeros((1, 32, 32, 3)))
  assert _num_params(cifar["params"]) == _reference_param_count(18, "cifar")


def test_resnet_depth_200_stage_sizes():
  model = resnet_lib.resnet(200)
  assert tuple(model.stage_sizes) == (3, 24, 36, 3)
  assert model.block == "bottleneck"


# ----------------------------------------------------------------------------
# ResNet numerics against the NumPy reference. Two tiny configurations with
# fixed input shapes are shared by the tests so each compiles only once.

_CONFIGS = {
    "basic-cifar": (("basic", "cifar"), (4, 8, 8, 3)),
    "bottleneck-imagenet": (("bottleneck", "imagenet"), (4, 15, 15, 3)),
}


def _setup(cfg, seed=0, **kw):
  (block, stem), shape = _CONFIGS[cfg]
  model = _tiny(block, stem, **kw)
  x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
  return model, jnp.asarray(x), block, stem


@pytest.mark.parametrize("cfg", list(_CONFIGS))
def test_resnet_matches_numpy_eval(cfg):
  model, x, block, stem = _setup(cfg)
  variables = _randomize(_init(model, x))
  pooled, inter = _apply(model, variables, x, train=False)
  ref_pooled, ref_inter = _NpNet(variables, train=False)(
      x, (1, 1), block, stem)
  np.testing.assert_allclose(pooled, ref_pooled, rtol=1e-4, atol=1e-5)
  assert set(inter) == set(ref_inter)
  for k in inter:
    np.testing.assert_allclose(inter[k], ref_inter[k], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cfg", list(_CONFIGS))
def test_resnet_train_mode_matches_numpy_and_updates_stats(cfg):
  model, x, block, stem = _setup(cfg, seed=1)
  x = x * 2.0 + 0.5
  variables = _randomize(_init(model, x))
  (pooled, _), updates = _apply(model, variables, x, train=True)
  ref_pooled, _ = _NpNet(variables, train=True)(x, (1, 1), block, stem)
  np.testing.assert_allclose(pooled, ref_pooled, rtol=1e-4, atol=1e-4)
  # Running averages: new = 0.9 · old + 0.1 · batch statistic (biased var).
  stem_pre = _np_conv(np.asarray(x, np.float64),
                      np.asarray(variables["params"]["stem_conv"]["kernel"]),
                      2 if stem == "imagenet" else 1)
  old = variables["batch_stats"]["stem_norm"]
  new = updates["batch_stats"]["stem_norm"]
  np.testing.assert_allclose(
      new["mean"], 0.9 * old["mean"] + 0.1 * stem_pre.mean((0, 1, 2)),
      rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      new["var"], 0.9 * old["var"] + 0.1 * stem_pre.var((0, 1, 2)),
      rtol=1e-4, atol=1e-6)
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != b)),
                         variables["batch_stats"], updates["batch_stats"])
  assert all(jax.tree.leaves(changed))


def test_eval_is_deterministic_and_batch_independent():
  model, x, _, _ = _setup("bottleneck-imagenet", seed=2)
  variables = _randomize(_init(model, x))
  full, _ = _apply(model, variables, x, train=False)
  again, _ = _apply(model, variables, x, train=False)
  np.testing.assert_array_equal(full, again)
  noise = np.random.default_rng(3).normal(size=x[1:].shape)
  other = x.at[1:].set(jnp.asarray(noise, jnp.float32))
  swapped, _ = _apply(model, variables, other, train=False)
  np.testing.assert_allclose(swapped[0], full[0], rtol=1e-5, atol=1e-6)
  # Train mode normalises with batch statistics, so sample 0 does change.
  (train_full, _), _ = _apply(model, variables, x, train=True)
  (train_other, _), _ = _apply(model, variables, other, train=True)
  assert np.max(np.abs(train_full[0] - train_other[0])) > 1e-3


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_group_and_layer_norm(norm):
  # 24 channels at width 0.375: 32 does not divide 24, gcd gives 8 groups.
  model = models.ResNet(stage_sizes=(1,), block="basic",
                        width_multiplier=0.375, stem="cifar", norm=norm)
  x = jnp.asarray(np.random.default_rng(4).normal(size=(3, 6, 6, 3)),
                  jnp.float32)
  variables = _randomize(_init(model, x))
  assert "batch_stats" not in variables
  assert set(variables["params"]["stem_norm"]) == {"scale", "bias"}
  pooled, inter = _apply(model, variables, x, train=True)
  ref_pooled, _ = _NpNet(variables, train=True, norm=norm)(
      x, (1,), "basic", "cifar")
  np.testing.assert_allclose(pooled, ref_pooled, rtol=1e-4, atol=1e-5)
  # Per-sample normalisation: independent of the rest of the batch.
  other, _ = _apply(model, variables, x.at[1:].multiply(-3.0), train=True)
  np.testing.assert_allclose(other[0], pooled[0], rtol=1e-5, atol=1e-6)
  assert inter["stage1"].shape == (3, 6, 6, 24)


def test_bf16_compute_float32_params_and_features():
  model, x, _, _ = _setup("basic-cifar", seed=5)
  model_bf16 = _tiny("basic", "cifar", dtype=jnp.bfloat16)
  shapes, _ = _shapes(model_bf16, x)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(shapes))
  variables = _randomize(_init(model, x))
  f32, _ = _apply(model, variables, x, train=False)
  bf16, inter = _apply(model_bf16, variables, x, train=False)
  assert bf16.dtype == jnp.float32
  assert inter["stage2"].dtype == jnp.bfloat16
  np.testing.assert_allclose(bf16, f32, rtol=0.1, atol=0.05)
  assert np.max(np.abs(bf16 - f32)) > 0  # really computed in bf16
  (train_out, _), updates = _apply(model_bf16, variables, x, train=True)
  assert train_out.dtype == jnp.float32
  assert all(a.dtype == jnp.float32
             for a in jax.tree.leaves(updates["batch_stats"]))


def test_init_he_fan_out_and_zero_init_residual():
  model, x, _, _ = _setup("bottleneck-imagenet")
  p = _init(model, x)["params"]
  # He-normal, fan_out = kh·kw·out: pool all kernels, each divided by its
  # expected std, so the estimate rests on ~1,800 draws.
  z = []
  for path, k in jax.tree_util.tree_flatten_with_path(p)[0]:
    if path[-1].key == "kernel":
      kh, kw, _, out = k.shape
      z.append(np.ravel(k) / math.sqrt(2.0 / (kh * kw * out)))
  z = np.concatenate(z)
  assert z.size > 1500
  np.testing.assert_allclose(z.std(), 1.0, rtol=0.08)
  assert abs(z.mean()) < 0.1
  np.testing.assert_array_equal(p["stage1_block1"]["norm3"]["scale"], 1.0)

  zero = _tiny("basic", "cifar", zero_init_residual=True)
  pz = _init(zero, jnp.zeros((1, 4, 4, 3)))["params"]
  for name in ("stage1_block1", "stage2_block1"):
    np.testing.assert_array_equal(pz[name]["norm2"]["scale"], 0.0)
    np.testing.assert_array_equal(pz[name]["norm1"]["scale"], 1.0)
  np.testing.assert_array_equal(
      pz["stage2_block1"]["shortcut_norm"]["scale"], 1.0)


def test_resnet_gradients_finite():
  model, x, _, _ = _setup("bottleneck-imagenet", seed=6)
  variables = _init(model, x)

  def loss(params):
    (pooled, _), _ = model.apply(
        {**variables, "params": params}, x, train=True,
        mutable=["batch_stats"])
    return jnp.sum(pooled ** 2)

  grads = jax.jit(jax.grad(loss))(variables["params"])
  leaves = jax.tree.leaves(grads)
  assert all(np.all(np.isfinite(g)) for g in leaves)
  assert sum(float(np.abs(g).sum()) for g in leaves) > 0


# ----------------------------------------------------------------------------
# Injected convolution.


class _CountingConv(nn.Conv):
  calls = 0

  def __call__(self, x):
    type(self).calls += 1
    return super().__call__(x)


class _LaxConv(nn.Module):
  """Independent conv with nn.Conv's fields and parameter layout."""
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: object = "SAME"
  use_bias: bool = True
  dtype: object = jnp.float32
  param_dtype: object = jnp.float32
  kernel_init: object = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    k = self.param("kernel", self.kernel_init,
                   (*self.kernel_size, x.shape[-1], self.features),
                   self.param_dtype)
    assert not self.use_bias
    return jax.lax.conv_general_dilated(
        x.astype(self.dtype), k.astype(self.dtype), self.strides,
        self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_injected_conv_is_used():
  _CountingConv.calls = 0
  model = resnet_lib.resnet(18, width_multiplier=0.125, conv=_CountingConv)
  _shapes(model, jnp.zeros((1, 32, 32, 3)))
  # init + apply traces: 1 stem + 16 block convs + 3 shortcuts each.
  assert _CountingConv.calls == 2 * 20

  model, x, _, _ = _setup("bottleneck-imagenet", seed=7)
  lax_model = _tiny("bottleneck", "imagenet", conv=_LaxConv)
  variables = _randomize(_init(model, x))
  lax_shapes, _ = _shapes(lax_model, x)
  assert jax.tree.structure(lax_shapes) == jax.tree.structure(variables)
  ref, _ = _apply(model, variables, x, train=False)
  out, _ = _apply(lax_model, variables, x, train=False)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)

# ----------------------------------------------------------------------------
# Bad arguments.


def test_resnet_bad_arguments():
  with pytest.raises(ValueError, match="depth"):
    resnet_lib.resnet(19)
  with pytest.raises(ValueError, match="depth"):
    models.feature_dim(19, 1.0)
  with pytest.raises(ValueError, match="stem"):
    resnet_lib.resnet(18, stem="tiny")
  with pytest.raises(ValueError, match="norm"):
    resnet_lib.resnet(18, norm="instance")
  with pytest.raises(ValueError, match="block"):
    models.ResNet(stage_sizes=(1,), block="wide")
  with pytest.raises(ValueError, match="width_multiplier"):
    resnet_lib.resnet(18, width_multiplier=0.0)
  with pytest.raises(ValueError, match="stage_sizes"):
    models.ResNet(stage_sizes=(), block="basic")
  with pytest.raises(ValueError, match="bn_momentum"):
    resnet_lib.resnet(18, bn_momentum=1.0)
  with pytest.raises(ValueError, match="NHWC"):
    _shapes(models.resnet_tiny(), jnp.zeros((2, 2, 8, 8, 3)))
  with pytest.raises(ValueError, match="resnet50"):
    models.resnet_by_name("vgg16")
  with pytest.raises(ValueError, match="resnet50"):
    models.resnet_by_name("resnet19")


def test_resnet_by_name():
  m = models.resnet_by_name("resnet50", width_multiplier=0.5)
  assert m.block == "bottleneck" and m.num_features == 1024
  tiny = models.resnet_by_name("resnet_tiny")
  assert tiny.stem == "cifar" and tiny.num_features == 64


# ----------------------------------------------------------------------------
# Heads.


def _np_bn_train(x, scale=None, bias=None):
  axes = tuple(range(x.ndim - 1))
  y = (x - x.mean(axes)) / np.sqrt(x.var(axes) + 1e-5)
  return y if scale is None else y * scale + bias


def _np_ln(x, scale, bias):
  y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True)
                                                + 1e-5)
  return y * scale + bias


def _np_gelu(x):
  return 0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0)))


def _np_mlp(p, x, hidden, norm, last_norm, act):
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
  x = np.asarray(x, np.float64)
  f = _np_gelu if act == "gelu" else (lambda a: np.maximum(a, 0))
  for i in range(len(hidden)):
    d = p[f"dense{i}"]
    x = x @ d["kernel"] + d.get("bias", 0.0)
    if norm == "batch":
      x = _np_bn_train(x, p[f"norm{i}"]["scale"], p[f"norm{i}"]["bias"])
    elif norm == "layer":
      x = _np_ln(x, p[f"norm{i}"]["scale"], p[f"norm{i}"]["bias"])
    x = f(x)
  d = p[f"dense{len(hidden)}"]
  x = x @ d["kernel"] + d.get("bias", 0.0)
  if last_norm == "batch_noaffine":
    x = _np_bn_train(x)
  elif last_norm == "batch":
    x = _np_bn_train(x, p["last_norm"]["scale"], p["last_norm"]["bias"])
  elif last_norm == "layer":
    x = _np_ln(x, p["last_norm"]["scale"], p["last_norm"]["bias"])
  return x


@pytest.mark.parametrize("hidden,norm,last_norm,act", [
    ((16,), "batch", "none", "relu"),
    ((16, 12), "layer", "layer", "gelu"),
    ((16,), "none", "batch", "relu"),
    ((16, 16), "batch", "batch_noaffine", "relu"),
    ((), "none", "none", "relu"),
])
def test_mlp_matches_numpy(hidden, norm, last_norm, act):
  mlp = models.MLP(hidden_dims=hidden, out_dim=6, norm=norm,
                   last_norm=last_norm, activation=act)
  x = _randn(9, (5, 10))
  variables = _randomize(_init(mlp, x), seed=1)
  variables = {**variables, "params": jax.tree.map(
      lambda a: a + 0.1, variables["params"])}  # make biases non-zero
  out = _apply(mlp, variables, x, train=True)
  if "batch_stats" in variables:
    out, _ = out
  assert out.shape == (5, 6) and out.dtype == jnp.float32
  ref = _np_mlp(variables["params"], x, hidden, norm, last_norm, act)
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
  p = variables["params"]
  for i in range(len(hidden)):
    assert ("bias" in p[f"dense{i}"]) == (norm != "batch")
    assert (f"norm{i}" in p) == (norm != "none")
  assert ("batch_stats" in variables) == ("batch" in (norm, last_norm[:5]))


def test_mlp_last_norm_batch_noaffine():
  mlp = models.MLP(hidden_dims=(8,), out_dim=4, last_norm="batch_noaffine",
                   use_bias_last=False)
  x = _randn(10, (16, 5)) * 3.0 + 1.0
  variables = _init(mlp, x)
  assert "last_norm" not in variables["params"]
  assert "bias" not in variables["params"]["dense1"]
  assert set(variables["batch_stats"]["last_norm"]) == {"mean", "var"}
  out, updates = _apply(mlp, variables, x, train=True)
  np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(out.var(0), 1.0, rtol=1e-3)
  assert "last_norm" in updates["batch_stats"]
  # Eval uses running averages: sample 0 does not depend on the others.
  ev = _apply(mlp, updates | {"params": variables["params"]}, x, False)
  ev0 = _apply(mlp, updates | {"params": variables["params"]}, x[:1], False)
  np.testing.assert_allclose(ev0[0], ev[0], rtol=1e-5, atol=1e-6)


def test_mlp_bf16_and_grads():
  mlp = models.MLP(hidden_dims=(8,), out_dim=4, dtype=jnp.bfloat16,
                   activation="gelu")
  x = _randn(11, (4, 6))
  variables = _init(mlp, x)
  assert all(a.dtype == jnp.float32
             for a in jax.tree.leaves(variables["params"]))
  out, _ = _apply(mlp, variables, x, train=True)
  assert out.dtype == jnp.float32

  def loss(params):
    y, _ = mlp.apply({**variables, "params": params}, x, train=True,
                     mutable=["batch_stats"])
    return jnp.sum(y ** 2)

  grads = jax.tree.leaves(jax.jit(jax.grad(loss))(variables["params"]))
  assert all(np.all(np.isfinite(g)) for g in grads)


def test_mlp_bad_arguments():
  with pytest.raises(ValueError, match="norm"):
    models.MLP(hidden_dims=(4,), out_dim=2, norm="group")
  with pytest.raises(ValueError, match="last_norm"):
    models.MLP(hidden_dims=(4,), out_dim=2, last_norm="bn")
  with pytest.raises(ValueError, match="activation"):
    models.MLP(hidden_dims=(4,), out_dim=2, activation="tanh")
  with pytest.raises(ValueError, match="out_dim"):
    models.MLP(hidden_dims=(4,), out_dim=0)
  with pytest.raises(ValueError, match="hidden_dims"):
    models.MLP(hidden_dims=(4, -1), out_dim=2)
  with pytest.raises(ValueError, match="features"):
    models.MLP(hidden_dims=(4,), out_dim=2).init(
        jax.random.key(0), jnp.zeros((3,)), train=False)


def test_prototypes():
  protos = models.Prototypes(num_prototypes=7)
  z = _randn(12, (5, 4))
  variables = jax.jit(protos.init)(jax.random.key(1), z)
  kernel = np.asarray(variables["params"]["kernel"])
  assert kernel.shape == (4, 7)
  np.testing.assert_allclose(np.linalg.norm(kernel, axis=0), 1.0, rtol=1e-5)
  scores = jax.jit(protos.apply)(variables, z)
  assert scores.shape == (5, 7) and scores.dtype == jnp.float32
  np.testing.assert_allclose(scores, np.asarray(z) @ kernel, rtol=1e-5,
                             atol=1e-6)
  # After an update the columns drift; normalize() restores unit columns.
  rng = np.random.default_rng(0)
  drifted = {"kernel": jnp.asarray(rng.normal(size=(4, 7)) * 3.0,
                                   jnp.float32)}
  fixed = models.Prototypes.normalize(drifted)
  k = np.asarray(drifted["kernel"], np.float64)
  np.testing.assert_allclose(fixed["kernel"],
                             k / np.linalg.norm(k, axis=0, keepdims=True),
                             rtol=1e-5)
  np.testing.assert_allclose(models.normalize_prototypes(drifted["kernel"]),
                             fixed["kernel"])
  g = jax.grad(lambda c: models.normalize_prototypes(c).sum())(
      jnp.zeros((4, 7)))
  assert np.all(np.isfinite(g))
  with pytest.raises(ValueError, match="d, K"):
    models.normalize_prototypes(jnp.zeros((2, 3, 4)))
  with pytest.raises(ValueError, match="kernel"):
    models.Prototypes.normalize({"w": jnp.zeros((2, 3))})
  with pytest.raises(ValueError, match="num_prototypes"):
    models.Prototypes(num_prototypes=0)


def _np_dino(p, x, num_layers, learn_scale):
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
  x = np.asarray(x, np.float64)
  for i in range(num_layers):
    x = x @ p[f"dense{i}"]["kernel"] + p[f"dense{i}"]["bias"]
    if i < num_layers - 1:
      x = _np_gelu(x)
  x = x / np.linalg.norm(x, axis=-1, keepdims=True)
  v = p["last_layer"]["kernel"]
  w = v / np.linalg.norm(v, axis=0, keepdims=True)
  if learn_scale:
    w = w * p["last_layer"]["scale"]
  return x @ w


@pytest.mark.parametrize("num_layers,norm_last_layer", [(3, True), (1, False)])
def test_dino_head(num_layers, norm_last_layer):
  head = models.DINOHead(out_dim=11, hidden_dim=16, bottleneck_dim=8,
                         num_layers=num_layers,
                         norm_last_layer=norm_last_layer)
  x = _randn(13, (6, 10))
  variables = _init(head, x)
  p = variables["params"]
  assert p["last_layer"]["kernel"].shape == (8, 11)
  assert "bias" not in p["last_layer"]
  assert ("scale" in p["last_layer"]) == (not norm_last_layer)
  if not norm_last_layer:
    np.testing.assert_array_equal(p["last_layer"]["scale"], 1.0)
    p = {**p, "last_layer": {**p["last_layer"], "scale": jnp.linspace(
        0.5, 2.0, 11)}}
  out = _apply(head, {"params": p}, x, train=True)
  assert out.shape == (6, 11) and out.dtype == jnp.float32
  np.testing.assert_allclose(out, _np_dino(p, x, num_layers,
                                           not norm_last_layer),
                             rtol=1e-4, atol=1e-5)
  if norm_last_layer:
    # Unit input and unit columns: logits are cosines.
    assert np.all(np.abs(out) <= 1.0 + 1e-5)
  # Weight norm: rescaling a column of v by c > 0 leaves the output as is.
  scaled = jax.tree.map(lambda a: a, p)
  scaled["last_layer"] = {**p["last_layer"], "kernel": p["last_layer"][
      "kernel"] * jnp.linspace(0.1, 5.0, 11)}
  np.testing.assert_allclose(_apply(head, {"params": scaled}, x, True), out,
                             rtol=1e-5, atol=1e-6)
  grads = jax.jit(jax.grad(
      lambda q: head.apply({"params": q}, x, train=True).sum()))(p)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_dino_head_batchnorm_option_and_bad_args():
  head = models.DINOHead(out_dim=5, hidden_dim=8, bottleneck_dim=4,
                         use_bn=True)
  x = _randn(14, (4, 6))
  variables = _init(head, x)
  assert set(variables["batch_stats"]) == {"norm0", "norm1"}
  out, _ = _apply(head, variables, x, train=True)
  assert out.shape == (4, 5)
  with pytest.raises(ValueError, match="out_dim"):
    models.DINOHead(out_dim=0)
  with pytest.raises(ValueError, match="num_layers"):
    models.DINOHead(out_dim=4, num_layers=0)


def test_heads_module_exports():
  assert models.WeightNormDense is heads_lib.WeightNormDense
  assert models.RESNET_DEPTHS is resnet_lib.RESNET_DEPTHS
  assert models.RESNET_DEPTHS[50] == ([3, 4, 6, 3], "bottleneck")


def test_ssl_network_heads_are_call_after_the_encoder():
  net = models.SSLNetwork(
      encoder=models.resnet_tiny(),
      projector=models.MLP(hidden_dims=(8,), out_dim=4),
      predictor=models.MLP(hidden_dims=(8,), out_dim=4))
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 3))
  variables = net.init(jax.random.PRNGKey(1), x, train=True)
  full, full_stats = net.apply(variables, x, train=True,
                               mutable=["batch_stats"])
  feats, enc_stats = net.apply(variables, x, train=True,
                               method=models.SSLNetwork.features,
                               mutable=["batch_stats"])
  heads, head_stats = net.apply({**variables, **enc_stats}, feats,
                                train=True, method=models.SSLNetwork.heads,
                                mutable=["batch_stats"])
  assert set(heads) == set(full) == {"features", "proj", "pred"}
  for key in full:
    np.testing.assert_allclose(heads[key], full[key], atol=1e-6)
  # Two stages update the same running averages as one call.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               head_stats, full_stats)
  no_pred = net.apply({**variables, **enc_stats}, feats, train=False,
                      use_predictor=False, method=models.SSLNetwork.heads)
  assert set(no_pred) == {"features", "proj"}
