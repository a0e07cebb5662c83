"""The review sheet: the images a person should look at, largest score first, each with its score and where the
detector looks (the anomaly map over it), so that the removed and borderline images are confirmed in a minute.

`write(path, images, scores, maps, titles)` draws pages of at most `per_page` images: one page is `path`
(`review.png`), more are `review_1.png`, `review_2.png`, ... (pages left over from an earlier, longer sheet are
deleted, so the folder never mixes two sheets).
"""
from __future__ import annotations

import glob
import os
import re

import numpy as np

from maml_iqr import anomaly_maps

PER_PAGE = 24
COLUMNS = 6


def part_scores(objects, scores) -> list[tuple[str, float]]:
  """(part, its highest image score) for every part named in `objects` (one per score), highest first (ties by
  name): the inspector decides per part, and a part is defective when any of its images is."""
  objects, scores = np.asarray(objects), np.asarray(scores, np.float64)
  top = {name: float(np.nanmax(np.where(objects == name, scores, -np.inf))) for name in sorted(set(objects.tolist()))}
  return sorted(top.items(), key=lambda item: -item[1])


def page_order(scores, per_page: int = PER_PAGE) -> list[np.ndarray]:
  """Indices of the images by score, largest first (ties in input order), cut into pages of `per_page`."""
  if per_page < 1:
    raise ValueError(f"per_page={per_page}: expected an integer >= 1")
  order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
  return [order[i:i + per_page] for i in range(0, len(order), per_page)]


def page_paths(path: str, n_pages: int) -> list[str]:
  """`path` for a single page; `<stem>_1<ext>`, `<stem>_2<ext>`, ... for several."""
  if n_pages == 1:
    return [path]
  stem, ext = os.path.splitext(path)
  return [f"{stem}_{k}{ext}" for k in range(1, n_pages + 1)]


def _remove_stale_pages(path: str, keep: list[str]) -> None:
  stem, ext = os.path.splitext(path)
  pattern = re.compile(re.escape(os.path.basename(stem)) + r"_\d+" + re.escape(ext) + "$")
  candidates = [path] + [p for p in glob.glob(glob.escape(stem) + "_*" + ext) if pattern.match(os.path.basename(p))]
  for p in candidates:
    if p not in keep and os.path.isfile(p):
      os.remove(p)


def write(path: str, images, scores, maps=None, titles=None, per_page: int = PER_PAGE, columns: int = COLUMNS,
          threshold: float | None = None, heading: str = "") -> list[str]:
  """Draws the contact sheet of uint8 images (N, H, W, 3) with their scores (N,) and optional maps (N, H, W)
  and titles (N,) (e.g. file names); scores above `threshold` are printed in red. Returns the pages written
  (none for no images)."""
  import matplotlib  # noqa: PLC0415 - plotting only where asked for
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  images = np.asarray(images)
  scores = np.asarray(scores, np.float64)
  n = len(scores)
  if images.shape[0] != n or (maps is not None and len(maps) != n) or (titles is not None and len(titles) != n):
    raise ValueError(f"review.write: {images.shape[0]} images, {n} scores, "
                     f"{'no' if maps is None else len(maps)} maps, {'no' if titles is None else len(titles)} titles; "
                     "give one of each per image")
  pages = page_order(scores, per_page)
  paths = page_paths(path, len(pages))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  _remove_stale_pages(path, paths)
  for page_number, (idx, out) in enumerate(zip(pages, paths), start=1):
    cols = min(columns, len(idx))
    rows = -(-len(idx) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.7 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
      ax.axis("off")
    for ax, i in zip(axes.ravel(), idx):
      shown = images[i] if maps is None else anomaly_maps.overlay(images[i], np.asarray(maps[i]))
      ax.imshow(shown)
      flagged = threshold is not None and scores[i] > threshold
      name = "" if titles is None else f"{titles[i]}\n"
      ax.set_title(f"{name}score {scores[i]:.4g}", fontsize=7, color="red" if flagged else "black")
    title = heading or "largest score first"
    if len(pages) > 1:
      title += f" (page {page_number} of {len(pages)})"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
  return paths
