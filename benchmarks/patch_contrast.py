"""Patch scores measured against what is usual, not in raw distance (issue 13). Stated before its first run.

patch_iqr's score (`patches.image_scores`: the mean of an image's 5 highest patch distances to its 3rd nearest
other training image) reaches 0.72 removal recall at <= 5 % good lost on Magnetic Tile at 30 % (README, "Patch-level
scores find more"), short of issue 13's 0.9. The good images it loses are, by the guess recorded there, atypical
textures: every patch of such an image is far from the others, while a defect is far at a few patches only, and
some grid positions (tile borders, the image edge) are far more variable than others. Two normalisations of the
same patch scores S[i, p] (nn_kth_3 of benchmarks/patch_scores.py), both label-free:

  within_image    top-5 mean of S[i, :] minus the median of S[i, :] (a defect stands out of its own image)
  ratio           top-5 mean of S[i, :] divided by the median of S[i, :]
  by_position     S[i, p] standardised per grid position over the training images (median and MAD of S[:, p])
                  before the top-5 mean (a border patch is compared with border patches)
  both            by_position, then within_image

Rule for adopting one as patch_iqr's image score, written before the first run: on Magnetic Tile and elpv mono at
20 / 30 / 50 % x seeds 0-2 (the benchmark's splits; training-set injected flags only), its recall at <= 5 % good
lost, averaged over the six (set, noise) means, is at least 0.03 above the current score's, and no (set, noise)
mean is more than 0.02 below it; of those that pass, the highest average. Confirmed on elpv poly (held out: no
choice here has seen it) if its mean recall there over 20 / 30 / 50 % x 3 seeds is at least the current score's.

  python -m benchmarks.patch_contrast --set=mtd --out=results/benchmarks/patch_contrast_mtd.json
  python -m benchmarks.patch_contrast --set=elpv --out=results/benchmarks/patch_contrast_elpv.json
  python -m benchmarks.patch_contrast --set=elpv --category=poly --out=results/benchmarks/patch_contrast_elpv_poly.json

Reads the distance tables over all the set's images from the runs' patch distance cache (`--cache_dir`,
maml_iqr/patches.py), computing the pairs it does not hold.
"""
import numpy as np
from absl import app, flags

from benchmarks.patch_scores import define_set_flags, nn_patch_scores, scorer_means, set_distances, top_mean
from configs.sweeps import ablation
from maml_iqr import patches as patches_lib
from maml_iqr import run
from maml_iqr.io import write_json
from maml_iqr.metrics import GOOD_LOST_BUDGET, auroc, recall_at_good_lost

FLAGS = flags.FLAGS


def by_position(s: np.ndarray) -> np.ndarray:
  """(N, P) patch scores standardised per position p over the N images: (s - median) / MAD."""
  med = np.median(s, 0, keepdims=True)
  mad = np.median(np.abs(s - med), 0, keepdims=True)
  return (s - med) / np.maximum(mad, 1e-6 * np.abs(med).max())


def variants(s: np.ndarray) -> dict[str, np.ndarray]:
  """Image scores of each variant (module docstring) from the (N, P) patch scores."""
  top = patches_lib.TOP
  z = by_position(s)
  return {"current": top_mean(s, top),
          "within_image": top_mean(s, top) - np.median(s, 1),
          "ratio": top_mean(s, top) / np.median(s, 1),
          "by_position": top_mean(z, top),
          "both": top_mean(z, top) - np.median(z, 1)}


def main(argv):
  del argv
  splits, d_all, _, row = set_distances(FLAGS.set, FLAGS.category, FLAGS.cache_dir, FLAGS.noise, FLAGS.seeds)
  runs = []
  for (noise, seed), split in splits.items():
    rows = np.asarray([row[i] for i in split.train.ids])
    injected = run.injected_mask(split)
    scores = variants(nn_patch_scores(d_all[rows][:, :, rows], patches_lib.K))
    figs = {k: {"auroc": auroc(injected, v), "recall": recall_at_good_lost(injected, v, GOOD_LOST_BUDGET)}
            for k, v in scores.items()}
    runs.append({"noise": noise, "seed": seed, "n_train": len(rows), "n_injected": int(injected.sum()),
                 "scorers": figs})
    print(f"{noise:.0%} seed {seed}: " + ", ".join(f"{k} {v['auroc']:.3f} / {v['recall']:.2f}"
                                                  for k, v in figs.items()), flush=True)
  print(f"\nmean over seeds: cleaning AUROC / recall at <= {GOOD_LOST_BUDGET:.0%} good lost")
  summary = {f"{noise:.0%}": scorer_means([r for r in runs if r["noise"] == noise], noise)
             for noise in map(float, FLAGS.noise)}
  if FLAGS.out:
    write_json(FLAGS.out, {"set": FLAGS.set, "category": FLAGS.category or ablation.EXPERIMENTS[FLAGS.set][1],
                           "budget": GOOD_LOST_BUDGET, "summary": summary, "runs": runs})


if __name__ == "__main__":
  define_set_flags()
  app.run(main)
