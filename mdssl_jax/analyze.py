r"""Representation analysis of a trained encoder: numbers, PNGs, one page.

  python -m mdssl_jax.analyze --workdir=RUN --config=configs/eval/analysis.py
  python -m mdssl_jax.analyze --workdir=RUN --compare=RUN2 --step=200 \
      --config=configs/eval/analysis.py --config.block_reduce=flattened

On a class-balanced subset of every domain's test split (eval transform),
with the frozen backbone of the newest (or `--step`) checkpoint:

* per domain: RankMe, alignment (each image against its horizontal flip)
  and uniformity (Wang & Isola, t = 2), the between/within-class distance
  ratio (RELICv2 G.3);
* across domains: Fréchet distance between every pair of domains
  (METHODS §6.5), the class-averaged cosine-similarity heatmap (MDSSL
  Fig. A.1/A.2), a t-SNE coloured by domain and by class (MDSSL Fig. 4);
* linear CKA block × block within the encoder (METHODS §6.6; block outputs
  pooled or flattened, `block_reduce`), and with `--compare` between the
  two encoders, on the same images (RUN2 must use the same image size and
  normalisation; RUN's domains are used for both).

Writes `RUN/analysis/` (with `--compare`: `RUN/analysis/compare_<RUN2
name>/`): `analysis.json` (every number), the PNGs and `index.html`.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import sys
import time
from typing import Any, Callable
import warnings

from absl import app
from absl import flags
import ml_collections
import numpy as np

from mdssl_jax import evaluate
from mdssl_jax.evaluation import analysis
from mdssl_jax.evaluation import plots

_FLAGS = {}
# blocks.REDUCTIONS, restated: importing blocks loads JAX.
BLOCK_REDUCTIONS = ("pooled", "flattened")
# cka_matrix keeps one n × n float64 Gram per block (200 MB at n = 5000).
_MAX_CKA_IMAGES = 5000

_METRIC_HEADER = ("encoder", "domain", "images", "RankMe",
                  "alignment (flip)", "uniformity (t=2)",
                  "between/within class")

Log = Callable[[str], None]


def _print(message: str) -> None:
  print(message, flush=True)


def settings_errors(settings: ml_collections.ConfigDict) -> list[str]:
  """Problems in the analysis settings (configs/eval/analysis.py).

  Args:
    settings: the analysis ConfigDict.

  Returns:
    One message per problem, naming the fix; empty when valid.
  """
  errors = []
  for key in ("read_per_domain", "max_per_domain", "cka_images",
              "tsne_max_points", "tsne_threads", "batch_size"):
    if int(settings[key]) < 1:
      errors.append(f"{key}={settings[key]} must be >= 1.")
  if settings.max_per_domain > settings.read_per_domain:
    errors.append(f"max_per_domain={settings.max_per_domain} exceeds "
                  f"read_per_domain={settings.read_per_domain}; raise "
                  "read_per_domain.")
  if settings.cka_images > _MAX_CKA_IMAGES:
    errors.append(f"cka_images={settings.cka_images} is above "
                  f"{_MAX_CKA_IMAGES} (one n × n Gram matrix per block); "
                  "lower it.")
  if settings.block_reduce not in BLOCK_REDUCTIONS:
    errors.append(f"block_reduce={settings.block_reduce!r}; use one of "
                  f"{BLOCK_REDUCTIONS}.")
  if not settings.tsne_perplexity > 0:
    errors.append(f"tsne_perplexity={settings.tsne_perplexity} must be > 0.")
  return errors


def check_comparable(config: ml_collections.ConfigDict,
                     other: ml_collections.ConfigDict, workdir: str,
                     compare: str) -> None:
  """Raises a ValueError unless the runs see images the same way.

  CKA between encoders needs the same images as input to both: the image
  size and the normalisation must agree.
  """
  for what, a, b in (
      ("image size (views.large.size)", config.views.large.size,
       other.views.large.size),
      ("data.mean", list(config.data.mean), list(other.data.mean)),
      ("data.std", list(config.data.std), list(other.data.std))):
    if a != b:
      raise ValueError(
          f"--compare needs runs on the same images: {what} is {a} in "
          f"{workdir} but {b} in {compare}; compare runs trained at the "
          "same image size and normalisation.")


def output_dir(workdir: str, compare: str | None) -> str:
  """RUN/analysis, or RUN/analysis/compare_<RUN2 name> with --compare."""
  out = os.path.join(workdir, "analysis")
  if compare is None:
    return out
  name = os.path.basename(os.path.normpath(compare))
  return os.path.join(out, f"compare_{name}")


def _run_config(workdir: str, what: str) -> ml_collections.ConfigDict:
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"{what} {workdir} does not exist; pass a "
                            "workdir written by python -m mdssl_jax.main.")
  return evaluate.load_config(workdir)


def check_inputs(workdir: str, settings: ml_collections.ConfigDict, *,
                 compare: str | None, step: int | None):
  """The cheap checks, before JAX loads: settings, workdirs, checkpoints.

  Args:
    workdir, settings, compare, step: as for `analyze`.

  Returns:
    (run config, compare run config or None, [step, compare step?]).

  Raises:
    FileNotFoundError: missing workdir, config.json or checkpoint.
    ValueError: bad settings, or runs that cannot be compared.
  """
  errors = settings_errors(settings)
  if errors:
    raise ValueError("bad analysis settings: " + " ".join(errors))
  config = _run_config(workdir, "--workdir")
  steps = [evaluate.resolve_steps(workdir, None if step is None
                                  else [step])[0]]
  other = None
  if compare is not None:
    other = _run_config(compare, "--compare")
    check_comparable(config, other, workdir, compare)
    steps.append(evaluate.resolve_steps(compare, None)[0])
  return config, other, steps


@dataclasses.dataclass
class _Encoder:
  """A restored frozen encoder (host copies of its variables)."""
  label: str
  workdir: str
  step: int
  method: Any
  config: ml_collections.ConfigDict
  params: Any
  batch_stats: Any


def _load(config, workdir: str, step: int, label: str, log: Log):
  """(encoder, domains) of one checkpoint."""
  import jax  # pylint: disable=g-import-not-at-top
  from mdssl_jax import config_lib  # pylint: disable=g-import-not-at-top
  from mdssl_jax import train  # pylint: disable=g-import-not-at-top
  log(f"[{label}] restoring {workdir} step {step}")
  config_lib.validate(config, check_devices=False)
  setup, state, domains = train.load_for_eval(config, workdir, step=step)
  # Host copies: the analysis runs on the default device, whatever mesh
  # the run trained on.
  params, batch_stats = jax.device_get((state.params, state.batch_stats))
  return _Encoder(label, workdir, int(state.step), setup.method, config,
                  params, batch_stats), domains


def _subsets(config, domains, settings, log: Log) -> list[dict[str, Any]]:
  """Class-balanced test images of every domain."""
  from mdssl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  log(f"reading up to {settings.read_per_domain} test images per domain")
  arrays = pipeline.make_eval_arrays(config, domains, max_train=1,
                                     max_test=settings.read_per_domain)
  out = []
  for a in arrays:
    keep = analysis.balanced_indices(a["test_labels"],
                                     settings.max_per_domain, settings.seed)
    out.append({"name": a["name"], "images": a["test_images"][keep],
                "labels": a["test_labels"][keep]})
    log(f"  {a['name']}: {keep.size} images, "
        f"{np.unique(a['test_labels'][keep]).size} classes")
  return out


def _ratio_metrics(feats: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
  """Class distance ratios over the classes with >= 2 images."""
  classes, counts = np.unique(labels, return_counts=True)
  kept = classes[counts >= 2]
  rows = np.isin(labels, kept)
  if kept.size < 2:
    return {"class_distance_ratio": None,
            "class_distance_ratios": {},
            "class_distance_note": "fewer than 2 classes with 2+ images"}
  names, ratios = analysis.class_distance_ratios(feats[rows], labels[rows])
  return {"class_distance_ratio": float(np.mean(ratios)),
          "class_distance_ratios": {str(c): float(r)
                                    for c, r in zip(names, ratios)}}


def _extractors(enc: _Encoder, settings, cache: dict):
  """(features, blocks) extractors, shared by encoders of one network so
  that a comparison of two runs of one architecture compiles once."""
  # pylint: disable=g-import-not-at-top
  from mdssl_jax.evaluation.blocks import BlockExtractor
  from mdssl_jax.evaluation.features import FeatureExtractor
  # pylint: enable=g-import-not-at-top
  network = enc.method.network
  if network not in cache:
    cache[network] = (
        FeatureExtractor(enc.method.features, batch_size=settings.batch_size),
        BlockExtractor(network, reduce=settings.block_reduce,
                       batch_size=settings.batch_size))
  return cache[network]


def _analyze_encoder(enc: _Encoder, data: list[dict[str, Any]],
                     cka_images: np.ndarray, settings, out: str,
                     prefix: str, cache: dict, log: Log
                     ) -> tuple[dict[str, Any], dict[str, np.ndarray],
                                list[str]]:
  """(json section, reduced block outputs on cka_images, PNG paths)."""
  tag = f"[{enc.label}]"
  extractor, block_extractor = _extractors(enc, settings, cache)
  names = [d["name"] for d in data]
  feats, metrics = [], {}
  for d in data:
    log(f"{tag} features and metrics of {d['name']} "
        f"({len(d['labels'])} images)")
    f = extractor(enc.params, enc.batch_stats, d["images"])
    flipped = extractor(enc.params, enc.batch_stats,
                        d["images"][:, :, ::-1, :])
    feats.append(f)
    metrics[d["name"]] = {
        "images": int(f.shape[0]),
        "rankme": analysis.rankme(f),
        "alignment": analysis.alignment(f, flipped),
        "uniformity": analysis.uniformity(f),
        **_ratio_metrics(f, d["labels"])}
  scalar_keys = ("rankme", "alignment", "uniformity", "class_distance_ratio")
  mean = {k: float(np.mean([m[k] for m in metrics.values()]))
          for k in scalar_keys
          if all(m[k] is not None for m in metrics.values())}
  all_feats = np.concatenate(feats)
  labels = np.concatenate([d["labels"] for d in data])
  domain_ids = np.concatenate([np.full(len(d["labels"]), i)
                               for i, d in enumerate(data)])
  pngs = []

  log(f"{tag} Fréchet distance between {len(names)} domains")
  fd = np.zeros((len(names), len(names)))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for i in range(len(names)):
      for j in range(i + 1, len(names)):
        fd[i, j] = fd[j, i] = analysis.frechet_distance(feats[i], feats[j])
  fd_note = str(caught[0].message) if caught else None
  pngs.append(plots.heatmap(
      fd, os.path.join(out, f"{prefix}fd_domains.png"), rows=names,
      cols=names, title=f"{enc.label}: Fréchet distance² between domains",
      cmap="magma"))

  log(f"{tag} class-averaged cosine similarity")
  cosine, groups = analysis.class_cosine_matrix(
      all_feats, labels, np.asarray(names)[domain_ids])
  group_names = [f"{d}:{c}" for d, c in groups]
  pngs.append(plots.heatmap(
      cosine, os.path.join(out, f"{prefix}class_cosine.png"),
      rows=group_names, cols=group_names, vmin=-1.0, vmax=1.0,
      title=f"{enc.label}: cosine of class-averaged features",
      cmap="coolwarm"))

  keep = analysis.balanced_indices(domain_ids, settings.tsne_max_points,
                                   settings.seed)
  perplexity = min(float(settings.tsne_perplexity), (keep.size - 1) / 3)
  log(f"{tag} t-SNE of {keep.size} points (perplexity {perplexity:g})")
  embedding = analysis.tsne_embedding(all_feats[keep], perplexity=perplexity,
                                      seed=settings.seed,
                                      threads=settings.tsne_threads)
  pngs.append(plots.tsne_scatter(
      embedding, os.path.join(out, f"{prefix}tsne.png"),
      domains=domain_ids[keep], labels=labels[keep], domain_names=names,
      title=f"{enc.label}: t-SNE of backbone features"))

  log(f"{tag} block outputs ({settings.block_reduce}) of "
      f"{cka_images.shape[0]} images and block × block CKA")
  blocks = block_extractor(enc.params, enc.batch_stats, cka_images)
  block_names = list(blocks)
  cka = analysis.cka_matrix(list(blocks.values()))
  pngs.append(plots.heatmap(
      cka, os.path.join(out, f"{prefix}cka_blocks.png"), rows=block_names,
      cols=block_names, vmin=0.0, vmax=1.0,
      title=f"{enc.label}: linear CKA, {settings.block_reduce} blocks"))

  section = {
      "workdir": os.path.abspath(enc.workdir),
      "step": enc.step,
      "method": enc.config.method,
      "feature_dim": int(all_feats.shape[1]),
      "domains": metrics,
      "mean": mean,
      "fd": {"domains": names, "matrix": fd.tolist(), "note": fd_note},
      "class_cosine": {"groups": [[d, int(c)] for d, c in groups],
                       "matrix": cosine.tolist()},
      "tsne": {"points": int(keep.size), "perplexity": perplexity,
               "embedding": embedding.tolist(),
               "domain": [names[i] for i in domain_ids[keep]],
               "label": labels[keep].tolist()},
      "cka": {"blocks": block_names, "reduce": settings.block_reduce,
              "images": int(cka_images.shape[0]),
              "block_dims": {k: int(v.shape[1]) for k, v in blocks.items()},
              "matrix": cka.tolist()},
  }
  return section, blocks, pngs


def _fmt(value: float | None) -> str:
  return "-" if value is None else f"{value:.3f}"


def _metrics_rows(sections: dict[str, dict[str, Any]]) -> list[list[str]]:
  rows = []
  for label, s in sections.items():
    entries = list(s["domains"].items()) + [("mean", s["mean"])]
    for domain, m in entries:
      rows.append([label, domain, str(m.get("images", "")),
                   _fmt(m.get("rankme")), _fmt(m.get("alignment")),
                   _fmt(m.get("uniformity")),
                   _fmt(m.get("class_distance_ratio"))])
  return rows


def analyze(workdir: str, settings: ml_collections.ConfigDict, *,
            compare: str | None = None, step: int | None = None,
            log: Log = _print) -> dict[str, Any]:
  """Runs the analysis and writes analysis.json, PNGs and index.html.

  Args:
    workdir: a trained workdir (python -m mdssl_jax.main).
    settings: the analysis settings (configs/eval/analysis.py).
    compare: a second workdir; adds its encoder and the CKA between the
      two encoders' blocks (on the same images: workdir's domains).
    step: checkpoint step of `workdir` (compare uses its latest); None:
      the latest.
    log: progress printer.

  Returns:
    The analysis.json content: {"settings", "encoders": {label: section},
    "cka_between" (with compare), "plots", "seconds", "output_dir"}.

  Raises:
    FileNotFoundError: missing workdir, config.json or checkpoint.
    ValueError: bad settings, or runs that cannot be compared.
  """
  start = time.perf_counter()
  config, other, steps = check_inputs(workdir, settings, compare=compare,
                                      step=step)
  out = output_dir(workdir, compare)
  os.makedirs(out, exist_ok=True)

  label = f"{os.path.basename(os.path.normpath(workdir))}@{steps[0]}"
  first, domains = _load(config, workdir, steps[0], label, log)
  encoders = [first]
  if compare is not None:
    label_b = f"{os.path.basename(os.path.normpath(compare))}@{steps[1]}"
    if label_b == label:
      label_b += " (compare)"
    encoders.append(_load(other, compare, steps[1], label_b, log)[0])
  data = _subsets(config, domains, settings, log)
  all_images = np.concatenate([d["images"] for d in data])
  domain_ids = np.concatenate([np.full(len(d["labels"]), i)
                               for i, d in enumerate(data)])
  cka_images = all_images[analysis.balanced_indices(
      domain_ids, settings.cka_images, settings.seed)]

  sections, blocks, pngs, cache = {}, [], [], {}
  for i, enc in enumerate(encoders):
    prefix = "" if compare is None else "ab"[i] + "_"
    section, enc_blocks, enc_pngs = _analyze_encoder(
        enc, data, cka_images, settings, out, prefix, cache, log)
    sections[enc.label] = section
    blocks.append(enc_blocks)
    pngs.append((enc.label, enc_pngs))

  result = {"settings": settings.to_dict(), "encoders": sections,
            "alignment_pairs": "each image and its horizontal flip",
            "output_dir": os.path.abspath(out)}
  page = [("Metrics", plots.html_table(_METRIC_HEADER,
                                       _metrics_rows(sections)),
           [plots.table_png(_METRIC_HEADER, _metrics_rows(sections),
                            os.path.join(out, "metrics.png"),
                            title="representation metrics (test subsets)")])]
  if compare is not None:
    log(f"CKA between the blocks of {encoders[0].label} and "
        f"{encoders[1].label}")
    rows, cols = list(blocks[0]), list(blocks[1])
    between = analysis.cka_matrix(list(blocks[0].values()),
                                  list(blocks[1].values()))
    result["cka_between"] = {"rows": rows, "cols": cols,
                             "row_encoder": encoders[0].label,
                             "col_encoder": encoders[1].label,
                             "reduce": settings.block_reduce,
                             "images": int(cka_images.shape[0]),
                             "matrix": between.tolist()}
    page.append(("CKA between encoders", "", [plots.heatmap(
        between, os.path.join(out, "cka_between.png"),
        rows=[f"{encoders[0].label} {r}" for r in rows],
        cols=[f"{encoders[1].label} {c}" for c in cols], vmin=0.0, vmax=1.0,
        title=f"linear CKA between encoders, {settings.block_reduce} "
        "blocks")]))
  for enc_label, enc_pngs in pngs:
    section = sections[enc_label]
    notes = [f"step {section['step']}, method {section['method']}, "
             f"{section['feature_dim']}-d backbone features; CKA on "
             f"{section['cka']['images']} images, "
             f"{settings.block_reduce} block outputs."]
    if section["fd"]["note"]:
      notes.append(section["fd"]["note"])
    page.append((enc_label, "".join(f"<p>{html.escape(n)}</p>"
                                    for n in notes), enc_pngs))
  result["plots"] = sorted(os.path.basename(p) for _, _, ps in page
                           for p in ps)
  result["seconds"] = time.perf_counter() - start
  plots.write_index(
      os.path.join(out, "index.html"),
      title="Representation analysis: " + " vs ".join(sections), sections=[
          *page, ("Settings", plots.html_table(
              ("key", "value"),
              [[k, str(v)] for k, v in sorted(result["settings"].items())]),
                  [])])
  with open(os.path.join(out, "analysis.json"), "w") as f:
    json.dump(result, f, indent=1)
  log(f"analysis done in {result['seconds']:.1f}s: "
      f"{os.path.join(out, 'index.html')}")
  return result


def _define_flags() -> None:
  """CLI flags, defined only when run as a program."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("workdir", None, "Trained workdir.", required=True)
  flags.DEFINE_string("compare", None, "A second trained workdir (same "
                      "image size): adds CKA between the two encoders.")
  flags.DEFINE_integer("step", None, "Checkpoint step of --workdir "
                       "(default: the latest).")
  _FLAGS["config"] = config_flags.DEFINE_config_file(
      "config", None, "Analysis settings, e.g. configs/eval/analysis.py.",
      lock_config=True)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  settings = _FLAGS["config"].value
  if settings is None:
    raise app.UsageError(
        "--config is required, e.g. --config=configs/eval/analysis.py")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from mdssl_jax import cli  # pylint: disable=g-import-not-at-top
  cli.quiet_library_logs()
  f = flags.FLAGS
  try:  # Cheap checks first: bad input fails before TF and JAX load.
    check_inputs(f.workdir, settings, compare=f.compare, step=f.step)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(cli.error_line(e))
  cli.hide_gpus_from_tf()
  from mdssl_jax import checkpoint  # pylint: disable=g-import-not-at-top
  try:  # (A missing dataset is a FileNotFoundError too.)
    analyze(f.workdir, settings, compare=f.compare, step=f.step)
  except (FileNotFoundError, ValueError, checkpoint.CheckpointError) as e:
    sys.exit(cli.error_line(e))


def run() -> None:
  """Checks `--config.` overrides against the settings file, then runs."""
  from mdssl_jax import cli  # pylint: disable=g-import-not-at-top
  errors = cli.unknown_override_errors(sys.argv)
  if errors:
    sys.exit("error: " + "\n  ".join(errors))
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
