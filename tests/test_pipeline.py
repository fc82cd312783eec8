"""Tests for mdssl_jax.data.pipeline (multi-domain, multi-view batches)."""

import itertools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import pytest

from mdssl_jax import config_lib
from mdssl_jax.data import pipeline
from mdssl_jax.data.domain import DomainData

_IDENTITY = dict(flip_p=0.0, jitter_p=0.0, brightness=0.4, contrast=0.4,
                 saturation=0.2, hue=0.1, brightness_mode="multiplicative",
                 gray_p=0.0, blur_p=0.0, blur_sigma=(0.1, 2.0),
                 blur_kernel_frac=0.1, solarize_p=0.0)


def _domain(name, n, size=16, classes=3, seed=0, masks=None):
  rng = np.random.default_rng(seed)
  # Pixel values stay in [1, 254] so no grey level can hide a change.
  images = rng.integers(1, 255, (n, size, size, 3), np.uint8)
  return DomainData(
      name=name, train_images=images,
      train_labels=(np.arange(n) * 7 % classes).astype(np.int32),
      test_images=images[: max(1, n // 4)],
      test_labels=np.zeros(max(1, n // 4), np.int32),
      num_classes=classes, train_masks=masks)


def _config(*, n=4, size=16, large=2, small=0, small_size=8, seed=0,
            identity=False, saliency_prob=0.0):
  c = config_lib.get_default_config()
  c.seed = seed
  c.data.image_size = size
  c.data.per_domain_batch = n
  # Tests read a few batches: no read-ahead beyond the next one.
  c.data.num_parallel_calls = 1
  c.data.prefetch = 1
  c.views.large.size = size
  c.views.large.count = large
  c.views.small.count = small
  c.views.small.size = small_size
  c.saliency.prob = saliency_prob
  if identity:
    c.views.large.crop_area = (1.0, 1.0)
    c.views.small.crop_area = (1.0, 1.0)
    c.views.small.size = size
    c.augment.aspect = (1.0, 1.0)
    c.augment.odd = dict(_IDENTITY)
    c.augment.even = dict(_IDENTITY)
    c.data.mean = (0.0, 0.0, 0.0)
    c.data.std = (1.0, 1.0, 1.0)
  return c


def _take(config, domains, k, **kw):
  it = pipeline.make_train_iterator(config, domains, **kw)
  return [next(it) for _ in range(k)]


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


_DOMAINS = [_domain("a", 10, seed=1), _domain("b", 17, seed=2),
            _domain("c", 40, seed=3)]


# ----------------------------------------------------------------------------
# Config and view specs
# ----------------------------------------------------------------------------


def test_view_specs_odd_even_columns():
  c = _config(large=4, small=2, small_size=8)
  specs = pipeline.view_specs_from_config(c)
  assert [s.group for s in specs["large"]] == ["large"] * 4
  assert [s.params["blur_p"] for s in specs["large"]] == [0.1, 1.0, 0.1, 1.0]
  assert [s.params["solarize_p"] for s in specs["large"]] == [0.2, 0, 0.2, 0]
  assert [s.params["blur_p"] for s in specs["small"]] == [0.1, 1.0]
  assert all(s.saliency for s in specs["large"])
  assert not any(s.saliency for s in specs["small"])
  assert {s.size for s in specs["small"]} == {8}
  assert specs["large"][0].crop_area == (0.08, 1.0)
  assert specs["small"][0].crop_area == (0.05, 0.14)
  assert specs["large"][0].params["aspect"] == pytest.approx((3 / 4, 4 / 3))


def test_view_specs_errors():
  c = _config()
  c.augment.odd = dict(_IDENTITY, blurp=0.3)
  with pytest.raises(ValueError, match="blurp"):
    pipeline.view_specs_from_config(c)
  c = _config()
  c.views.large.count = 0
  with pytest.raises(ValueError, match="views.large.count"):
    pipeline.view_specs_from_config(c)
  c = _config()
  c.augment.even.brightness_mode = "additiv"
  with pytest.raises(ValueError, match="augment.even.brightness_mode"):
    pipeline.view_specs_from_config(c)


def test_brightness_mode_reaches_its_column_only():
  # Brightness only, always applied: the odd column's mode changes view 1
  # (odd) and leaves view 2 (even) bit-identical.
  def batch(mode):
    c = _config(n=4, identity=True)
    for col in ("odd", "even"):
      c.augment[col].update(jitter_p=1.0, brightness=0.4, contrast=0.0,
                            saturation=0.0, hue=0.0)
    c.augment.odd.brightness_mode = mode
    return _take(c, _DOMAINS, 1, start_step=0)[0]["large"]
  mult, add = batch("multiplicative"), batch("additive")
  assert np.abs(mult[:, 0] - add[:, 0]).max() > 0.01
  np.testing.assert_array_equal(mult[:, 1], add[:, 1])


# ----------------------------------------------------------------------------
# Composition, labels, streams
# ----------------------------------------------------------------------------


def test_batch_composition_and_labels_match_sources():
  c = _config(n=4, identity=True)
  batches = _take(c, _DOMAINS, 3, start_step=0)
  for b in batches:
    assert b["large"].shape == (12, 2, 16, 16, 3)
    assert b["large"].dtype == np.float32
    assert "small" not in b
    np.testing.assert_array_equal(b["domain"], np.repeat([0, 1, 2], 4))
    assert b["domain"].dtype == np.int32 and b["label"].dtype == np.int32
    assert b["index"].dtype == np.int64
    for r in range(12):
      dom = _DOMAINS[b["domain"][r]]
      i = b["index"][r]
      assert 0 <= i < len(dom.train_images)
      assert b["label"][r] == dom.train_labels[i]
      for v in range(2):  # Identity augmentation: the source image itself.
        np.testing.assert_allclose(b["large"][r, v],
                                   dom.train_images[i] / 255.0, atol=2e-5)


@pytest.fixture(scope="module")
def stream():
  """12 steps of a default-augmentation run (N=16, 2 large + 1 small)."""
  config = _config(n=16, seed=5, large=2, small=1)
  return config, _take(config, _DOMAINS, 12, start_step=0)


def test_each_domain_stream_is_an_epoch_wise_permutation(stream):
  # Domain "a" (10 images) is smaller than N = 16: it wraps inside a step.
  _, batches = stream
  n = 16
  for d, dom in enumerate(_DOMAINS):
    size = len(dom.train_images)
    stream_d = np.concatenate([b["index"][b["domain"] == d] for b in batches])
    assert len(stream_d) == len(batches) * n
    epochs = len(stream_d) // size
    assert epochs >= 4
    perms = [stream_d[e * size:(e + 1) * size] for e in range(epochs)]
    for perm in perms:
      np.testing.assert_array_equal(np.sort(perm), np.arange(size))
    # Each epoch has a fresh order.
    assert len({perm.tobytes() for perm in perms}) == epochs


def test_determinism_resume_and_seed_dependence(stream):
  config, a = stream
  # A new iterator started at step 5 (resume) reproduces steps 5 and 6.
  resumed = _take(config, _DOMAINS, 2, start_step=5)
  _assert_batches_equal(a[5], resumed[0])
  _assert_batches_equal(a[6], resumed[1])
  other = _take(_config(n=16, seed=6, large=2, small=1), _DOMAINS, 1,
                start_step=0)
  assert not np.array_equal(a[0]["index"], other[0]["index"])
  assert np.abs(a[0]["large"] - other[0]["large"]).max() > 0.5
  # Consecutive steps differ, and the two views of a row differ.
  assert not np.array_equal(a[0]["large"], a[1]["large"])
  assert np.abs(a[0]["large"][:, 0] - a[0]["large"][:, 1]).max() > 0.5


def test_multi_view_shapes():
  domains = [_domain("a", 20, size=32, seed=4),
             _domain("b", 30, size=32, seed=5)]
  c = _config(n=3, size=32, large=4, small=2, small_size=16)
  (b,) = _take(c, domains, 1, start_step=0)
  assert b["large"].shape == (6, 4, 32, 32, 3)
  assert b["small"].shape == (6, 2, 16, 16, 3)
  assert b["small"].dtype == np.float32
  assert np.isfinite(b["large"]).all() and np.isfinite(b["small"]).all()
  # All six views of a row are distinct random views.
  views = np.concatenate([b["large"][0].reshape(4, -1)[:, :768],
                          b["small"][0].reshape(2, -1)[:, :768]])
  for i, j in itertools.combinations(range(6), 2):
    assert np.abs(views[i] - views[j]).max() > 1e-3


# ----------------------------------------------------------------------------
# Saliency masking
# ----------------------------------------------------------------------------


def _masked_domains():
  # Left half of every image is foreground (coverage 0.5); images never
  # contain a constant right half, so a grey background is detectable.
  mask = np.zeros((16, 16), np.float32)
  mask[:, :8] = 1.0
  n = 64
  masked = _domain("masked", n, seed=7,
                   masks=np.repeat(mask[None], n, 0))
  return [masked, _domain("plain", 32, seed=8)]


def _is_masked(views):
  """[..., H, W, 3] identity views -> bool: right half is one grey level."""
  right = views[..., :, 8:, :]
  flat = right.reshape(right.shape[:-3] + (-1,))
  return (flat.max(-1) - flat.min(-1)) < 1e-4


def test_saliency_prob_one_masks_every_large_view_only():
  doms = _masked_domains()
  c = _config(n=8, large=2, small=2, identity=True, saliency_prob=1.0)
  (b,) = _take(c, doms, 1, start_step=0)
  m = b["domain"] == 0
  assert _is_masked(b["large"][m]).all()
  # Foreground untouched.
  src = doms[0].train_images[b["index"][m]] / 255.0
  np.testing.assert_allclose(b["large"][m][:, :, :, :8],
                             np.repeat(src[:, None], 2, 1)[:, :, :, :8],
                             atol=2e-5)
  assert not _is_masked(b["small"]).any()  # Small views: never.
  assert not _is_masked(b["large"][~m]).any()  # Domain without masks.


def test_saliency_decisions_are_fresh_per_view():
  doms = _masked_domains()
  c = _config(n=64, large=4, small=1, identity=True, saliency_prob=0.5)
  batches = _take(c, doms, 3, start_step=0)
  large = np.concatenate([b["large"][b["domain"] == 0] for b in batches])
  masked = _is_masked(large)  # [rows, 4]
  assert abs(masked.mean() - 0.5) < 0.08
  # Independent per view: P(view 0 and view 1 masked) ≈ 1/4, and every
  # combination occurs (Listing 1's overwrite would couple them).
  both = (masked[:, 0] & masked[:, 1]).mean()
  assert abs(both - 0.25) < 0.08
  assert (masked[:, 0] & ~masked[:, 1]).any()
  assert (~masked[:, 0] & masked[:, 1]).any()
  small = np.concatenate([b["small"][b["domain"] == 0] for b in batches])
  assert not _is_masked(small).any()
  # Different rows / views get different grey levels.
  greys = large[masked][:, 0, 15, 0]
  assert len(np.unique(np.round(greys, 4))) > 20


def test_saliency_off_when_prob_zero():
  doms = _masked_domains()
  c = _config(n=16, large=2, identity=True, saliency_prob=0.0)
  (b,) = _take(c, doms, 1, start_step=0)
  assert not _is_masked(b["large"]).any()


# ----------------------------------------------------------------------------
# Multi-process slicing
# ----------------------------------------------------------------------------


def test_per_process_slices_concatenate_to_global_batch(stream):
  config, batches = stream
  full = batches[3]
  parts = [_take(config, _DOMAINS, 1, start_step=3, process_index=p,
                 process_count=2)[0] for p in range(2)]
  for key in ("domain", "label", "index"):
    np.testing.assert_array_equal(
        np.concatenate([p[key] for p in parts]), full[key])
  for key in ("large", "small"):
    assert parts[0][key].shape[0] == 24
    np.testing.assert_allclose(np.concatenate([p[key] for p in parts]),
                               full[key], atol=1e-5)
  with pytest.raises(ValueError, match="not divisible by process_count=5"):
    pipeline.make_train_iterator(config, _DOMAINS, start_step=0,
                                 process_index=0, process_count=5)


def test_input_errors():
  c = _config()
  other = _domain("big", 8, size=32)
  with pytest.raises(ValueError, match="share one image shape"):
    pipeline.make_train_iterator(c, [_DOMAINS[0], other], start_step=0)
  with pytest.raises(ValueError, match="start_step"):
    pipeline.make_train_iterator(c, _DOMAINS, start_step=-1)


# ----------------------------------------------------------------------------
# Eval arrays and the default (demo) configuration
# ----------------------------------------------------------------------------


def test_make_eval_arrays():
  c = _config(size=16)
  c.data.mean = (0.5, 0.5, 0.5)
  c.data.std = (0.25, 0.25, 0.25)
  out = pipeline.make_eval_arrays(c, _DOMAINS, max_train=12)
  assert [e["name"] for e in out] == ["a", "b", "c"]
  for e, dom in zip(out, _DOMAINS):
    n = min(12, len(dom.train_images))
    assert e["train_images"].shape == (n, 16, 16, 3)
    assert e["train_images"].dtype == np.float32
    assert e["train_labels"].shape == (n,)
    assert e["test_images"].shape == (len(dom.test_images), 16, 16, 3)
    assert e["num_classes"] == 3
  dom = _DOMAINS[0]
  np.testing.assert_allclose(out[0]["train_images"],
                             (dom.train_images / 255.0 - 0.5) / 0.25,
                             atol=1e-5)
  c.views.large.size = 8
  small = pipeline.make_eval_arrays(c, _DOMAINS[:1])
  assert small[0]["train_images"].shape == (10, 8, 8, 3)


def test_default_config_on_demo_domains():
  from mdssl_jax.data import sources  # pylint: disable=g-import-not-at-top
  c = config_lib.get_default_config()
  c.data.per_domain_batch = 4
  c.saliency.prob = 0.1  # RELICv2's value: the textures' masks are used.
  for dom_cfg in c.data.domains:
    dom_cfg["max_train"] = 200
    dom_cfg["max_test"] = 50
  domains = sources.load_domains(c.data)
  assert [d.train_masks is not None for d in domains] == [False, False, True]
  (b,) = _take(c, domains, 1, start_step=0)
  assert b["large"].shape == (12, 2, 32, 32, 3)
  # Normalised views: roughly zero-mean, unit-scale.
  assert abs(float(b["large"].mean())) < 1.0
  assert 0.3 < float(b["large"].std()) < 2.0
