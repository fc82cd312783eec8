"""Tests for mdssl_jax.data.sources and mdssl_jax.data.demo_data."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from mdssl_jax import config_lib
from mdssl_jax.data import demo_data
from mdssl_jax.data import sources


def _data_cfg(domains, **kw):
  """A complete config.data with these domains and overrides."""
  cfg = config_lib.get_default_config().data
  cfg.update(dict(domains=domains, per_domain_batch=8, mean=(0.5,) * 3,
                  std=(0.25,) * 3))
  cfg.update(kw)
  return cfg


def _load(domain, **kw):
  """sources.load_domain with config.data defaults and `kw` overrides."""
  return sources.load_domain(domain, _data_cfg([domain], **kw))


# ----------------------------------------------------------------------------
# Demo domains
# ----------------------------------------------------------------------------


def test_demo_names():
  assert set(demo_data.list_demo_domains()) >= {"digits", "photos",
                                                "textures"}
  with pytest.raises(ValueError, match="valid demo names"):
    demo_data.load_demo_domain("nope")


@pytest.mark.parametrize("name", ["digits", "photos", "textures"])
def test_demo_domain_shapes_balance_disjoint(name):
  dom = demo_data.load_demo_domain(name, image_size=32, seed=0)
  for split in ("train", "test"):
    images = getattr(dom, f"{split}_images")
    labels = getattr(dom, f"{split}_labels")
    assert images.dtype == np.uint8 and images.shape[1:] == (32, 32, 3)
    assert labels.dtype == np.int32 and labels.shape == (len(images),)
    assert labels.min() == 0 and labels.max() == dom.num_classes - 1
    counts = np.bincount(labels, minlength=dom.num_classes)
    assert counts.min() >= 0.7 * counts.mean()  # Roughly balanced.
    assert images.std() > 20  # Not blank.
  assert len(dom.train_images) >= 1000 and len(dom.test_images) >= 300
  train = {im.tobytes() for im in dom.train_images}
  assert not any(im.tobytes() in train for im in dom.test_images)
  # No image repeats inside the train split either.
  assert len(train) == len(dom.train_images)


@pytest.mark.parametrize("name", ["digits", "photos", "textures"])
def test_demo_domain_is_deterministic_per_seed(name):
  cached = demo_data.load_demo_domain(name, image_size=32, seed=0)
  fresh = demo_data._load_cached.__wrapped__(name, 32, 0)  # Bypass cache.
  np.testing.assert_array_equal(cached.train_images, fresh.train_images)
  np.testing.assert_array_equal(cached.test_labels, fresh.test_labels)
  other = demo_data._load_cached.__wrapped__(name, 32, 1)
  n = min(len(other.train_images), len(cached.train_images))
  assert not np.array_equal(other.train_images[:n], cached.train_images[:n])


def test_demo_domain_other_size():
  dom = demo_data.load_demo_domain("digits", image_size=24, seed=0)
  assert dom.train_images.shape[1:] == (24, 24, 3)
  # Digits are framed like MNIST: an empty (black) border.
  assert dom.train_images[:, :1].max() == 0
  assert (dom.train_images[..., 0] == dom.train_images[..., 2]).all()


def test_textures_have_foreground_masks():
  dom = demo_data.load_demo_domain("textures", image_size=32, seed=0)
  masks = dom.train_masks
  assert masks.shape == dom.train_images.shape[:3]
  assert masks.dtype == np.float32
  assert set(np.unique(masks)) <= {0.0, 1.0}
  coverage = masks.mean(axis=(1, 2))
  assert coverage.min() > 0.15 and coverage.max() < 0.7
  # Plain-background images (half of them) are constant outside the mask.
  bg_std = np.array([im[m == 0].std(axis=0).max()
                     for im, m in zip(dom.train_images[:200], masks[:200])])
  assert 0.3 < np.mean(bg_std == 0) < 0.7


def _nearest_centroid_accuracy(xtr, ytr, xte, yte):
  centroids = np.stack([xtr[ytr == c].mean(0) for c in np.unique(ytr)])
  d = ((xte[:, None] - centroids[None]) ** 2).sum(-1)
  return float((d.argmin(1) == yte).mean())


def _flat(images):
  return images.reshape(len(images), -1).astype(np.float32) / 255.0


def _spectrum(images):
  g = images.astype(np.float32).mean(-1) / 255.0
  g -= g.mean(axis=(1, 2), keepdims=True)
  return np.log1p(np.abs(np.fft.fft2(g)).reshape(len(images), -1))


@pytest.mark.parametrize("name,features,min_acc", [
    ("digits", _flat, 0.6),
    ("photos", _flat, 0.5),
    # Texture families with random colours/phases: a translation-invariant
    # feature (FFT magnitude) is the simplest one that separates them.
    ("textures", _spectrum, 0.35),
])
def test_demo_classes_are_learnable(name, features, min_acc):
  dom = demo_data.load_demo_domain(name, image_size=32, seed=0)
  acc = _nearest_centroid_accuracy(
      features(dom.train_images), dom.train_labels,
      features(dom.test_images), dom.test_labels)
  assert acc > min_acc, (name, acc, 1 / dom.num_classes)


# ----------------------------------------------------------------------------
# Config validation
# ----------------------------------------------------------------------------


def test_validate_data_config_accepts_good_config():
  sources.validate_data_config(_data_cfg([
      dict(name="a", source="demo", demo_name="digits"),
      dict(name="b", source="npz", path="/x", max_train=10),
      dict(name="c", source="tfds", tfds_name="cifar10",
           eval_split="train[:10%]")]))


@pytest.mark.parametrize("domains,kw,match", [
    ([], {}, "non-empty list"),
    ([dict(name="a", source="web")], {}, "valid sources"),
    ([dict(name="a", source="demo", demo_name="mnist")], {},
     "valid demo names"),
    ([dict(name="a", source="npz")], {}, "needs 'path'"),
    ([dict(name="a", source="tfds")], {}, "needs 'tfds_name'"),
    ([dict(name="a", source="demo", demo_name="digits", max_trian=5)], {},
     "unknown keys.*max_trian"),
    ([dict(name="a", source="demo", demo_name="digits")] * 2, {},
     "duplicate names"),
    ([dict(name="a", source="demo", demo_name="digits", max_train=0)], {},
     "max_train"),
    ([dict(source="demo", demo_name="digits")], {}, "needs a 'name'"),
    ([dict(name="a", source="demo", demo_name="digits")],
     dict(resize="crop"), "resize"),
    ([dict(name="a", source="demo", demo_name="digits")],
     dict(mean=(123.7, 116.3, 103.5)), "0-255"),
    ([dict(name="a", source="demo", demo_name="digits")],
     dict(image_size=4), "image_size"),
])
def test_validate_data_config_errors(domains, kw, match):
  with pytest.raises(ValueError, match=match):
    sources.validate_data_config(_data_cfg(domains, **kw))


# ----------------------------------------------------------------------------
# npz
# ----------------------------------------------------------------------------


def _write_split(path, images, labels, **extra):
  np.savez_compressed(path, images=images, labels=labels, **extra)


def _grey_set(tmp_path, n_train=60, n_test=20, size=28, classes=3):
  rng = np.random.default_rng(0)
  train = rng.integers(1, 256, (n_train, size, size, 1), np.uint8)
  test = rng.integers(1, 256, (n_test, size, size, 1), np.uint8)
  ytr = np.arange(n_train) % classes
  yte = np.arange(n_test) % classes
  _write_split(tmp_path / "train.npz", train, ytr.astype(np.int64))
  _write_split(tmp_path / "test.npz", test, yte.astype(np.int64))
  return train, ytr, test, yte


def test_npz_grey_28_is_padded_to_32_rgb(tmp_path):
  train, ytr, test, yte = _grey_set(tmp_path)
  dom = _load(dict(name="g", source="npz", path=str(tmp_path)))
  assert dom.train_images.shape == (60, 32, 32, 3)
  assert dom.num_classes == 3
  np.testing.assert_array_equal(dom.train_labels, ytr)
  assert dom.train_labels.dtype == np.int32
  inner = dom.train_images[:, 2:30, 2:30]
  for c in range(3):
    np.testing.assert_array_equal(inner[..., c], train[..., 0])
  border = np.ones((32, 32), bool)
  border[2:30, 2:30] = False
  assert (dom.train_images[:, border] == 0).all()
  np.testing.assert_array_equal(dom.test_images[:, 2:30, 2:30, 1],
                                test[..., 0])


def test_npz_resize_mode_and_larger_images(tmp_path):
  train, _, _, _ = _grey_set(tmp_path, size=40)
  dom = _load(dict(name="g", source="npz", path=str(tmp_path)),
              resize="pad")  # Larger than 32: resized anyway.
  ref = tf.image.resize(train.astype(np.float32), (32, 32), "bilinear",
                        antialias=True).numpy()
  np.testing.assert_allclose(dom.train_images[..., 0],
                             np.clip(np.round(ref[..., 0]), 0, 255), atol=1)
  _grey_set(tmp_path, size=28)
  dom = _load(
      dict(name="g", source="npz", path=str(tmp_path), resize="resize"),
      image_size=32, resize="pad")
  assert dom.train_images.shape == (60, 32, 32, 3)
  assert dom.train_images[:, 0].max() > 0  # Resized, not padded.


def test_npz_subsample_and_masks(tmp_path):
  rng = np.random.default_rng(1)
  n = 90
  images = rng.integers(0, 256, (n, 32, 32, 3), np.uint8)
  labels = np.repeat([0, 1, 2], [60, 20, 10])
  masks = np.zeros((n, 32, 32), np.uint8)
  for i in range(n):  # Mask i covers i+1 rows: identifies the image.
    masks[i, :i % 32 + 1] = 255
  _write_split(tmp_path / "train.npz", images, labels)
  _write_split(tmp_path / "test.npz", images[:30], labels[:30])
  np.savez(tmp_path / "masks.npz", masks=masks)
  cfg = dict(name="m", source="npz", path=str(tmp_path), max_train=30,
             masks_path=str(tmp_path / "masks.npz"))
  dom = _load(cfg, image_size=32, seed=3)
  assert len(dom.train_images) == 30
  np.testing.assert_array_equal(np.bincount(dom.train_labels), [20, 7, 3])
  # Masks (0/255 uint8 -> [0, 1]) stay aligned with their images.
  assert dom.train_masks.dtype == np.float32 and dom.train_masks.max() == 1.0
  idx = [int(np.flatnonzero((images == im).all(axis=(1, 2, 3)))[0])
         for im in dom.train_images]
  np.testing.assert_array_equal(dom.train_masks.sum(axis=(1, 2)),
                                [(i % 32 + 1) * 32 for i in idx])
  assert idx == sorted(idx)
  again = _load(cfg, image_size=32, seed=3)
  np.testing.assert_array_equal(again.train_images, dom.train_images)
  other = _load(cfg, image_size=32, seed=4)
  assert not np.array_equal(other.train_images, dom.train_images)


def test_subsample_indices():
  labels = np.repeat(np.arange(4), [100, 50, 30, 20])
  idx = sources.subsample_indices(labels, 40, seed=0)
  assert len(idx) == 40 and len(set(idx)) == 40
  assert (np.diff(idx) > 0).all()
  np.testing.assert_array_equal(np.bincount(labels[idx]), [20, 10, 6, 4])
  np.testing.assert_array_equal(idx, sources.subsample_indices(labels, 40, 0))
  assert not np.array_equal(idx, sources.subsample_indices(labels, 40, 1))
  np.testing.assert_array_equal(sources.subsample_indices(labels, None, 0),
                                np.arange(200))
  np.testing.assert_array_equal(sources.subsample_indices(labels, 999, 0),
                                np.arange(200))


def test_npz_class_names_file(tmp_path):
  _grey_set(tmp_path, classes=3)
  (tmp_path / "class_names.txt").write_text("a\nb\nc\nd\ne\n")
  dom = _load(dict(name="g", source="npz", path=str(tmp_path)))
  assert dom.num_classes == 5


def test_npz_errors(tmp_path):
  cfg = dict(name="bad", source="npz", path=str(tmp_path))
  load = lambda c: _load(c, image_size=32)
  with pytest.raises(ValueError, match="not a directory"):
    load(dict(cfg, path=str(tmp_path / "missing")))
  with pytest.raises(ValueError, match="train.npz: file not found"):
    load(cfg)
  (tmp_path / "train.npz").write_bytes(b"this is not a zip file")
  with pytest.raises(ValueError, match="train.npz: unreadable or corrupt"):
    load(cfg)
  np.savez(tmp_path / "train.npz", x=np.zeros((2, 28, 28), np.uint8),
           labels=np.zeros(2))
  with pytest.raises(ValueError, match="expects arrays 'images' and "
                     "'labels'"):
    load(cfg)
  _write_split(tmp_path / "train.npz", np.zeros((3, 8, 8, 3), np.uint8),
               np.zeros(2, np.int64))
  _write_split(tmp_path / "test.npz", np.zeros((3, 8, 8, 3), np.uint8),
               np.zeros(3, np.int64))
  with pytest.raises(ValueError, match="'labels' must be"):
    load(cfg)
  _write_split(tmp_path / "train.npz", np.zeros((3, 8, 8, 3), np.float32),
               np.zeros(3, np.int64))
  with pytest.raises(ValueError, match="uint8"):
    load(cfg)
  _write_split(tmp_path / "train.npz", np.zeros((3, 8, 8, 2), np.uint8),
               np.zeros(3, np.int64))
  with pytest.raises(ValueError, match="C in"):
    load(cfg)
  _write_split(tmp_path / "train.npz", np.zeros((3, 8, 8, 3), np.uint8),
               np.zeros(3, np.int64))
  np.savez(tmp_path / "m.npz", masks=np.zeros((2, 8, 8)))
  with pytest.raises(ValueError, match="aligned"):
    load(dict(cfg, masks_path=str(tmp_path / "m.npz")))
  with pytest.raises(ValueError, match="max_in_memory_gb"):
    _load(cfg, max_in_memory_gb=1e-6)


def test_shared_mnist_npz(shared_data):  # Fixture: skips without the data.
  root = shared_data / "mnist"
  dom = _load(
      dict(name="mnist", source="npz", path=str(root), max_train=500,
           max_test=100), image_size=32)
  assert dom.train_images.shape == (500, 32, 32, 3)
  assert dom.test_images.shape == (100, 32, 32, 3)
  assert dom.num_classes == 10
  assert dom.train_images[:, :2].max() == 0  # 2 px padding.
  assert set(np.unique(dom.train_labels)) == set(range(10))


# ----------------------------------------------------------------------------
# tfds (offline: mock_data only)
# ----------------------------------------------------------------------------


def test_tfds_under_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=12):
    dom = _load(
        dict(name="c10", source="tfds", tfds_name="cifar10", max_train=9),
        image_size=32, data_dir=str(tmp_path))
    assert dom.train_images.shape == (9, 32, 32, 3)
    assert dom.test_images.shape == (12, 32, 32, 3)
    assert dom.num_classes == 10
    assert dom.train_labels.dtype == np.int32
    assert dom.train_labels.max() < 10
    # Random-shaped images (dtd mock) are centre-cropped and resized.
    dom = _load(
        dict(name="dtd", source="tfds", tfds_name="dtd",
             eval_split="validation"),
        image_size=16, data_dir=str(tmp_path),
        resize="resize")
    assert dom.train_images.shape == (12, 16, 16, 3)
    assert dom.num_classes == 47
    with pytest.raises(ValueError, match="no feature 'img'"):
      _load(
          dict(name="c", source="tfds", tfds_name="cifar10",
               image_key="img"),
          image_size=32, data_dir=str(tmp_path))


def test_tfds_memory_limit_under_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=40):
    with pytest.raises(ValueError, match="max_in_memory_gb"):
      _load(
          dict(name="c10", source="tfds", tfds_name="cifar10"),
          image_size=32, data_dir=str(tmp_path),
          max_in_memory_gb=1e-6)


def test_tfds_missing_data_gives_one_clear_error(tmp_path):
  with pytest.raises(sources.DatasetNotFoundError) as info:
    _load(dict(name="c10", source="tfds", tfds_name="cifar10"),
          image_size=32, data_dir=str(tmp_path))
  msg = str(info.value)
  assert f"tfds build cifar10 --data_dir={tmp_path}" in msg
  assert "--config.data.download=True" in msg
  assert "'cifar10'" in msg and str(tmp_path) in msg
  assert isinstance(info.value, FileNotFoundError)
  with pytest.raises(ValueError, match="not a TFDS builder"):
    _load(
        dict(name="x", source="tfds", tfds_name="no_such_dataset_xyz"),
        image_size=32, data_dir=str(tmp_path))


def test_load_domains_demo_with_subsample():
  cfg = _data_cfg([
      dict(name="D", source="demo", demo_name="digits", max_train=100,
           max_test=50),
      dict(name="T", source="demo", demo_name="textures", max_train=70)])
  doms = sources.load_domains(cfg)
  assert [d.name for d in doms] == ["D", "T"]
  assert len(doms[0].train_images) == 100 and len(doms[0].test_images) == 50
  assert doms[1].train_masks.shape == (70, 32, 32)
  assert np.bincount(doms[1].train_labels).tolist() == [10] * 7
  # Masks stay aligned with their images after subsampling.
  full = demo_data.load_demo_domain("textures", image_size=32, seed=0)
  i = int(np.flatnonzero((full.train_images == doms[1].train_images[5])
                         .all(axis=(1, 2, 3)))[0])
  np.testing.assert_array_equal(full.train_masks[i], doms[1].train_masks[5])


def test_manual_download_datasets_get_manual_steps_not_download_flag():
  # pylint: disable-next=g-import-not-at-top
  from mdssl_jax.data.sources import tfds_common
  msg = str(tfds_common.prepare_error("in100", "imagenet2012", "/data/tfds"))
  assert "/data/tfds/downloads/manual/" in msg
  assert "tfds build imagenet2012 --data_dir=/data/tfds" in msg
  assert "download=True" not in msg
  msg = str(tfds_common.prepare_error("c10", "cifar10", "/data/tfds"))
  assert "tfds build cifar10 --data_dir=/data/tfds" in msg
  assert "download=True" in msg and "manual" not in msg
