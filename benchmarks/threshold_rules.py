"""Which threshold should gaussian_iqr remove by? Replays its whole refinement (`cleaning.refine`: the Gaussian fits,
the threshold, the one-standard-error stopping rule on validation AUROC, the ablation's cap of 3 iterations) on
cached features, for each rule below, on Magnetic Tile and elpv mono at 0 / 20 / 30 / 50 % noise, 3 seeds. The
final detector is not trained: it does not change what is removed. Reads the training set's injected flags and
the validation labels only, never a test image. Settings: the ablation's gaussian_iqr arm
(configs/sweeps/ablation.py), only `refine.k` / `refine.auto_k_quantile` changed.

The rule, written before this script first ran: among RULES, the one with the highest mean removal recall over the
noisy runs whose mean share of good training images lost, over every run (0 % included), is at most 5 %
(issue 13's budget). A tie goes to the rule listed first.

  python -m benchmarks.threshold_rules --out=results/benchmarks/threshold_rules.json
"""
import collections
import tempfile

import numpy as np
from absl import app, flags

from configs.sweeps import ablation
from launch.sweep import cell_config
from maml_iqr import cleaning, run
from maml_iqr.data import readers
from maml_iqr.data.contamination import contaminate
from maml_iqr.io import write_json
from maml_iqr.metrics import GOOD_LOST_BUDGET
from maml_iqr.models import backbones

flags.DEFINE_list("sets", ["mtd", "elpv"], "Ablation experiments (configs/sweeps/ablation.py).")
flags.DEFINE_list("noise", ["0.0", "0.2", "0.3", "0.5"], "Noise ratios.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
flags.DEFINE_string("cache_dir", "results/cache", "The sweeps' feature cache.")
flags.DEFINE_string("out", None, "JSON file for the figures.")
FLAGS = flags.FLAGS
RULES = {"k=0.5": {"k": 0.5}, "k=1": {"k": 1.0}, "k=1.5 (the ablation's)": {"k": 1.5}, "k=2": {"k": 2.0},
         "val-good q=0.95": {"auto_k_quantile": 0.95}, "val-good q=0.99": {"auto_k_quantile": 0.99}}


def replay(config, dataset, backbone, bparams, rules: dict) -> dict:
  """{rule: {'recall', 'good_lost', 'iterations'}} of gaussian_iqr's refinement on the config's split."""
  split = contaminate(dataset, config.noise.ratio, config.noise.mode, config.noise.overlap, config.seed,
                      config.noise.on_shortage, config.noise.val_fraction)
  feats = run.split_features(config, backbone, bparams, dataset, split, train_views=False)
  injected = run.injected_mask(split)
  out = {}
  for name, setting in rules.items():
    c = config.copy_and_resolve_references()
    c.refine.update(setting)
    ctx = cleaning.Context(c, None, {"train_eval": feats["train_eval"], "val": feats["val"]}, {})
    with tempfile.TemporaryDirectory() as checkpoints:
      state = cleaning.refine(ctx, checkpoints, len(split.train), split.val.labels, injected, split.train.ids)
    removed = ~state.final_kept()
    out[name] = {"recall": float((removed & injected).sum() / injected.sum()) if injected.any() else None,
                 "good_lost": float((removed & ~injected).sum() / (~injected).sum()),
                 "iterations": len(state.history)}
  return out


def main(argv):
  del argv
  runs = []
  for name in FLAGS.sets:
    sweep = ablation.get_config(f"{name}/gaussian_iqr")
    sweep.cache_dir = FLAGS.cache_dir
    base = cell_config(sweep, dict(category=sweep.categories[0], method="gaussian_iqr", noise=0.0, seed=0,
                                   variant="", arm="gaussian_iqr"), "")
    backbone = backbones.from_config(base.backbone)
    bparams = backbone.load()
    dataset = readers.read_config(base, backbone.input_size)
    for noise in map(float, FLAGS.noise):
      for seed in map(int, FLAGS.seeds):
        c = base.copy_and_resolve_references()
        c.noise.ratio, c.seed = noise, seed
        result = replay(c, dataset, backbone, bparams, RULES)
        runs.append({"set": name, "noise": noise, "seed": seed, "rules": result})
        print(f"{name} {noise:.0%} seed {seed}: " + ", ".join(
            f"{r} {v['recall'] if v['recall'] is None else round(v['recall'], 2)} / {v['good_lost']:.3f}"
            for r, v in result.items()), flush=True)
  summary = collections.OrderedDict()
  for rule in RULES:
    recall = [r["rules"][rule]["recall"] for r in runs if r["noise"] > 0]
    lost = [r["rules"][rule]["good_lost"] for r in runs]
    summary[rule] = {"mean_recall_noisy": float(np.mean(recall)), "mean_good_lost": float(np.mean(lost)),
                     "per_set_noise": {f"{s} {n:.0%}": [float(np.mean([r["rules"][rule][k] for r in runs
                                                                        if r["set"] == s and r["noise"] == n]))
                                                         for k in ("recall", "good_lost")]
                                       for s in FLAGS.sets for n in map(float, FLAGS.noise) if n > 0}}
  print(f"\nmean removal recall (noisy runs) / mean good lost (all runs, budget {GOOD_LOST_BUDGET:.0%}):")
  for rule, v in summary.items():
    print(f"  {rule:<24} {v['mean_recall_noisy']:.3f} / {v['mean_good_lost']:.3f}   " + "  ".join(
        f"{k}: {a:.2f}/{b:.3f}" for k, (a, b) in v["per_set_noise"].items()))
  within = [rule for rule, v in summary.items() if v["mean_good_lost"] <= GOOD_LOST_BUDGET]
  chosen = max(within, key=lambda rule: summary[rule]["mean_recall_noisy"]) if within else None
  print(f"rule (highest recall within {GOOD_LOST_BUDGET:.0%} good lost): {chosen}")
  if FLAGS.out:
    write_json(FLAGS.out, {"rules": RULES, "budget": GOOD_LOST_BUDGET, "summary": summary, "chosen": chosen,
                           "runs": runs})


if __name__ == "__main__":
  app.run(main)
