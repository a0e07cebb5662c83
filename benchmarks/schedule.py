"""How much meta-training does a maml_iqr fit need? Fits fold 0 at several schedules (plain pretraining epochs,
MAML epochs, support sets adapted to score) from the same fresh init on the same seeded data, and prints per
schedule the validation AUROC of the adapted scorers and the seconds of the fit and of its scoring.

  python -m benchmarks.schedule --config=configs/elpv.py --config.data.category=mono \
      --out=results/benchmarks/schedule_elpv.json
  python -m benchmarks.schedule --config=configs/mtd.py --out=results/benchmarks/schedule_mtd.json

Rule, stated before the first measurement: the default schedule is the cheapest one (seconds of fit + scoring,
summed over both sets and all seeds) whose mean validation AUROC over Magnetic Tile and elpv mono at 20 % noise,
seeds 0-2, is at most 0.01 below that of the schedule the ablation pins (8 plain epochs, 2 of MAML, 4 scoring
support sets). Validation only: the held-out fold's injected images are counted for the record (`fold_auroc`),
never used to choose. The inner loop is the ablation's (5 normalised steps of length 0.3).
"""
import json
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from benchmarks import common
from configs.sweeps import ablation, cpu
from maml_iqr import cleaning, metrics, run, xla_flags
from maml_iqr.io import write_json

config_flags.DEFINE_config_file("config", None, "Experiment config (configs/*.py).", lock_config=False)
flags.DEFINE_string("out", None, "JSON file for the figures.")
flags.DEFINE_string("cache_dir", "results/cache", "Feature cache folder.")
flags.DEFINE_list("schedules", ["8/2/4", "8/1/4", "8/1/2", "4/1/4", "4/1/2"],
                  "pretrain_epochs/meta_epochs/score_tasks per schedule; the first is the reference.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (each its own noisy split and folds).")
flags.DEFINE_float("noise", 0.2, "Noise ratio of the training set.")
FLAGS = flags.FLAGS


def parse_schedule(text: str) -> tuple[int, int, int]:
  pretrain, meta, score = (int(v) for v in text.split("/"))
  if pretrain < 0 or meta < 1 or score < 1:
    raise ValueError(f"--schedules: {text!r} needs pretrain >= 0, meta >= 1, score tasks >= 1")
  return pretrain, meta, score


def main(argv):
  del argv
  schedules = [parse_schedule(s) for s in FLAGS.schedules]
  rows = []
  for seed in map(int, FLAGS.seeds):
    c = FLAGS.config.copy_and_resolve_references()
    c.update(cpu.overrides().to_dict())
    c.update(ablation.method_settings())
    c.cache_dir, c.noise.ratio, c.seed = FLAGS.cache_dir, FLAGS.noise, seed
    split, feats, flow = common.real_features(c)
    injected = run.injected_mask(split)
    fold_of = cleaning.fold_assignment(c, len(split.train))
    fit_on, held_out = fold_of != 0, fold_of == 0
    # Compile every jitted step for this seed's shapes (fold and held-out sizes differ by seed) once, untimed, so
    # no schedule's seconds include compiling.
    warm = c.copy_and_resolve_references()
    warm.maml.pretrain_epochs, warm.maml.meta_epochs, warm.maml.score_tasks = 1, 1, 1
    ctx = cleaning.Context(warm, flow, feats, run.training_data(warm, feats))
    scorers = cleaning.fit_meta(ctx, fit_on, None, (0, 0)).scorers
    for rows_to_score in (feats["val"], feats["train_eval"][np.flatnonzero(held_out)]):
      cleaning.mean_score(scorers, rows_to_score)
    for pretrain, meta, score in schedules:
      cc = c.copy_and_resolve_references()
      cc.maml.pretrain_epochs, cc.maml.meta_epochs, cc.maml.score_tasks = pretrain, meta, score
      ctx = cleaning.Context(cc, flow, feats, run.training_data(cc, feats))
      t = time.time()
      fit = cleaning.fit_meta(ctx, fit_on, None, (0, 0))
      fit_s = time.time() - t
      t = time.time()
      val = cleaning.mean_score(fit.scorers, feats["val"])
      fold = cleaning.mean_score(fit.scorers, feats["train_eval"][np.flatnonzero(held_out)])
      score_s = time.time() - t
      row = dict(seed=seed, schedule=f"{pretrain}/{meta}/{score}", pretrain_epochs=pretrain, meta_epochs=meta,
                 score_tasks=score, val_auroc=metrics.auroc(split.val.labels, val),
                 fold_auroc=metrics.auroc(injected[held_out].astype(int), fold), fit_s=round(fit_s, 1),
                 score_s=round(score_s, 1), grad_cosine=fit.info.get("grad_cosine"),
                 query_drop=fit.info.get("query_drop"))
      rows.append(row)
      print(json.dumps(row), flush=True)
      write_json(FLAGS.out, {"dataset": c.data.name, "category": c.data.category, "noise": FLAGS.noise,
                             "flow_hidden": c.flow.hidden, "rows": rows, "summary": summary(rows)})
  print(json.dumps(summary(rows), indent=1))


def summary(rows: list[dict]) -> dict:
  """Per schedule: mean validation AUROC and summed seconds over the seeds measured so far."""
  out = {}
  for name in dict.fromkeys(r["schedule"] for r in rows):
    mine = [r for r in rows if r["schedule"] == name]
    out[name] = {"seeds": len(mine), "val_auroc": round(float(np.mean([r["val_auroc"] for r in mine])), 4),
                 "fold_auroc": round(float(np.mean([r["fold_auroc"] for r in mine])), 4),
                 "seconds": round(sum(r["fit_s"] + r["score_s"] for r in mine), 1)}
  return out


if __name__ == "__main__":
  xla_flags.prepare_process()  # before JAX starts a backend (maml_iqr/xla_flags.py)
  flags.mark_flags_as_required(["config", "out"])
  app.run(main)
