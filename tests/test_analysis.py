"""Known-answer tests of the representation metrics, the block outputs,
the plots and `python -m mdssl_jax.analyze` on a tiny trained workdir."""

from __future__ import annotations

import json
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from scipy import linalg

from mdssl_jax import analyze as analyze_lib
from mdssl_jax import config_lib
from mdssl_jax import presets
from mdssl_jax import train
from mdssl_jax.evaluation import analysis
from mdssl_jax.evaluation import blocks
from mdssl_jax.evaluation import plots
from mdssl_jax.evaluation.blocks import BlockExtractor

_REPO = Path(__file__).resolve().parents[1]
_ANALYSIS_CONFIG = str(_REPO / "configs" / "eval" / "analysis.py")


def _orthogonal(p: int, seed: int) -> np.ndarray:
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(p, p)))
  return q


# --------------------------------------------------------------------------
# Linear CKA.


def test_cka_self_orthogonal_and_isotropic_scaling():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(200, 10))
  y = x @ rng.normal(size=(10, 6)) + 0.5 * rng.normal(size=(200, 6))
  assert analysis.linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
  base = analysis.linear_cka(x, y)
  assert 0.2 < base < 0.99
  moved = analysis.linear_cka(3.7 * x @ _orthogonal(10, 1),
                              0.01 * y @ _orthogonal(6, 2))
  assert moved == pytest.approx(base, abs=1e-12)
  assert analysis.linear_cka(x, 5.0 * x @ _orthogonal(10, 3)) == (
      pytest.approx(1.0, abs=1e-12))


def test_cka_independent_features_near_zero():
  rng = np.random.default_rng(1)
  # E[CKA] ≈ sqrt(p1·p2)/n = 0.0025 for independent Gaussians.
  value = analysis.linear_cka(rng.normal(size=(2000, 5)),
                              rng.normal(size=(2000, 5)))
  assert 0.0 <= value < 0.01


def test_cka_feature_form_equals_gram_form_and_matrix():
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(30, 7)), rng.normal(size=(30, 50))
  y[:, :7] += 2 * x
  feature = analysis.linear_cka(x, y, form="feature")
  gram = analysis.linear_cka(x, y, form="gram")
  assert feature == pytest.approx(gram, rel=1e-12)
  assert analysis.linear_cka(x, y) == pytest.approx(gram, rel=1e-12)
  z = rng.normal(size=(30, 3))
  within = analysis.cka_matrix([x, y, z])
  assert np.allclose(np.diag(within), 1.0)
  assert np.allclose(within, within.T)
  assert within[0, 1] == pytest.approx(feature, rel=1e-10)
  between = analysis.cka_matrix([x, y], [z, x])
  assert between.shape == (2, 2)
  assert between[1, 0] == pytest.approx(analysis.linear_cka(y, z), rel=1e-10)
  assert between[0, 1] == pytest.approx(1.0)


def test_cka_bad_input():
  x = np.ones((10, 3))
  with pytest.raises(ValueError, match="same images"):
    analysis.linear_cka(np.zeros((10, 3)) + np.arange(10)[:, None],
                        np.zeros((9, 3)))
  with pytest.raises(ValueError, match="constant"):
    analysis.linear_cka(x, np.random.default_rng(0).normal(size=(10, 2)))
  with pytest.raises(ValueError, match="2-D"):
    analysis.linear_cka(np.zeros((10, 2, 2)), x)
  with pytest.raises(ValueError, match="at least 2 rows"):
    analysis.linear_cka(np.zeros((1, 3)), np.zeros((1, 3)))
  with pytest.raises(ValueError, match="same images"):
    analysis.cka_matrix([np.eye(4)], [np.eye(5)])


# --------------------------------------------------------------------------
# Fréchet distance.


def test_frechet_distance_zero_and_mean_shift():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(500, 8)) @ rng.normal(size=(8, 8))
  assert analysis.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
  shift = rng.normal(size=8)
  for scale in (0.5, 2.0, 10.0):
    # Same covariance: only the ‖Δμ‖² term is left.
    assert analysis.frechet_distance(x, x + scale * shift) == pytest.approx(
        scale ** 2 * shift @ shift, rel=1e-8, abs=1e-8)


def test_frechet_distance_matches_sqrtm_reference():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(400, 5)) * np.array([1.0, 2.0, 0.5, 1.5, 1.0])
  y = rng.normal(size=(300, 5)) @ (np.eye(5) + 0.3 * rng.normal(size=(5, 5)))
  y += 1.0
  s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
  diff = x.mean(0) - y.mean(0)
  reference = (diff @ diff + np.trace(s1) + np.trace(s2)
               - 2 * np.trace(linalg.sqrtm(s1 @ s2).real))
  assert analysis.frechet_distance(x, y) == pytest.approx(reference,
                                                          rel=1e-9)
  assert analysis.frechet_distance(y, x) == pytest.approx(reference,
                                                          rel=1e-9)


def test_frechet_distance_warns_and_rejects():
  rng = np.random.default_rng(5)
  with pytest.warns(UserWarning, match="n <= p"):
    analysis.frechet_distance(rng.normal(size=(6, 8)),
                              rng.normal(size=(20, 8)))
  with pytest.raises(ValueError, match="same feature width"):
    analysis.frechet_distance(np.eye(4), np.eye(5))


# --------------------------------------------------------------------------
# RankMe, alignment, uniformity.


def test_rankme_rank_k_and_collapsed():
  rng = np.random.default_rng(6)
  u = _orthogonal(100, 7)[:, :8]
  v = _orthogonal(32, 8)[:8]
  # Rank 8 with equal singular values: exactly 8 (up to ε).
  assert analysis.rankme(u @ v) == pytest.approx(8.0, rel=1e-4)
  # A generic rank-8 matrix: unequal singular values, below 8.
  generic = analysis.rankme(rng.normal(size=(100, 8))
                            @ rng.normal(size=(8, 32)))
  assert 5.0 < generic < 8.0
  collapsed = np.outer(rng.normal(size=100), rng.normal(size=32))
  assert analysis.rankme(collapsed) == pytest.approx(1.0, abs=1e-3)
  assert analysis.rankme(rng.normal(size=(500, 32))) > 28
  with pytest.raises(ValueError, match="all-zero"):
    analysis.rankme(np.zeros((4, 3)))


def test_alignment_and_uniformity_known_values():
  rng = np.random.default_rng(9)
  z = rng.normal(size=(50, 16))
  assert analysis.alignment(z, 3.0 * z) == pytest.approx(0.0, abs=1e-12)
  # Antipodal pairs on the unit sphere: ‖u − (−u)‖² = 4.
  assert analysis.alignment(z, -z) == pytest.approx(4.0)
  collapsed = np.tile(rng.normal(size=(1, 16)), (40, 1))
  collapsed *= rng.uniform(0.5, 2.0, size=(40, 1))
  assert analysis.uniformity(collapsed) == pytest.approx(0.0, abs=1e-12)
  # Two antipodal points: one pair at squared distance 4, log e^(−2·4).
  assert analysis.uniformity(np.array([[1.0, 0.0], [-2.0, 0.0]])) == (
      pytest.approx(-8.0))
  spread = analysis.uniformity(rng.normal(size=(300, 16)))
  assert -4.0 < spread < -3.0  # Uniform on S^15: ≈ log E e^(−2‖·‖²).
  with pytest.raises(ValueError, match="paired"):
    analysis.alignment(z, z[:10])
  with pytest.raises(ValueError, match="all-zero rows"):
    analysis.uniformity(np.zeros((3, 2)))


# --------------------------------------------------------------------------
# Class structure.


def test_class_distance_ratio_on_constructed_clusters():
  x = np.array([[0.0], [1.0], [10.0], [11.0]])
  labels = np.array([0, 0, 1, 1])
  # Within: |0 − 1| = 1; between: mean(10, 11, 9, 10) = 10.
  classes, ratios = analysis.class_distance_ratios(x, labels)
  assert classes.tolist() == [0, 1]
  assert ratios == pytest.approx([10.0, 10.0])
  assert analysis.class_distance_ratio(x, labels) == pytest.approx(10.0)
  rng = np.random.default_rng(10)
  centres = rng.normal(size=(3, 8)) * 10
  tight = np.repeat(centres, 20, axis=0) + rng.normal(size=(60, 8))
  loose = np.repeat(centres, 20, axis=0) + 5 * rng.normal(size=(60, 8))
  labels = np.repeat(np.arange(3), 20)
  assert (analysis.class_distance_ratio(tight, labels)
          > 2 * analysis.class_distance_ratio(loose, labels))
  with pytest.raises(ValueError, match="at least 2 points"):
    analysis.class_distance_ratios(x[:3], np.array([0, 0, 1]))
  with pytest.raises(ValueError, match="at least 2 classes"):
    analysis.class_distance_ratios(x, np.zeros(4))


def test_class_cosine_matrix_on_constructed_groups():
  means = {(0, 0): [1, 0, 0], (0, 1): [1, 1, 0], (1, 0): [0, 0, 1],
           (1, 1): [0, 1, 0]}
  feats, labels, domains = [], [], []
  for (d, c), m in means.items():
    for sign in (1, -1):  # Two rows per group, symmetric around the mean.
      feats.append(np.asarray(m, float) + sign * np.array([0.1, -0.2, 0.3]))
      labels.append(c)
      domains.append(d)
  matrix, groups = analysis.class_cosine_matrix(
      np.array(feats)[::-1], np.array(labels)[::-1], np.array(domains)[::-1])
  assert groups == [(0, 0), (0, 1), (1, 0), (1, 1)]
  r = 1 / np.sqrt(2)
  expected = np.array([[1, r, 0, 0], [r, 1, 0, r], [0, 0, 1, 0],
                       [0, r, 0, 1]])
  np.testing.assert_allclose(matrix, expected, atol=1e-12)
  # Domain names work too; groups sort by name.
  named, groups = analysis.class_cosine_matrix(
      np.array(feats), np.array(labels),
      np.where(np.array(domains) == 0, "svhn", "cifar"))
  assert groups == [("cifar", 0), ("cifar", 1), ("svhn", 0), ("svhn", 1)]
  np.testing.assert_allclose(named, expected[[2, 3, 0, 1]][:, [2, 3, 0, 1]],
                             atol=1e-12)


def test_balanced_indices():
  labels = np.array([0] * 50 + [1] * 10 + [2] * 40)
  idx = analysis.balanced_indices(labels, 30, seed=0)
  assert np.bincount(labels[idx]).tolist() == [10, 10, 10]
  assert np.array_equal(idx, analysis.balanced_indices(labels, 30, seed=0))
  assert not np.array_equal(idx, analysis.balanced_indices(labels, 30, 1))
  # Class 1 runs out at 10; the others share the rest.
  idx = analysis.balanced_indices(labels, 70, seed=0)
  assert np.bincount(labels[idx]).tolist() == [30, 10, 30]
  assert analysis.balanced_indices(labels, 500, seed=0).tolist() == list(
      range(100))


def test_tsne_embedding_is_seeded():
  rng = np.random.default_rng(11)
  x = np.concatenate([rng.normal(size=(20, 5)), 20 + rng.normal(size=(20, 5))])
  a = analysis.tsne_embedding(x, perplexity=5.0, seed=0)
  assert a.shape == (40, 2)
  np.testing.assert_allclose(a, analysis.tsne_embedding(x, perplexity=5.0,
                                                        seed=0))
  # The two clusters stay apart.
  gap = np.linalg.norm(a[:20].mean(0) - a[20:].mean(0))
  assert gap > 3 * a[:20].std(0).max()
  with pytest.raises(ValueError, match="perplexity"):
    analysis.tsne_embedding(x[:5], perplexity=5.0, seed=0)


def test_plots_heatmap_table_and_index(tmp_path):
  png = plots.heatmap(np.eye(2), str(tmp_path / "h.png"), rows=["a", "b"],
                      cols=["a", "b"], title="t", vmin=0, vmax=1)
  assert Path(png).read_bytes()[:4] == b"\x89PNG"
  with pytest.raises(ValueError, match="does not match 1 row"):
    plots.heatmap(np.eye(2), str(tmp_path / "bad.png"), rows=["a"],
                  cols=["a", "b"], title="t")
  index = plots.write_index(
      str(tmp_path / "index.html"), title="<run>",
      sections=[("s", plots.html_table(["key"], [["<v>"]]), [png])])
  text = Path(index).read_text()
  assert "<img src='h.png'" in text  # Relative to the page.
  assert "<td>&lt;v&gt;</td>" in text and "<h1>&lt;run&gt;</h1>" in text


# --------------------------------------------------------------------------
# Block outputs of a tiny ResNet-18 (width 1/16: 4, 8, 16, 32 channels).


def _tiny_config():
  config = presets.tiny_test_config(config_lib.get_default_config("simclr"),
                                    steps=3)
  config.mesh_shape = 1
  return config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A 3-step tiny SimCLR run (digits and textures, 16 px)."""
  path = str(tmp_path_factory.mktemp("analysis") / "run")
  train.train_and_evaluate(_tiny_config(), path)
  return path


@pytest.fixture(scope="module")
def tiny_method(workdir):
  """(method, params, batch_stats) of the run's restored encoder."""
  import jax  # pylint: disable=g-import-not-at-top
  setup, state, _ = train.load_for_eval(_tiny_config(), workdir)
  return (setup.method,) + jax.device_get((state.params, state.batch_stats))


def test_block_outputs_pooled_and_flattened(tiny_method):
  method, params, batch_stats = tiny_method
  images = np.random.default_rng(0).normal(size=(5, 16, 16, 3))
  pooled = BlockExtractor(method.network, reduce="pooled",
                          batch_size=4)(params, batch_stats,
                                        images)
  names = ["stem"] + [f"stage{i}_block{j}" for i in range(1, 5)
                      for j in (1, 2)]
  assert list(pooled) == names
  channels = [4, 4, 4, 8, 8, 16, 16, 32, 32]
  assert [v.shape for v in pooled.values()] == [(5, c) for c in channels]
  # The last block, pooled, is the encoder's own feature vector.
  feats = np.asarray(method.features(params, batch_stats,
                                           images.astype(np.float32)))
  np.testing.assert_allclose(pooled["stage4_block2"], feats, rtol=1e-5,
                             atol=1e-6)
  flat = BlockExtractor(method.network, reduce="flattened",
                        batch_size=8)(params, batch_stats, images)
  sides = [16, 16, 16, 8, 8, 4, 4, 2, 2]  # CIFAR stem, stride 2 per stage.
  assert [v.shape for v in flat.values()] == [
      (5, s * s * c) for s, c in zip(sides, channels)]
  for name, c in zip(names, channels):
    np.testing.assert_allclose(flat[name].reshape(5, -1, c).mean(1),
                               pooled[name], rtol=1e-5, atol=1e-6)
  assert analyze_lib.BLOCK_REDUCTIONS == blocks.REDUCTIONS
  with pytest.raises(ValueError, match="block reduction"):
    BlockExtractor(method.network, reduce="max", batch_size=4)


# --------------------------------------------------------------------------
# The analyze CLI on a tiny trained workdir.


def _settings():
  settings = config_lib.load_config(_ANALYSIS_CONFIG)
  settings.update(read_per_domain=60, max_per_domain=40, cka_images=48,
                  tsne_max_points=60, batch_size=32)
  return settings


@pytest.fixture(scope="module")
def single(workdir):
  return analyze_lib.analyze(workdir, _settings(), log=lambda m: None)


def _check_page(out: Path, result: dict):
  with open(out / "analysis.json") as f:
    saved = json.load(f)
  assert saved["plots"] == result["plots"]
  page = (out / "index.html").read_text()
  linked = set(re.findall(r"<img src='([^']+)'", page))
  pngs = {p.name for p in out.glob("*.png")}
  assert linked == pngs == set(saved["plots"])
  for name in pngs:
    assert (out / name).stat().st_size > 1000, name
    assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  return saved


def test_analyze_single_run(workdir, single):
  out = Path(workdir) / "analysis"
  saved = _check_page(out, single)
  assert set(saved) == {"settings", "encoders", "alignment_pairs", "plots",
                        "seconds", "output_dir"}
  assert saved["plots"] == sorted(["metrics.png", "cka_blocks.png",
                                   "class_cosine.png", "fd_domains.png",
                                   "tsne.png"])
  (label, enc), = saved["encoders"].items()
  assert label == "run@3" and enc["step"] == 3
  assert set(enc["domains"]) == {"digits", "textures"}
  for m in enc["domains"].values():
    assert m["images"] == 40
    assert 1.0 <= m["rankme"] <= 32
    assert 0.0 <= m["alignment"] <= 4.0
    assert -8.0 <= m["uniformity"] <= 0.0
    assert m["class_distance_ratio"] > 0
  assert set(enc["mean"]) == {"rankme", "alignment", "uniformity",
                              "class_distance_ratio"}
  fd = np.array(enc["fd"]["matrix"])
  assert fd.shape == (2, 2) and np.allclose(fd, fd.T)
  assert fd[0, 0] == 0 and fd[0, 1] > 0
  cka = np.array(enc["cka"]["matrix"])
  assert enc["cka"]["reduce"] == "pooled" and enc["cka"]["images"] == 48
  assert enc["cka"]["blocks"][0] == "stem" and cka.shape == (9, 9)
  np.testing.assert_allclose(np.diag(cka), 1.0)
  assert np.all((cka >= 0) & (cka <= 1))
  assert len(enc["tsne"]["embedding"]) == 60
  assert enc["tsne"]["perplexity"] == pytest.approx(59 / 3)
  cos = np.array(enc["class_cosine"]["matrix"])
  assert cos.shape == (len(enc["class_cosine"]["groups"]),) * 2
  np.testing.assert_allclose(np.diag(cos), 1.0)


def test_analyze_compare_with_itself(workdir, single, tmp_path):
  twin = tmp_path / "twin"
  shutil.copytree(workdir, twin, ignore=shutil.ignore_patterns("analysis"))
  settings = _settings()
  settings.block_reduce = "flattened"
  result = analyze_lib.analyze(workdir, settings, compare=str(twin),
                               log=lambda m: None)
  out = Path(workdir) / "analysis" / "compare_twin"
  saved = _check_page(out, result)
  assert set(saved["encoders"]) == {"run@3", "twin@3"}
  assert "cka_between.png" in saved["plots"]
  assert "a_cka_blocks.png" in saved["plots"]
  # The same encoder on the same images: cross CKA = within CKA.
  assert saved["cka_between"]["reduce"] == "flattened"
  between = np.array(saved["cka_between"]["matrix"])
  within = saved["encoders"]["run@3"]["cka"]
  assert within["block_dims"]["stem"] == 16 * 16 * 4
  assert within["block_dims"]["stage4_block2"] == 2 * 2 * 32
  np.testing.assert_allclose(between, within["matrix"], atol=1e-6)
  np.testing.assert_allclose(np.diag(between), 1.0, atol=1e-6)
  # Flattening keeps the spatial layout: other numbers than pooling.
  pooled = np.array(single["encoders"]["run@3"]["cka"]["matrix"])
  assert np.abs(between - pooled).max() > 0.01
  assert saved["encoders"]["twin@3"]["mean"] == pytest.approx(
      single["encoders"]["run@3"]["mean"], rel=1e-6)


def test_analyze_clear_errors(workdir, tmp_path):
  settings = _settings()
  with pytest.raises(FileNotFoundError, match="does not exist"):
    analyze_lib.analyze(str(tmp_path / "nope"), settings)
  bare = tmp_path / "bare"
  bare.mkdir()
  shutil.copy(os.path.join(workdir, "config.json"), bare)
  with pytest.raises(FileNotFoundError, match="No checkpoint"):
    analyze_lib.analyze(str(bare), settings)
  with pytest.raises(FileNotFoundError, match="no checkpoint at step"):
    analyze_lib.analyze(workdir, settings, step=7)
  other = tmp_path / "other"
  other.mkdir()
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  config["views"]["large"]["size"] = 32
  with open(other / "config.json", "w") as f:
    json.dump(config, f)
  with pytest.raises(ValueError, match=r"image size .* is 16 .* but 32"):
    analyze_lib.analyze(workdir, settings, compare=str(other))
  settings.block_reduce = "max"
  settings.cka_images = 10 ** 6
  with pytest.raises(ValueError, match=r"cka_images=1000000 is above 5000.*"
                     r"block_reduce='max'; use one of \('pooled'"):
    analyze_lib.analyze(workdir, settings)


def test_analyze_cli_errors_are_one_line(tmp_path):
  for args, expected in (
      ([f"--workdir={tmp_path / 'nope'}"], "does not exist"),
      ([f"--workdir={tmp_path}", "--config.block_reduce=max"],
       "block_reduce='max'"),
      ([f"--workdir={tmp_path}", "--config.blok_reduce=x"],
       "Did you mean --config.block_reduce")):
    proc = subprocess.run(
        [sys.executable, "-m", "mdssl_jax.analyze",
         f"--config={_ANALYSIS_CONFIG}", *args], cwd=_REPO,
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert expected in proc.stderr and "Traceback" not in proc.stderr, (
        proc.stderr[-2000:])


def test_analyze_module_imports_without_jax():
  code = ("import sys; import mdssl_jax.analyze; "
          "heavy = {'jax', 'flax', 'tensorflow'} & set(sys.modules); "
          "assert not heavy, heavy")
  proc = subprocess.run([sys.executable, "-c", code], cwd=_REPO,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
