"""Where one refinement iteration's time goes (issue 17): runs the cross-fitted fits and scoring of one iteration
on real features, for `iterative` and `maml_iqr` at the ablation's settings (configs/sweeps/ablation.py), and
prints seconds per stage. The iteration runs twice on the same kept set: the first includes the compiles, the
second is the steady state a table cell pays at every later iteration.

  python -m benchmarks.profile_iteration --config=configs/elpv.py --config.data.category=mono \
      --out=results/benchmarks/profile_iteration_elpv.json

Any `--config.KEY=VALUE` is applied after the ablation's settings only if the ablation does not pin KEY; the
ablation's own settings are the point of the profile. Stages: `train` (plain flow epochs: iterative's fits,
maml_iqr's pretraining), `meta_step` (MAML meta-steps), `diagnostics` (the inner loop's
diagnostics, `maml.diagnostics`), `adapt` (the inner loop run to make the scorers), `score` (the scorers on the
held-out fold and the validation set). Each call is blocked on, so a stage's time is its own.
"""
import collections
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from benchmarks import common
from configs.sweeps import ablation, cpu
from maml_iqr import cleaning, run, xla_flags
from maml_iqr.io import write_json

config_flags.DEFINE_config_file("config", None, "Experiment config (configs/*.py).", lock_config=False)
flags.DEFINE_string("out", None, "JSON file for the figures.")
flags.DEFINE_string("cache_dir", "results/cache", "Feature cache folder.")
flags.DEFINE_float("noise", 0.2, "Noise ratio of the training set.")
flags.DEFINE_list("methods", ["iterative", "maml_iqr"], "Methods to profile.")
FLAGS = flags.FLAGS


def _timed(seconds: dict, name: str, fn):
  def call(*args, **kwargs):
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args, **kwargs))
    seconds[name] += time.perf_counter() - t
    return out
  return call


def profile(c, feats, flow, n_train: int) -> list[dict]:
  """Seconds per stage of `refine`'s scoring iteration (all folds), run twice on the full training set."""
  seconds = collections.defaultdict(float)
  originals = {k: getattr(cleaning, k) for k in ("train_flow", "_diagnostics", "_adapt", "_meta_step", "mean_score")}
  cleaning.train_flow = _timed(seconds, "train", originals["train_flow"])
  cleaning.mean_score = _timed(seconds, "score", originals["mean_score"])
  cleaning._diagnostics = lambda *a: _timed(seconds, "diagnostics", originals["_diagnostics"](*a))
  cleaning._adapt = lambda *a: _timed(seconds, "adapt", originals["_adapt"](*a))

  def meta_step(*a):
    optimizer, step = originals["_meta_step"](*a)
    return optimizer, _timed(seconds, "meta_step", step)
  cleaning._meta_step = meta_step
  try:
    ctx = cleaning.Context(c, flow, feats, run.training_data(c, feats))
    kept = np.ones(n_train, bool)
    fold_of = cleaning.fold_assignment(c, n_train)
    out = []
    for rep in range(2):
      seconds.clear()
      t = time.perf_counter()
      cleaning.score_iteration(ctx, kept, fold_of, [None] * c.refine.folds, 0)
      total = time.perf_counter() - t
      out.append(dict(seconds, total=total, other=total - sum(seconds.values())))
    return out
  finally:
    for k, v in originals.items():
      setattr(cleaning, k, v)


def main(argv):
  del argv
  xla_flags.prepare_process()  # before JAX starts a backend (maml_iqr/xla_flags.py)
  base = FLAGS.config
  base.update(cpu.overrides().to_dict())
  base.update(ablation.method_settings())
  base.cache_dir, base.noise.ratio = FLAGS.cache_dir, FLAGS.noise
  split, feats, flow = common.real_features(base)
  result = {"machine": common.machine_info(), "config": base.to_dict(), "methods": {}}
  for method in FLAGS.methods:
    c = base.copy_and_resolve_references()
    c.method = method
    first, steady = profile(c, feats, flow, len(split.train))
    result["methods"][method] = {"first_s": first, "steady_s": steady}
    stages = sorted(set(first) | set(steady), key=lambda k: (k in ("other", "total"), k))
    common.print_table(f"{method}: one refinement iteration ({c.refine.folds} folds), seconds",
                       ["stage", "first (compiles)", "steady"],
                       [[s, first.get(s, 0.0), steady.get(s, 0.0)] for s in stages])
  if FLAGS.out:
    write_json(FLAGS.out, result)


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
