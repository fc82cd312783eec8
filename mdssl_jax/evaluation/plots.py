"""PNG plots and the HTML page of `python -m mdssl_jax.analyze`.

Every function writes one PNG (matplotlib, Agg backend) and returns its
path: heatmaps (CKA block × block, class-averaged cosine similarity, FD
between domains), a t-SNE scatter coloured by domain and by class, and a
metrics table. `write_index` puts the PNGs and tables on one HTML page.
"""

from __future__ import annotations

from collections.abc import Sequence
import html
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

_DPI = 100
_MARKERS = "o^sDvP*X"


def _save(fig, path: str) -> str:
  fig.tight_layout()
  fig.savefig(path, dpi=_DPI)
  plt.close(fig)
  return path


def heatmap(matrix: np.ndarray, path: str, *, rows: Sequence[str],
            cols: Sequence[str], title: str, vmin: float | None = None,
            vmax: float | None = None, annotate: bool = True,
            cmap: str = "viridis") -> str:
  """A labelled heatmap of a [R, C] matrix.

  Args:
    matrix: [R, C] values.
    path: output .png.
    rows: R row labels (top to bottom).
    cols: C column labels (left to right).
    title: figure title.
    vmin, vmax: colour range; None: the data's range.
    annotate: print each value in its cell (skipped above 20 × 20).
    cmap: matplotlib colour map name.

  Returns:
    path.
  """
  matrix = np.asarray(matrix, dtype=np.float64)
  if matrix.shape != (len(rows), len(cols)):
    raise ValueError(f"matrix shape {matrix.shape} does not match "
                     f"{len(rows)} row and {len(cols)} column labels.")
  side = 2.5 + 0.45 * max(matrix.shape)
  fig, ax = plt.subplots(figsize=(side + 1.5, side))
  image = ax.imshow(matrix, vmin=vmin, vmax=vmax, cmap=cmap)
  ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=8)
  ax.set_yticks(range(len(rows)), rows, fontsize=8)
  if annotate and max(matrix.shape) <= 20:
    lo, hi = image.get_clim()
    for (i, j), value in np.ndenumerate(matrix):
      light = (value - lo) < 0.5 * (hi - lo)
      ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
              color="white" if light else "black")
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
  ax.set_title(title, fontsize=10)
  return _save(fig, path)


def tsne_scatter(embedding: np.ndarray, path: str, *, domains: np.ndarray,
                 labels: np.ndarray, domain_names: Sequence[str],
                 title: str) -> str:
  """t-SNE points coloured by domain (left) and by class (right).

  Args:
    embedding: [n, 2] t-SNE coordinates.
    path: output .png.
    domains: [n] domain index of each point (into domain_names).
    labels: [n] class label of each point.
    domain_names: the domains' names.
    title: figure title.

  Returns:
    path.
  """
  fig, axes = plt.subplots(1, 2, figsize=(11, 5))
  for d, name in enumerate(domain_names):
    keep = domains == d
    axes[0].scatter(embedding[keep, 0], embedding[keep, 1], s=6,
                    label=name, alpha=0.7)
  axes[0].legend(fontsize=8, markerscale=2)
  axes[0].set_title("by domain", fontsize=10)
  classes = np.unique(labels)
  cmap = plt.get_cmap("tab10" if classes.size <= 10 else "tab20")
  # Label ids are per domain: one marker per domain keeps them apart.
  for k, c in enumerate(classes):
    for d in range(len(domain_names)):
      keep = (labels == c) & (domains == d)
      axes[1].scatter(embedding[keep, 0], embedding[keep, 1], s=8,
                      color=cmap(k % cmap.N), alpha=0.7,
                      marker=_MARKERS[d % len(_MARKERS)],
                      label=str(c) if d == 0 else None)
  if classes.size <= 20:
    axes[1].legend(fontsize=7, markerscale=2, ncol=2, title="class")
  axes[1].set_title("by class (marker: domain)", fontsize=10)
  for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(title, fontsize=11)
  return _save(fig, path)


def table_png(header: Sequence[str], rows: Sequence[Sequence[str]],
              path: str, *, title: str) -> str:
  """A table of strings rendered as a PNG.

  Args:
    header: column titles.
    rows: table rows, each with len(header) cells.
    path: output .png.
    title: figure title.

  Returns:
    path.
  """
  fig, ax = plt.subplots(figsize=(1.6 * len(header) + 1,
                                  0.6 + 0.3 * (len(rows) + 1)))
  ax.axis("off")
  table = ax.table(cellText=[list(r) for r in rows], colLabels=list(header),
                   loc="center")
  table.auto_set_font_size(False)
  table.set_fontsize(8)
  ax.set_title(title, fontsize=10)
  return _save(fig, path)


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """An HTML <table> of strings (escaped)."""
  head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
  body = "".join(
      "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
      for row in rows)
  return f"<table><tr>{head}</tr>{body}</table>"


def write_index(path: str, *, title: str,
                sections: Sequence[tuple[str, str, Sequence[str]]]) -> str:
  """One HTML page with every table and image, linked relatively.

  Args:
    path: output index.html; images are linked relative to its folder.
    title: page title.
    sections: (heading, html snippet, image paths) per section; the
      snippet (e.g. from `html_table`) is inserted as is.

  Returns:
    path.
  """
  root = os.path.dirname(os.path.abspath(path))
  parts = [f"<!doctype html><html><head><meta charset='utf-8'>"
           f"<title>{html.escape(title)}</title><style>"
           "body{font-family:sans-serif;margin:2em}"
           "table{border-collapse:collapse;margin:1em 0}"
           "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}"
           "img{max-width:100%;margin:0.5em 0}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>"]
  for heading, snippet, images in sections:
    parts.append(f"<h2>{html.escape(heading)}</h2>{snippet}")
    for image in images:
      rel = os.path.relpath(os.path.abspath(image), root)
      parts.append(f"<div><img src='{html.escape(rel)}' "
                   f"alt='{html.escape(rel)}'></div>")
  parts.append("</body></html>")
  with open(path, "w") as f:
    f.write("\n".join(parts))
  return path
