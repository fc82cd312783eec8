"""Tests for streaming TFDS domains and class subsets (mdssl_jax.data).

Two kinds of TFDS data, both offline:
- a tiny real dataset (``mdssl_tiny_jpegs``: variable-size JPEGs in 4
  tfrecord shards, saliency masks, one class per example), built into a
  temporary data_dir by a builder defined here; it exercises the production
  path (per-epoch shard shuffling, JPEG decoding, masks);
- ``tfds.testing.mock_data``, where TFDS has no files (the fixed-order
  fallback reader).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from mdssl_jax import config_lib
from mdssl_jax.data import pipeline
from mdssl_jax.data import sources
from mdssl_jax.data.domain import DomainData
from mdssl_jax.data.sources import tfds_streaming

_NUM_TRAIN, _NUM_TEST = 24, 10
_IDENTITY = dict(flip_p=0.0, jitter_p=0.0, brightness=0.4, contrast=0.4,
                 saturation=0.2, hue=0.1, gray_p=0.0, blur_p=0.0,
                 blur_sigma=(0.1, 2.0), blur_kernel_frac=0.1, solarize_p=0.0,
                 brightness_mode="multiplicative")


class MdsslTinyJpegs(tfds.core.GeneratorBasedBuilder):
  """Square random JPEGs of 20-40 px; label i for train example i."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3),
                                         encoding_format="jpeg"),
            # Left half foreground (255), right half background (0).
            "mask": tfds.features.Image(shape=(None, None, 1),
                                        encoding_format="png"),
            "label": tfds.features.ClassLabel(
                names=[f"n{i:03d}" for i in range(_NUM_TRAIN)]),
        }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(_NUM_TRAIN, 0),
            "test": self._generate_examples(_NUM_TEST, 1)}

  def _generate_examples(self, n, seed):
    rng = np.random.default_rng(seed)
    for i in range(n):
      side = int(rng.integers(20, 41))
      image = rng.integers(30, 226, (side, side, 3), np.uint8)
      mask = np.zeros((side, side, 1), np.uint8)
      mask[:, :side // 2] = 255
      yield i, {"image": image, "mask": mask, "label": i % _NUM_TRAIN}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  tfds.disable_progress_bar()
  builder = tfds.builder("mdssl_tiny_jpegs", data_dir=data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      try_download_gcs=False, num_shards=4))
  return data_dir


def _load(domain, **data):
  """sources.load_domain with config.data defaults and `data` overrides."""
  data_cfg = config_lib.get_default_config().data
  data_cfg.update(data)
  return sources.load_domain(domain, data_cfg)


def _tiny(data_dir, **kw):
  cfg = dict(name="tiny", source="tfds", tfds_name="mdssl_tiny_jpegs",
             in_memory=False)
  cfg.update(kw)
  return _load(cfg, image_size=16, data_dir=data_dir, resize="resize")


def _config(*, n=8, large=2, small=0, size=16, small_size=8, seed=0,
            data_seed=0, identity=False, saliency_prob=0.0):
  c = config_lib.get_default_config()
  c.seed = seed
  c.data.image_size = size
  c.data.per_domain_batch = n
  c.data.seed = data_seed
  c.data.shuffle_buffer = 8
  c.data.num_parallel_calls = 1
  c.data.prefetch = 0
  c.views.large.size = size
  c.views.large.count = large
  c.views.small.count = small
  c.views.small.size = small_size
  c.saliency.prob = saliency_prob
  if identity:
    c.views.large.crop_area = (1.0, 1.0)
    c.augment.aspect = (1.0, 1.0)
    c.augment.odd = dict(_IDENTITY)
    c.augment.even = dict(_IDENTITY)
    c.data.mean = (0.0, 0.0, 0.0)
    c.data.std = (1.0, 1.0, 1.0)
  return c


def _take(config, domains, k, **kw):
  kw.setdefault("start_step", 0)
  it = pipeline.make_train_iterator(config, domains, **kw)
  return [next(it) for _ in range(k)]


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _memory_domain(name, n, size=16, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(1, 255, (n, size, size, 3), np.uint8)
  return DomainData(name=name, train_images=images,
                    train_labels=(np.arange(n) % 3).astype(np.int32),
                    test_images=images[:4], test_labels=np.zeros(4, np.int32),
                    num_classes=3)


# ----------------------------------------------------------------------------
# Real tfrecord files
# ----------------------------------------------------------------------------


def test_streaming_domain_holds_no_arrays(tiny_dir):
  dom = _tiny(tiny_dir)
  assert dom.is_streaming and dom.train_images is None
  assert dom.test_labels is None and dom.train_masks is None
  assert dom.num_train == _NUM_TRAIN and dom.num_classes == _NUM_TRAIN
  assert dom.stream.split == "train" and dom.stream.eval_split == "test"
  assert not dom.has_masks and _tiny(tiny_dir, mask_key="mask").has_masks
  assert tfds_streaming.stream_epoch_fn(dom.stream)[1]  # Shards shuffled.


def test_epochs_resume_and_seeds_on_real_files(tiny_dir):
  dom = _tiny(tiny_dir)
  c = _config(n=8)  # 3 steps per epoch of 24 examples.
  batches = _take(c, [dom], 9)
  labels = np.concatenate([b["label"] for b in batches]).reshape(3, 24)
  for epoch in labels:  # Each epoch: every example exactly once.
    np.testing.assert_array_equal(np.sort(epoch), np.arange(24))
  assert len({e.tobytes() for e in labels}) == 3  # A fresh order per epoch.
  np.testing.assert_array_equal(
      np.concatenate([b["index"] for b in batches]), np.arange(72))
  # Resume inside epoch 1 (position 32 = epoch 1, offset 8): the same
  # batches as the uninterrupted run (a fresh pipeline: also determinism).
  _assert_batches_equal(_take(c, [dom], 1, start_step=4)[0], batches[4])
  # The order follows the data seed, the views config.seed.
  other_data = _take(_config(n=8, data_seed=1), [dom], 3)
  assert not np.array_equal(
      np.concatenate([b["label"] for b in other_data]), labels[0])
  other_aug = _take(_config(n=8, seed=1), [dom], 1)[0]
  np.testing.assert_array_equal(other_aug["label"], batches[0]["label"])
  assert np.abs(other_aug["large"] - batches[0]["large"]).max() > 0.5


def test_mixed_domains_views_and_process_slices(tiny_dir):
  dom = _tiny(tiny_dir)
  mem = _memory_domain("mem", 20, size=16)
  c = _config(n=4, large=2, small=1, size=16, small_size=8)
  (b,) = _take(c, [mem, dom], 1, start_step=2)
  assert b["large"].shape == (8, 2, 16, 16, 3)
  assert b["small"].shape == (8, 1, 8, 8, 3)
  assert b["large"].dtype == np.float32 and b["small"].dtype == np.float32
  assert np.isfinite(b["large"]).all() and np.isfinite(b["small"]).all()
  np.testing.assert_array_equal(b["domain"], [0] * 4 + [1] * 4)
  assert (b["label"][:4] == mem.train_labels[b["index"][:4]]).all()
  np.testing.assert_array_equal(b["index"][4:], np.arange(8, 12))
  # Distinct views per streamed row.
  views = np.concatenate([b["large"][5].reshape(2, -1)[:, :192],
                          b["small"][5].reshape(1, -1)[:, :192]])
  assert min(np.abs(views[i] - views[j]).max()
             for i in range(3) for j in range(i)) > 1e-3
  # The in-memory rows are what an all-in-memory run gives.
  (alone,) = _take(c, [mem, _memory_domain("other", 8, seed=3)], 1,
                   start_step=2)
  np.testing.assert_allclose(alone["large"][:4], b["large"][:4], atol=1e-5)
  # With four processes (two rows each) process 2 holds rows 4, 5: the
  # first half of the streaming domain's rows.
  (part,) = _take(c, [mem, dom], 1, start_step=2, process_index=2,
                  process_count=4)
  for key in b:
    np.testing.assert_allclose(part[key], b[key][4:6], atol=1e-5,
                               err_msg=key)


def test_identity_views_are_the_images_and_eval_arrays(tiny_dir):
  dom = _tiny(tiny_dir)
  c = _config(n=12, small=1, small_size=16, identity=True)
  c.views.small.crop_area = (1.0, 1.0)
  ev = pipeline.make_eval_arrays(c, [dom])[0]
  # Eval arrays: the whole split in TFDS order, centre-cropped and resized.
  assert ev["train_images"].shape == (_NUM_TRAIN, 16, 16, 3)
  assert ev["test_images"].shape == (_NUM_TEST, 16, 16, 3)
  assert ev["num_classes"] == _NUM_TRAIN
  order = ev["train_labels"]
  np.testing.assert_array_equal(np.sort(order), np.arange(_NUM_TRAIN))
  by_label = ev["train_images"][np.argsort(order)]
  batches = _take(c, [dom], 2)
  for b in batches:  # Full-image crops of square images = eval view.
    for v in (b["large"][:, 0], b["large"][:, 1], b["small"][:, 0]):
      np.testing.assert_allclose(v, by_label[b["label"]], atol=1e-4)
  capped = pipeline.make_eval_arrays(c, [dom], max_train=5, max_test=3)[0]
  np.testing.assert_array_equal(capped["train_images"],
                                ev["train_images"][:5])
  np.testing.assert_array_equal(capped["test_labels"], ev["test_labels"][:3])
  c.data.max_in_memory_gb = 1e-6
  with pytest.raises(ValueError, match="max_train_per_domain"):
    pipeline.make_eval_arrays(c, [dom])


def _grey_right(views):
  """[..., 16, 16, 3] -> bool: right quarter is one grey level."""
  right = views[..., :, 12:, :].reshape(views.shape[:-3] + (-1,))
  return (right.max(-1) - right.min(-1)) < 1e-5


def test_streamed_saliency_masks(tiny_dir):
  dom = _tiny(tiny_dir, mask_key="mask")
  c = _config(n=12, large=3, small=1, small_size=16, identity=True,
              saliency_prob=1.0)
  c.views.small.crop_area = (1.0, 1.0)
  (b,) = _take(c, [dom], 1)
  assert _grey_right(b["large"]).all()
  assert not _grey_right(b["small"]).any()
  # Fresh grey level per view; the foreground is untouched.
  greys = b["large"][:, :, 8, 15, 0]
  assert len(np.unique(np.round(greys, 4))) > 20
  c.saliency.prob = 0.0
  (plain,) = _take(c, [dom], 1)
  assert not _grey_right(plain["large"]).any()
  np.testing.assert_allclose(b["large"][..., :5, :],
                             plain["large"][..., :5, :], atol=1e-5)
  c.saliency.prob = 0.5
  batches = _take(c, [dom], 4)
  masked = np.concatenate([_grey_right(x["large"]) for x in batches])
  assert 0.3 < masked.mean() < 0.7
  assert (masked[:, 0] != masked[:, 1]).any()  # Per-view decisions.


def test_class_subset_streaming_real_files(tiny_dir):
  dom = _tiny(tiny_dir, class_subset=["n005", 2, "11"])
  assert dom.num_train == 3 and dom.num_classes == 3  # Counted.
  assert dom.stream.class_ids == (5, 2, 11)
  (b,) = _take(_config(n=6), [dom], 1)
  np.testing.assert_array_equal(np.sort(b["label"]), [0, 0, 1, 1, 2, 2])
  full = _tiny(tiny_dir)
  ev = pipeline.make_eval_arrays(_config(), [dom, full])
  sub, ref = ev
  np.testing.assert_array_equal(
      sub["train_images"],
      ref["train_images"][np.isin(ref["train_labels"], [5, 2, 11])])
  assert set(sub["train_labels"]) == {0, 1, 2}
  with pytest.raises(ValueError, match="unknown class 'n999'"):
    _tiny(tiny_dir, class_subset=["n999"])


def test_in_memory_auto_and_errors(tiny_dir, tmp_path):
  cfg = dict(name="t", source="tfds", tfds_name="mdssl_tiny_jpegs")
  dom = _load(cfg, image_size=16, data_dir=tiny_dir, resize="resize")
  assert not dom.is_streaming and dom.train_images.shape == (24, 16, 16, 3)
  dom = _load(cfg, image_size=16, data_dir=tiny_dir, max_in_memory_gb=1e-5)
  assert dom.is_streaming and dom.num_train == 24  # Known from the info.
  # In memory with masks and a class subset.
  dom = _load(
      dict(cfg, in_memory=True, mask_key="mask", class_subset=[7, 3]),
      image_size=16, data_dir=tiny_dir, resize="resize")
  np.testing.assert_array_equal(np.sort(dom.train_labels), [0, 1])
  assert dom.num_classes == 2 and dom.train_masks.shape == (2, 16, 16)
  np.testing.assert_allclose(dom.train_masks[:, :, :6], 1.0, atol=1e-3)
  np.testing.assert_allclose(dom.train_masks[:, :, 10:], 0.0, atol=1e-3)
  with pytest.raises(ValueError, match="split='train\\[:50000\\]'"):
    _tiny(tiny_dir, max_train=10)
  with pytest.raises(sources.DatasetNotFoundError, match="tfds build cifar10"):
    _load(dict(cfg, tfds_name="cifar10", in_memory=False), image_size=16,
          data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="no feature 'segmentation'"):
    _tiny(tiny_dir, mask_key="segmentation")


# ----------------------------------------------------------------------------
# tfds.testing.mock_data (no files: fixed-order reader)
# ----------------------------------------------------------------------------


def test_mock_streaming_batches_determinism_resume(tmp_path):
  with tfds.testing.mock_data(num_examples=12):
    cfg = dict(name="c10", source="tfds", tfds_name="cifar10")
    dom = _load(dict(cfg, in_memory=False), image_size=32,
                data_dir=str(tmp_path))
    assert dom.is_streaming and dom.num_train == 12  # Counted (no info).
    ref = _load(cfg, image_size=32, data_dir=str(tmp_path))
    assert not ref.is_streaming  # Auto: unknown size means in memory.
    c = _config(n=5, large=4, small=2, size=32, small_size=16)
    batches = _take(c, [dom], 4)
    for b in batches:
      assert b["large"].shape == (5, 4, 32, 32, 3)
      assert b["small"].shape == (5, 2, 16, 16, 3)
      assert np.isfinite(b["large"]).all() and np.isfinite(b["small"]).all()
      np.testing.assert_array_equal(b["domain"], [0] * 5)
      assert b["label"].dtype == np.int32 and b["label"].max() < 10
    np.testing.assert_array_equal(batches[3]["index"], np.arange(15, 20))
    # Resume (a fresh pipeline, so also determinism): step 2 spans the end
    # of epoch 0 and the start of epoch 1 of the 12 streamed images.
    _assert_batches_equal(_take(c, [dom], 1, start_step=2)[0], batches[2])
    # Identity views: every epoch shows each of the 12 images once.
    ci = _config(n=6, large=1, identity=True, size=32)
    identity = _take(ci, [dom], 4)
    seen = np.concatenate([b["large"][:, 0] for b in identity])
    images = ref.train_images / 255.0
    match = np.array([np.abs(images - v).reshape(12, -1).max(1).argmin()
                      for v in seen])
    np.testing.assert_allclose(seen, images[match], atol=1e-4)
    for epoch in match.reshape(2, 12):
      np.testing.assert_array_equal(np.sort(epoch), np.arange(12))
    labels = np.concatenate([b["label"] for b in identity])
    np.testing.assert_array_equal(labels, ref.train_labels[match])


def test_mock_eval_arrays_are_capped_first_examples(tmp_path):
  with tfds.testing.mock_data(num_examples=20):
    cfg = dict(name="c10", source="tfds", tfds_name="cifar10")
    dom = _load(dict(cfg, in_memory=False), image_size=32,
                data_dir=str(tmp_path))
    ref = _load(dict(cfg, max_train=7, max_test=5), image_size=32,
                data_dir=str(tmp_path))
    c = _config(size=32)
    (ev,) = pipeline.make_eval_arrays(c, [dom], max_train=7, max_test=5)
  assert ev["train_images"].shape == (7, 32, 32, 3)
  assert ev["test_images"].shape == (5, 32, 32, 3)
  mean, std = np.array(c.data.mean), np.array(c.data.std)
  np.testing.assert_allclose(ev["train_images"],
                             (ref.train_images / 255.0 - mean) / std,
                             atol=1e-4)
  np.testing.assert_array_equal(ev["test_labels"], ref.test_labels)


def test_mock_class_subset_tfds(tmp_path):
  with tfds.testing.mock_data(num_examples=40):
    cfg = dict(name="c10", source="tfds", tfds_name="cifar10")
    full = _load(cfg, image_size=32, data_dir=str(tmp_path))
    sub = _load(dict(cfg, class_subset=[3, 5]), image_size=32,
                data_dir=str(tmp_path))
    stream = _load(
        dict(cfg, class_subset=[3, 5], in_memory=False), image_size=32,
        data_dir=str(tmp_path))
    ev = pipeline.make_eval_arrays(_config(size=32), [stream])[0]
  keep = np.isin(full.train_labels, [3, 5])
  assert sub.num_classes == 2 and stream.num_classes == 2
  np.testing.assert_array_equal(sub.train_images, full.train_images[keep])
  np.testing.assert_array_equal(sub.train_labels,
                                (full.train_labels[keep] == 5).astype(int))
  assert stream.num_train == keep.sum()
  np.testing.assert_array_equal(ev["train_labels"], sub.train_labels)


# ----------------------------------------------------------------------------
# Class subsets: npz, demo, files, validation
# ----------------------------------------------------------------------------


def _npz_set(root, masks=False):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (30, 8, 8, 3), np.uint8)
  labels = np.arange(30) % 3
  np.savez(root / "train.npz", images=images, labels=labels)
  np.savez(root / "test.npz", images=images[:9], labels=labels[:9])
  (root / "class_names.txt").write_text("n001 cat\nn002 dog\nn003 bird\n")
  if masks:
    m = np.zeros((30, 8, 8), np.uint8)
    for i in range(30):
      m[i, :i % 8 + 1] = 1  # Identifies the image.
    np.savez(root / "masks.npz", masks=m)
  return images, labels


def test_class_subset_npz(tmp_path):
  images, labels = _npz_set(tmp_path, masks=True)
  (tmp_path / "subset.txt").write_text("# birds first\nn003\n\nn001 # cats\n")
  base = dict(name="s", source="npz", path=str(tmp_path),
              masks_path=str(tmp_path / "masks.npz"))
  for subset in (["n003", "n001"], [2, 0], ["n003 bird", "0"],
                 str(tmp_path / "subset.txt")):
    dom = _load(dict(base, class_subset=subset), image_size=8)
    keep = np.flatnonzero(np.isin(labels, [2, 0]))
    assert dom.num_classes == 2
    np.testing.assert_array_equal(dom.train_images, images[keep])
    np.testing.assert_array_equal(dom.train_labels,
                                  np.where(labels[keep] == 2, 0, 1))
    np.testing.assert_array_equal(dom.train_masks.sum(axis=(1, 2)),
                                  (keep % 8 + 1) * 8)
    assert set(dom.test_labels) == {0, 1} and len(dom.test_labels) == 6
  dom = _load(dict(base, class_subset=[1], max_train=4), image_size=8)
  assert len(dom.train_images) == 4 and set(dom.train_labels) == {0}
  with pytest.raises(ValueError, match="unknown class 'n009'"):
    _load(dict(base, class_subset=["n009"]), image_size=8)
  with pytest.raises(ValueError, match="outside \\[0, 3\\)"):
    _load(dict(base, class_subset=[3]), image_size=8)
  with pytest.raises(ValueError, match="more than once"):
    _load(dict(base, class_subset=["n001", 0]), image_size=8)
  with pytest.raises(ValueError, match="no such file"):
    _load(dict(base, class_subset=str(tmp_path / "x.txt")), image_size=8)


def test_class_subset_demo_ids():
  dom = _load(
      dict(name="d", source="demo", demo_name="digits", class_subset=[7, 1],
           max_train=50),
      image_size=32)
  assert dom.num_classes == 2 and len(dom.train_images) == 50
  assert set(dom.train_labels) == {0, 1} and set(dom.test_labels) == {0, 1}
  with pytest.raises(ValueError, match="no class names"):
    _load(
        dict(name="d", source="demo", demo_name="digits",
             class_subset=["seven"]),
        image_size=32)


def test_builtin_imagenet100_list(tmp_path):
  entries = sources.read_class_subset("imagenet100")
  assert len(entries) == 100 and len(set(entries)) == 100
  assert entries[:3] == ["n02869837", "n01749939", "n02488291"]
  assert entries[-1] == "n02090622"
  names = tfds.builder("imagenet2012", data_dir=str(tmp_path)).info.features[
      "label"].names
  ids = sources.resolve_class_subset(entries, names=names, num_classes=1000,
                                     what="imagenet100")
  assert [names[i] for i in ids] == entries


@pytest.mark.parametrize("kw,match", [
    (dict(class_subset=[]), "empty list"),
    (dict(class_subset=["a", "a"]), "more than once"),
    (dict(class_subset=[1.5]), "entries must be"),
    (dict(class_subset=""), "empty string"),
    (dict(class_subset={"a": 1}), "must be a list"),
    (dict(in_memory="no"), "in_memory"),
])
def test_validate_new_domain_keys(kw, match):
  cfg = dict(name="x", source="tfds", tfds_name="cifar10", **kw)
  with pytest.raises(ValueError, match=match):
    sources.validate_domain_config(cfg)


def test_validate_shuffle_buffer_and_tfds_keys_only_for_tfds():
  data = config_lib.get_default_config().data
  data.shuffle_buffer = 0
  with pytest.raises(ValueError, match="shuffle_buffer"):
    sources.validate_data_config(data)
  with pytest.raises(ValueError, match="unknown keys.*mask_key"):
    sources.validate_domain_config(dict(name="d", source="demo",
                                        demo_name="digits", mask_key="m"))
  sources.validate_domain_config(dict(
      name="i", source="tfds", tfds_name="imagenet2012",
      class_subset="imagenet100", in_memory=False, mask_key="mask"))


def test_streaming_crop_matches_vectorised_augmentation():
  from mdssl_jax.data import augment  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (8, 40, 28, 3), np.uint8)
  u = rng.random((8, augment.NUM_UNIFORMS)).astype(np.float32)
  params = dict(flip_p=0.5, jitter_p=0.8, brightness=0.4, contrast=0.4,
                saturation=0.2, hue=0.1, gray_p=0.2, blur_p=0.5,
                blur_sigma=(0.1, 2.0), blur_kernel_frac=0.1, solarize_p=0.2,
                brightness_mode="multiplicative", mean=(0.5,) * 3,
                std=(0.25,) * 3)
  ref = augment.augment_batch(images, u, out_size=16, crop_area=(0.08, 1.0),
                              aspect=(0.75, 4 / 3), **params).numpy()
  crops = tf.stack([augment.random_resized_crop(
      images[i], u[i], out_size=16, crop_area=(0.08, 1.0),
      aspect=(0.75, 4 / 3)) for i in range(8)])
  got = augment.augment_cropped_batch(crops, u, **params).numpy()
  np.testing.assert_allclose(got, ref, atol=1e-4)
  with pytest.raises(ValueError, match="uint8"):
    augment.random_resized_crop(images[0].astype(np.float32), u[0],
                                out_size=8, crop_area=(0.5, 1.0),
                                aspect=(1.0, 1.0))


def test_streaming_input_shards_read_disjoint_even_splits(tiny_dir):
  """Each process's shard of a streamed domain is its tfds.even_splits part:
  the shards' epochs are disjoint and together one epoch of the split."""
  from mdssl_jax.data import shards  # pylint: disable=g-import-not-at-top
  dom = _tiny(tiny_dir)
  parts = [shards.shard_domain(dom, s, 2) for s in range(2)]
  assert [p.num_train for p in parts] == [_NUM_TRAIN // 2] * 2
  assert all(p.global_num_train == _NUM_TRAIN for p in parts)
  c = _config(n=4, identity=True)
  c.data.input_shards = 2
  labels = []
  for s, part in enumerate(parts):
    held = shards.Held(2, {s: [part]})
    # 6 steps × 2 rows = one epoch of the 12-example shard.
    batches = _take(c, None, _NUM_TRAIN // 4, held=held)
    labels.append(np.concatenate([b["label"] for b in batches]))
    assert sorted(set(labels[-1])) == sorted(labels[-1])  # One epoch.
  assert sorted(np.concatenate(labels)) == list(range(_NUM_TRAIN))
  with pytest.raises(ValueError, match="one input shard"):
    shards.merge(parts)
