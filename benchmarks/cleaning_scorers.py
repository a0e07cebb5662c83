"""Which scores find the injected images: the flows the cleaning methods fit, or a Gaussian on the same features?

For each noise level and seed, the run's own split (`contaminate`, as `launch.main` makes it) and the cached
evaluation-view features of its training images (no training views, no test image, nothing trained), scored
without labels by a Ledoit-Wolf Gaussian (Mahalanobis distance), in four forms:

  gauss_mean_view   fitted on every training image's mean over its evaluation views, scoring that mean
  gauss_per_view    fitted on every (image, view) row, scoring an image by its mean distance over its views
  ..._cross_fit     the same, cross-fitted on the method's own folds (`cleaning.fold_assignment`): an image is
                    scored by a Gaussian that never saw it, as the flows score

and beside them the recorded first-iteration scores of the flow arms in sweep folders of the same data, noise and
seed (`--roots`; `benchmarks.removal_curve` reads the same fields). The figures are k-free: the cleaning AUROC
(injected against good) and the removal recall at most 5 % of the good images lost (issue 13's budget).
Training-set labels only.

  python -m benchmarks.cleaning_scorers --config=configs/mtd.py --noise=0.2,0.3,0.5 \
      --roots=results/ablation_mtd --out=results/benchmarks/cleaning_scorers_mtd.json
"""
import collections
import os

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from maml_iqr import cleaning, gaussian, run, tables
from maml_iqr.data import readers
from maml_iqr.data.contamination import contaminate
from maml_iqr.io import write_json
from maml_iqr.metrics import GOOD_LOST_BUDGET, auroc, recall_at_good_lost
from maml_iqr.models import backbones

config_flags.DEFINE_config_file("config", "configs/mtd.py", "Experiment config (data, backbone, views, folds).")
flags.DEFINE_list("noise", ["0.2", "0.3", "0.5"], "Noise ratios.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (each its own split and injected images).")
flags.DEFINE_list("roots", [], "Sweep folders whose recorded flow scores join the table.")
flags.DEFINE_string("out", None, "JSON file for the figures.")
FLAGS = flags.FLAGS


def mahalanobis(fit_rows: np.ndarray, rows: np.ndarray) -> np.ndarray:
  return gaussian.mahalanobis(*gaussian.fit(fit_rows), rows)


def gaussian_scores(feats: np.ndarray, fold_of: np.ndarray) -> dict[str, np.ndarray]:
  """The Gaussian scores of training images with evaluation-view features (N, V, D)."""
  mean_view, flat = feats.mean(1), feats.reshape(-1, feats.shape[-1])
  cross_mean, cross_per = np.zeros(len(feats)), np.zeros(len(feats))
  for f in np.unique(fold_of):
    fit, target = fold_of != f, fold_of == f
    cross_mean[target] = mahalanobis(mean_view[fit], mean_view[target])
    cross_per[target] = mahalanobis(feats[fit].reshape(-1, feats.shape[-1]), feats[target]).mean(1)
  return {"gauss_mean_view": mahalanobis(mean_view, mean_view), "gauss_mean_view_cross_fit": cross_mean,
          "gauss_per_view": mahalanobis(flat, feats).mean(1), "gauss_per_view_cross_fit": cross_per}


def figures(injected: np.ndarray, scores: np.ndarray) -> dict:
  return {"auroc": auroc(injected, scores), "recall_at_budget": recall_at_good_lost(injected, scores, GOOD_LOST_BUDGET)}


def recorded(roots: list[str]) -> dict[tuple, dict]:
  """{(dataset, noise, seed): {arm (root): figures of its first refinement iteration}} of the roots' finished
  cells, every results.json read once."""
  out = collections.defaultdict(dict)
  for root in roots:
    for r in tables.collect(root):
      if r.get("refinement") and r["contamination"]["n_injected"]:
        first = r["refinement"][0]
        arm = f"{tables.label(r)} ({os.path.basename(root.rstrip('/'))})"
        out[(r["dataset"], r["noise"]["ratio"], r["seed"])][arm] = figures(
            np.asarray(first["scores_injected"], bool), np.asarray(first["scores"]))
  return out


def main(argv):
  del argv
  config = FLAGS.config
  if not config.cache_dir:
    raise SystemExit("--config.cache_dir: the feature cache folder of the sweeps (e.g. results/cache)")
  backbone = backbones.from_config(config.backbone)
  bparams = backbone.load()
  dataset = readers.read_config(config, backbone.input_size)
  flow_arms = recorded(FLAGS.roots)
  results = collections.defaultdict(list)
  for noise in map(float, FLAGS.noise):
    for seed in map(int, FLAGS.seeds):
      split = contaminate(dataset, noise, config.noise.mode, config.noise.overlap, seed, config.noise.on_shortage,
                          config.noise.val_fraction)
      injected = run.injected_mask(split)
      feats = run.split_features(config, backbone, bparams, dataset, split, train_views=False)["train_eval"]
      seeded = config.copy_and_resolve_references()
      seeded.seed = seed
      arms = {name: figures(injected, s)
              for name, s in gaussian_scores(feats, cleaning.fold_assignment(seeded, len(feats))).items()}
      arms.update(flow_arms.get((dataset.name, noise, seed), {}))
      print(f"noise {noise:.0%} seed {seed} ({int(injected.sum())} injected of {len(injected)}): " + ", ".join(
          f"{a} {v['auroc']:.3f} / {v['recall_at_budget']:.2f}" for a, v in arms.items()), flush=True)
      for a, v in arms.items():
        results[(noise, a)].append(dict(v, seed=seed))
  print(f"\nmean over seeds: cleaning AUROC / recall at <= {GOOD_LOST_BUDGET:.0%} good lost")
  for (noise, arm), runs in sorted(results.items()):
    print(f"  {noise:>4.0%} {arm:<40} {np.mean([r['auroc'] for r in runs]):.3f} / "
          f"{np.mean([r['recall_at_budget'] for r in runs]):.3f}  ({len(runs)} seeds)")
  if FLAGS.out:
    write_json(FLAGS.out, {"dataset": dataset.name, "category": dataset.category,
                           "good_lost_budget": GOOD_LOST_BUDGET,
                           "rows": [{"noise": n, "arm": a, "runs": r} for (n, a), r in sorted(results.items())]})


if __name__ == "__main__":
  app.run(main)
