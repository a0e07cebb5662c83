"""Magnetic Tile holds each physical tile up to six times: what that does to the splits and to patch_iqr's score.

The dataset's file names are `MT_<class>/Imgs/exp<L>_num_<N>.jpg`: L (1-6) is one of six lighting setups and
consecutive N of rising L are one tile photographed under each (checked by eye: the same crack at the same
place; the crop moves by a few pixels). `readers.mtd_tiles` recovers the tiles from the names (a new tile where L
does not rise or N jumps by more than 300): 172 good tiles for 952 good images, 76 defective ones for 392. DifferNet's
split and the noise protocol work on images, not tiles, so:

  - a good training image shares its tile with about 4 others in the training set, and every good test image
    has captures of its own tile in the training set;
  - the injected defective images are drawn from the defective pool, so an injected defect is often there two or
    three times, and the test set's defective images often have a capture of their own tile (the same defect)
    in the training set as "good";
  - patch_iqr's score (a patch's distance to the 3rd nearest other image) leans on this: a good image's nearest
    images are mostly captures of its own tile.

This script measures these on the benchmark's splits, from the file names (no label is used to score; the
injected flags and the names are read only to report), and, for the table cells under `--roots`, each cell's
test AUROC against the defective test images whose tile was injected into its training set and against those
whose tile was not (the cell's split rebuilt from its recorded noise settings and checked against its recorded
injected images and test labels):

Last, on the clean set, how much of a detector's test AUROC is recognising the test tiles' own captures: two
detectors that need no training (a Ledoit-Wolf Gaussian on the mean of each image's patch features, and
PatchCore's rule: an image's farthest patch from its nearest training patch) scored on DifferNet's split, on
random splits by tile (no tile in both training and test) and on random splits by image of the same sizes.

  python -m benchmarks.mtd_captures --roots=results/mtd_e192 --out=results/benchmarks/mtd_captures.json
"""

import collections
import glob
import json
import os

import numpy as np
from absl import app, flags

from benchmarks.common import cell_split
from benchmarks.patch_scores import define_set_flags, distances, set_data
from maml_iqr import gaussian, run
from maml_iqr import patches as patches_lib
from maml_iqr.data.images import draw_whole_groups
from maml_iqr.data.readers import mtd_tiles
from maml_iqr.io import write_json
from maml_iqr.metrics import GOOD_LOST_BUDGET, auroc, recall_at_good_lost

FLAGS = flags.FLAGS
def captures_in(tile: dict, ids, pool) -> np.ndarray:
  """For each id, how many images of `pool` (other than itself) show its tile."""
  count = collections.Counter(tile[j] for j in pool)
  pool = set(pool)
  return np.asarray([count[tile[i]] - (i in pool) for i in ids])


def split_figures(split, d_all: np.ndarray, row: dict, tile: dict) -> dict:
  ids = list(split.train.ids)
  rows = np.asarray([row[i] for i in ids])
  injected = run.injected_mask(split)
  good_pool = [i for i, y in zip(ids, injected) if not y]
  injected_pool = [i for i, y in zip(ids, injected) if y]
  own = captures_in(tile, ids, ids)  # other captures of the same tile in the training set
  d = patches_lib.split_tables(d_all[rows][:, :, rows], len(rows))["train_patch_d"]
  scores = patches_lib.image_scores(d)
  threshold = np.quantile(scores[~injected], 1 - GOOD_LOST_BUDGET)
  found = injected & (scores > threshold)
  apart = patches_lib.split_tables(d_all[rows][:, :, rows], len(rows), [tile[i] for i in ids])["train_patch_d"]
  figures = {"n_train": len(ids), "n_injected": int(injected.sum()),
             "captures_per_good_tile": float(np.mean(own[~injected] + 1)),
             "captures_per_injected_tile": float(np.mean(own[injected] + 1)),
             "injected_with_own_tile_injected": float(np.mean(own[injected] > 0)),
             "recall_current": recall_at_good_lost(injected, scores, GOOD_LOST_BUDGET),
             "auroc_current": auroc(injected, scores),
             "own_captures_of_found": float(np.mean(own[found])),
             "own_captures_of_missed": float(np.mean(own[injected & ~found])),
             "own_captures_of_top_good": float(np.mean(own[~injected & (scores > threshold)])),
             "own_captures_of_good": float(np.mean(own[~injected]))}
  for k in (1, 3):
    s = patches_lib.image_scores(apart, k=k)
    figures[f"recall_own_tile_excluded_k{k}"] = recall_at_good_lost(injected, s, GOOD_LOST_BUDGET)
    figures[f"auroc_own_tile_excluded_k{k}"] = auroc(injected, s)
  for part in ("val", "test"):
    p = getattr(split, part)
    labels = np.asarray(p.labels)
    good = [i for i, y in zip(p.ids, labels) if y == 0]
    bad = [i for i, y in zip(p.ids, labels) if y == 1]
    figures[f"{part}_good_with_tile_in_train"] = float(np.mean(captures_in(tile, good, good_pool) > 0))
    figures[f"{part}_defective_with_tile_injected"] = float(np.mean(captures_in(tile, bad, injected_pool) > 0))
  return figures


def cell_figures(cell: dict, arm: str, dataset, tile: dict) -> dict:
  """Test AUROC of a cell of `arm` against all defective test images, those whose tile the cell's training set
  held (injected), and those whose tile it did not."""
  split = cell_split(cell, dataset)
  labels, scores = np.asarray(split.test.labels), np.asarray(cell["test_scores"])
  held = captures_in(tile, split.test.ids, split.injected_ids) > 0
  out = {"arm": arm, "noise": float(cell["noise"]["ratio"]), "seed": int(cell["seed"]),
         "auroc": auroc(labels, scores), "n_defective": int(labels.sum()),
         "n_defective_tile_injected": int((held & (labels == 1)).sum())}
  for name, part in (("tile_injected", held), ("tile_not_injected", ~held)):
    keep = (labels == 0) | part
    out[f"auroc_{name}"] = auroc(labels[keep], scores[keep]) if (labels[keep] == 1).any() else None
  return out


def cell_means(cells: list[dict]) -> dict:
  """Mean figures per method and noise level."""
  groups = collections.defaultdict(list)
  for c in cells:
    groups[(c["arm"], c["noise"])].append(c)
  out = {}
  for (arm, noise), cs in sorted(groups.items()):
    mean = lambda k: (None if any(c[k] is None for c in cs) else float(np.mean([c[k] for c in cs])))  # noqa: E731
    out[f"{arm} {noise:.0%}"] = {"seeds": len(cs), "auroc": mean("auroc"),
                                    "auroc_tile_injected": mean("auroc_tile_injected"),
                                    "auroc_tile_not_injected": mean("auroc_tile_not_injected"),
                                    "share_tile_injected": float(np.mean([c["n_defective_tile_injected"] /
                                                                          c["n_defective"] for c in cs]))}
  return out


def clean_split_figures(dataset, d_all: np.ndarray, feats: np.ndarray, row: dict, tile: dict,
                        seeds: int = 5) -> dict:
  """Test AUROC of the two untrained detectors on the clean set: DifferNet's split, and `seeds` random splits of
  the good images by tile and by image, each with as many good test images as DifferNet's."""
  good = list(dataset.train.ids) + [i for i, y in zip(dataset.test.ids, dataset.test.labels) if y == 0]
  defective = [i for i, y in zip(dataset.test.ids, dataset.test.labels) if y == 1]
  n_test_good = len(good) - len(dataset.train)
  pooled = feats.mean(1)

  def detectors(train_ids, test_good):
    tr = np.asarray([row[i] for i in train_ids])
    te = np.asarray([row[i] for i in list(test_good) + defective])
    labels = np.r_[np.zeros(len(test_good)), np.ones(len(defective))]
    patch = d_all[te][:, :, tr].min(-1).max(-1)
    return {"gaussian": auroc(labels, gaussian.mahalanobis(*gaussian.fit(pooled[tr]), pooled[te])),
            "patchcore": auroc(labels, patch)}

  out = {"differnet_split": detectors(dataset.train.ids, [i for i in good if i not in set(dataset.train.ids)])}
  for kind in ("by_tile", "by_image"):
    runs = []
    for seed in range(seeds):
      rng = np.random.default_rng(seed)
      if kind == "by_image":
        test_good = set(rng.choice(good, n_test_good, replace=False))
      else:
        test_good = {good[k] for k in draw_whole_groups([tile[i] for i in good], n_test_good, rng)}
      runs.append(detectors([i for i in good if i not in test_good], sorted(test_good)))
    out[kind] = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]} | {"runs": runs}
  return out


def main(argv):
  del argv
  data = set_data("mtd", "", FLAGS.cache_dir, FLAGS.noise, FLAGS.seeds)
  splits, (d_all, feats, row) = data.splits, distances(data)
  tile = mtd_tiles(row)
  print(f"{len(set(tile.values()))} tiles for {len(tile)} images")
  runs = []
  for (noise, seed), split in splits.items():
    runs.append({"noise": noise, "seed": seed} | split_figures(split, d_all, row, tile))
    print(f"{noise:.0%} seed {seed}: " + ", ".join(
        f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in runs[-1].items()
        if k not in ("noise", "seed")), flush=True)
  means = {f"{n:.0%}": {k: float(np.mean([r[k] for r in runs if r["noise"] == n])) for k in runs[0]
                        if k not in ("noise", "seed")} for n in sorted({r["noise"] for r in runs})}
  for n, m in means.items():
    print(f"mean {n}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()))
  cells = []
  for root in FLAGS.roots:
    for path in sorted(glob.glob(os.path.join(root, "magnetic_tile", "*", "noise_*", "seed_*", "results.json"))):
      with open(path) as f:
        cell = json.load(f)
      arm = os.path.relpath(path, os.path.join(root, "magnetic_tile")).split(os.sep)[0]  # the sweep's arm folder
      if cell.get("status") == "done":
        cells.append({"path": path} | cell_figures(cell, arm, data.dataset, tile))
  by_cell = cell_means(cells)
  for name, m in by_cell.items():
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"{name} ({m['seeds']} seeds): test AUROC {fmt(m['auroc'])}; against defects whose tile was injected "
          f"{fmt(m['auroc_tile_injected'])} ({m['share_tile_injected']:.0%} of them), not injected "
          f"{fmt(m['auroc_tile_not_injected'])}")
  clean = clean_split_figures(data.dataset, d_all, feats, row, tile)
  for kind, figs in clean.items():
    print(f"clean set, {kind}: test AUROC Gaussian {figs['gaussian']:.3f}, PatchCore {figs['patchcore']:.3f}")
  if FLAGS.out:
    write_json(FLAGS.out, {"tiles": len(set(tile.values())), "images": len(tile), "budget": GOOD_LOST_BUDGET,
                           "means": means, "runs": runs, "cell_means": by_cell, "cells": cells,
                           "clean_splits": clean})


if __name__ == "__main__":
  define_set_flags()
  flags.DEFINE_list("roots", [], "Sweep workdirs whose Magnetic Tile cells to split by injected tile.")
  app.run(main)
