"""Do the patch scores and the Gaussian miss different injected images? Fused cleaning scores (issue 13).

patch_iqr's score (`patches.image_scores`: the top-5 mean of each patch's distance to the 3rd nearest other image)
and gaussian_iqr's (Mahalanobis distance of an image's mean evaluation view under a Ledoit-Wolf Gaussian fitted on
the whole training set) look at different things: the patch score at the few most unusual places of an image, the
Gaussian at the image as a whole. A defect that changes a tile's whole texture may move the pooled vector more
than any one patch. If the two miss different images, a label-free fusion finds more than either:

  z_mean     the mean of the two scores, each made robust-standard on the training set ((s - median) / IQR)
  z_max      the larger of the two robust-standard scores: an image either scorer finds unusual
  rank_mean  the mean of the two scores' ranks in the training set

Adoption rule, stated here before the first run: a fusion becomes patch_iqr's cleaning score if its mean recall at
<= 5 % good lost over Magnetic Tile's 20 / 30 / 50 % x 3 seeds is at least 0.03 above the patch score's on the
same splits, and its mean over elpv mono's is not more than 0.01 below the patch score's; of those that pass, the
highest Magnetic Tile mean. It is then confirmed on elpv poly, which no choice here sees (`--set=elpv
--category=poly`), if its mean there is not more than 0.01 below the patch score's; otherwise nothing changes.

Also printed, to read the result: how many injected images each scorer alone finds within the budget and how
many both find (the overlap the fusion can exploit), and which injected images the patch score misses: their
defect class (the first folder of the id) and the share of their pixels the ground-truth mask marks defective,
where the dataset has masks (Magnetic Tile), against those it finds. The splits are the runs' own (`contaminate`); only the
training set's injected flags are read, never a test label.

  python -m benchmarks.score_fusion --set=mtd --out=results/benchmarks/score_fusion_mtd.json
  python -m benchmarks.score_fusion --set=elpv --out=results/benchmarks/score_fusion_elpv.json
"""

import numpy as np
from absl import app, flags

from benchmarks.patch_scores import define_set_flags, distances, scorer_means, set_data
from maml_iqr import gaussian, run
from maml_iqr import patches as patches_lib
from maml_iqr.io import write_json
from maml_iqr.metrics import GOOD_LOST_BUDGET, auroc, recall_at_good_lost

FLAGS = flags.FLAGS


def robust_z(scores: np.ndarray) -> np.ndarray:
  """(s - median) / IQR: scores of different scales made comparable without labels."""
  q1, median, q3 = np.percentile(scores, [25, 50, 75])
  return (scores - median) / max(q3 - q1, 1e-12)


def ranks(scores: np.ndarray) -> np.ndarray:
  return np.argsort(np.argsort(scores)) / (len(scores) - 1)


def fusions(patch: np.ndarray, gauss: np.ndarray) -> dict[str, np.ndarray]:
  zp, zg = robust_z(patch), robust_z(gauss)
  return {"z_mean": (zp + zg) / 2, "z_max": np.maximum(zp, zg), "rank_mean": (ranks(patch) + ranks(gauss)) / 2}


def found_within_budget(injected: np.ndarray, scores: np.ndarray) -> np.ndarray:
  """Which injected images the lowest threshold losing at most the budget's good images removes: every image
  scoring above the good image ranked just past the budget (the point `recall_at_good_lost` reads)."""
  good = np.sort(scores[~injected])[::-1]
  allowed = int(np.floor(GOOD_LOST_BUDGET * len(good) + 1e-9))
  return injected & (scores > (good[allowed] if allowed < len(good) else -np.inf))


def injected_kinds(dataset, split) -> list[dict]:
  """Class and defect area (share of mask pixels; None without masks) of each injected image, in training order."""
  test = {i: r for r, i in enumerate(dataset.test.ids)}
  injected = set(split.injected_ids)
  return [{"class": i.split("/")[0],
           "area": None if dataset.test.masks is None else float(dataset.test.masks[test[i]].mean())}
          for i in split.train.ids if i in injected]


def misses(runs: list[dict]) -> dict:
  """Per noise level, over seeds: the patch score's finds within the budget per defect class, and the defect
  area quartiles of the injected images it finds and misses."""
  out = {}
  for noise in sorted({r["noise"] for r in runs}):
    kinds = [k for r in runs if r["noise"] == noise for k in r["injected"]]
    per_class = {c: [sum(k["found_by_patch"] for k in kinds if k["class"] == c),
                     sum(k["class"] == c for k in kinds)] for c in sorted({k["class"] for k in kinds})}
    areas = {f: [k["area"] for k in kinds if k["found_by_patch"] == f and k["area"] is not None] for f in (True, False)}
    out[f"{noise:.0%}"] = {"found_of_injected_per_class": per_class, "area_quartiles": {
        ("found" if f else "missed"): np.percentile(a, [25, 50, 75]).tolist() if a else None for f, a in areas.items()}}
    print(f"  {noise:>4.0%} patch finds per class (found / injected, 3 seeds): "
          + ", ".join(f"{c} {n}/{t}" for c, (n, t) in per_class.items())
          + "; defect area quartiles found " + str(out[f"{noise:.0%}"]["area_quartiles"]["found"])
          + " missed " + str(out[f"{noise:.0%}"]["area_quartiles"]["missed"]))
  return out


def main(argv):
  del argv
  data = set_data(FLAGS.set, FLAGS.category, FLAGS.cache_dir, FLAGS.noise, FLAGS.seeds)
  d_all, _, row = distances(data)
  runs = []
  for (noise, seed), split in data.splits.items():
    rows = np.asarray([row[i] for i in split.train.ids])
    d = patches_lib.split_tables(d_all[rows][:, :, rows], len(rows))["train_patch_d"]
    mean_view = run.split_features(data.base, data.backbone, data.bparams, data.dataset, split,
                                   train_views=False)["train_eval"].mean(1)
    scores = {"patch": patches_lib.image_scores(d),
              "gauss": gaussian.mahalanobis(*gaussian.fit(mean_view), mean_view)}
    scores.update(fusions(scores["patch"], scores["gauss"]))
    injected = run.injected_mask(split)
    figs = {k: {"auroc": auroc(injected, s), "recall": recall_at_good_lost(injected, s, GOOD_LOST_BUDGET)}
            for k, s in scores.items()}
    by_patch, by_gauss = (found_within_budget(injected, scores[k]) for k in ("patch", "gauss"))
    found = {"patch": int(by_patch.sum()), "gauss": int(by_gauss.sum()), "both": int((by_patch & by_gauss).sum()),
             "either": int((by_patch | by_gauss).sum()), "injected": int(injected.sum())}
    kinds = injected_kinds(data.dataset, split)
    for kind, hit in zip(kinds, by_patch[injected]):
      kind["found_by_patch"] = bool(hit)
    runs.append({"noise": noise, "seed": seed, "scorers": figs, "found_within_budget": found, "injected": kinds})
    print(f"{noise:.0%} seed {seed}: " + ", ".join(f"{k} {v['auroc']:.3f} / {v['recall']:.2f}" for k, v in figs.items())
          + f"; found within budget {found}", flush=True)
  print(f"\nmean over seeds: cleaning AUROC / recall at <= {GOOD_LOST_BUDGET:.0%} good lost")
  summary = {f"{n:.0%}": scorer_means([r for r in runs if r["noise"] == n], n) for n in map(float, FLAGS.noise)}
  overall = {k: float(np.mean([r["scorers"][k]["recall"] for r in runs])) for k in runs[0]["scorers"]}
  print("mean recall over all runs: " + ", ".join(f"{k} {v:.3f}" for k, v in overall.items()))
  missed = misses(runs)
  if FLAGS.out:
    write_json(FLAGS.out, {"set": FLAGS.set, "category": FLAGS.category, "budget": GOOD_LOST_BUDGET,
                           "mean_recall": overall, "summary": summary, "patch_misses": missed, "runs": runs})


if __name__ == "__main__":
  define_set_flags()
  app.run(main)
