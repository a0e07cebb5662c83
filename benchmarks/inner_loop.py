"""Does the inner loop adapt? Meta-trains one fold at several inner-loop settings on real features and prints, per
setting, the inner loop's work (`maml.diagnostics` over the last meta-epoch: support and query loss drops, cosine
of the meta-gradient with the plain query gradient) and the validation AUROC of the adapted scorers.

  python -m benchmarks.inner_loop --config=configs/mtd.py --out=results/benchmarks/inner_loop_mtd.json

Validation only: the held-out fold's injected images are counted for the record (`fold_auroc`), never used to
choose. Each setting meta-trains from the same fresh init on the same tasks (same seed).
"""
import itertools
import json
import time

from absl import app, flags
from ml_collections import config_flags

from benchmarks import common
from configs.sweeps import cpu
from maml_iqr import cleaning, metrics, run, xla_flags
from maml_iqr.io import write_json

config_flags.DEFINE_config_file("config", None, "Experiment config (configs/*.py).", lock_config=False)
flags.DEFINE_string("out", None, "JSON file for the figures.")
flags.DEFINE_string("cache_dir", "results/cache", "Feature cache folder.")
flags.DEFINE_list("inner_lrs", ["1e-4", "1e-3", "1e-2", "3e-2", "1e-1", "3e-1"], "Inner SGD learning rates.")
flags.DEFINE_list("inner_steps", ["5"], "Inner steps.")
flags.DEFINE_list("objectives", ["maml"], "Meta-objectives.")
flags.DEFINE_list("inner_updates", ["sgd"], "Inner update rules (sgd, normalized).")
flags.DEFINE_bool("second_order", False, "Also run second-order MAML at each setting.")
flags.DEFINE_float("noise", 0.2, "Noise ratio of the training set.")
flags.DEFINE_integer("meta_epochs", 4, "Meta-epochs from a fresh init.")
flags.DEFINE_integer("pretrain_epochs", 0, "Plain training epochs before meta-training (maml.pretrain_epochs).")
flags.DEFINE_integer("score_tasks", 4, "Support sets the scorers are adapted to (maml.score_tasks).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  c = FLAGS.config
  c.update(cpu.overrides().to_dict())
  c.cache_dir, c.noise.ratio, c.maml.meta_epochs = FLAGS.cache_dir, FLAGS.noise, FLAGS.meta_epochs
  c.maml.pretrain_epochs, c.maml.score_tasks = FLAGS.pretrain_epochs, FLAGS.score_tasks
  split, feats, flow = common.real_features(c)
  injected = run.injected_mask(split)
  fold_of = cleaning.fold_assignment(c, len(split.train))
  fit_on, held_out = fold_of != 0, fold_of == 0
  rows = []
  orders = [True, False] if FLAGS.second_order else [True]
  grid = itertools.product(FLAGS.objectives, FLAGS.inner_updates, map(int, FLAGS.inner_steps),
                           map(float, FLAGS.inner_lrs), orders)
  for objective, update, steps, lr, first_order in grid:
    cc = c.copy_and_resolve_references()
    cc.maml.objective, cc.maml.inner_update, cc.maml.inner_lr = objective, update, lr
    cc.maml.inner_steps, cc.maml.first_order = steps, first_order
    ctx = cleaning.Context(cc, flow, feats, run.training_data(cc, feats))
    t = time.time()
    try:
      fit = cleaning.fit_meta(ctx, fit_on, None, (0, 0))
      val = cleaning.mean_score(fit.scorers, feats["val"])
      fold = cleaning.mean_score(fit.scorers, feats["train_eval"][held_out])
      meta = cleaning.mean_score([cleaning.flow_scorer(ctx, fit.carry)], feats["val"])
      row = dict(fit.info, val_auroc=metrics.auroc(split.val.labels, val),
                 val_auroc_unadapted=metrics.auroc(split.val.labels, meta),
                 fold_auroc=metrics.auroc(injected[held_out].astype(int), fold) if injected[held_out].any()
                 else None)
    except FloatingPointError as e:
      row = {"error": str(e)}
    row.update(objective=objective, inner_update=update, inner_lr=lr, inner_steps=steps, first_order=first_order,
               seconds=round(time.time() - t, 1))
    rows.append(row)
    print(json.dumps(row), flush=True)
  write_json(FLAGS.out, {"dataset": c.data.name, "category": c.data.category, "noise": c.noise.ratio,
                         "meta_epochs": c.maml.meta_epochs, "pretrain_epochs": c.maml.pretrain_epochs,
                         "score_tasks": c.maml.score_tasks, "flow_hidden": c.flow.hidden,
                         "n_fit": int(fit_on.sum()), "rows": rows})


if __name__ == "__main__":
  xla_flags.prepare_process()  # before JAX starts a backend (maml_iqr/xla_flags.py)
  flags.mark_flags_as_required(["config", "out"])
  app.run(main)
