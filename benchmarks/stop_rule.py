"""Replays stopping rules on recorded refinement trajectories (configs/sweeps/stop_rule.py) and prints, per rule,
the mean removal recall and share of good images lost of the sets they keep. Training-set labels only: no test
image is read.

  python -m benchmarks.stop_rule --roots=results/stop_rule_elpv,results/stop_rule_mtd --out=results/stop_rule.json

The rule, stated before the trajectories were run: `refine.val_tolerance_se` is the largest tolerance in
TOLERANCES whose kept sets lose at most 5 % of the good training images on average over every run (0 % noise
included). A larger tolerance never keeps a less-cleaned set, so it is the one with the highest recall within
that budget.

Per method (stated 2026-12-06 before this replay ran): at 100 gaussian_iqr and patch_iqr lost 7-15 % of the good
tiles on clean Magnetic Tile at 192 epochs while their validation AUROC fell at every iteration. The same rule,
replayed on one method's runs in the 192-epoch tables (`--methods=gaussian_iqr --roots=results/mtd_e192,
results/elpv_e192/mono,results/hazelnut_e192`, runs at val_tolerance_se=100 only, since a replay of a run that
stopped early would need iterations it did not record). If it picks a tolerance below 100 for gaussian_iqr, that
tolerance is tried on Magnetic Tile's clean cells (seeds 0-2) and kept as gaussian_iqr's recommended setting if
the final detectors' mean validation AUROC (`validation_auroc`, as for patch_iqr's rule) is higher than at 100.
patch_iqr keeps its own rule (configs/sweeps/patch_stop.py, judged on final detectors); the flows are reported.

`--patiences` replays each tolerance at several patiences and chooses nothing: configs/sweeps/gaussian_patience.py
judges patience on final detectors.
"""
import glob
import json
import os

import numpy as np
from absl import app, flags

from maml_iqr.io import write_json
from maml_iqr.metrics import GOOD_LOST_BUDGET
from maml_iqr.refine import holds

FLAGS = flags.FLAGS
TOLERANCES = (0.0, 0.5, 1.0, 2.0, 100.0)


def replay(results: dict, tolerance: float, patience: int = 1) -> int:
  """The number of iterations whose removals the rule keeps (0: none) on one recorded trajectory."""
  c = results["contamination"]
  n_bad, n_good = c["n_val_defective"], c["n_val"] - c["n_val_defective"]
  best, chosen, history = -1.0, -1, results["refinement"]
  for h in history:  # as refine.refine_step decides, iteration by iteration
    i, auc = h["iteration"], h["val_auroc"]
    best = best if np.isnan(auc) else max(best, auc)
    if holds(auc, best, n_bad, n_good, tolerance):
      chosen = i
    if i - chosen >= patience or h["n_removed"] == 0 or h is history[-1]:
      # stopped at i: the set after i's removals if i holds (RefineState.final_kept), else chosen's starting set
      return i + 1 if chosen == i else chosen
  raise ValueError("empty trajectory")


def kept_quality(results: dict, n_iterations: int) -> dict:
  """Recall and good lost of the set after the first `n_iterations` iterations' removals."""
  h = results["refinement"][:n_iterations]
  c = results["contamination"]
  removed_bad = sum(x["removed_injected"] for x in h)
  removed_good = sum(x["removed_good"] for x in h)
  return {"recall": removed_bad / c["n_injected"] if c["n_injected"] else None,
          "good_lost": removed_good / c["n_good_train"]}


def recorded_runs(roots) -> list[tuple[str, str, dict]]:
  """(root, path, results) of every finished run under `roots` that recorded a refinement trajectory."""
  out = []
  for root in roots:
    for path in sorted(glob.glob(os.path.join(root, "**", "results.json"), recursive=True)):
      r = json.load(open(path))
      if r.get("status") == "done" and r.get("refinement"):
        out.append((root, path, r))
  return out


def main(argv):
  del argv
  # --methods reads the tables, where only runs at 100 (every iteration recorded) replay exactly
  runs = [(os.path.relpath(path, root), r) for root, path, r in recorded_runs(FLAGS.roots)
          if not FLAGS.methods or (r["method"] in FLAGS.methods
                                   and r["config"]["refine"].get("val_tolerance_se") == 100.0)]
  tolerances = [float(t) for t in FLAGS.tolerances]
  patiences = [int(p) for p in FLAGS.patiences]
  table = {}
  for t in tolerances:
    for p in patiences:
      rows = [dict(kept_quality(r, n), iterations_kept=n, run=name, dataset=r["dataset"], noise=r["noise"]["ratio"])
              for name, r in runs for n in [replay(r, t, p)]]
      recall = [x["recall"] for x in rows if x["recall"] is not None]
      key = t if patiences == [1] else f"{t:g}/patience {p}"
      table[key] = {"mean_recall": float(np.mean(recall)),
                    "mean_good_lost": float(np.mean([x["good_lost"] for x in rows])), "runs": rows}
      print(f"tolerance {t:>5g} SE, patience {p}: mean recall {table[key]['mean_recall']:.3f} (noisy runs), "
            f"mean good lost {table[key]['mean_good_lost']:.3f} (all {len(rows)} runs)")
      for x in rows:
        rec = "-" if x["recall"] is None else f"{x['recall']:.2f}"
        print(f"    {x['run']:<50} recall {rec:>5} good lost {x['good_lost']:.3f} ({x['iterations_kept']} kept)")
  if patiences != [1]:
    if FLAGS.out:
      write_json(FLAGS.out, {"rules": table})
    return
  ok = [t for t in tolerances if table[t]["mean_good_lost"] <= GOOD_LOST_BUDGET]
  chosen = max(ok) if ok else 0.0
  print(f"rule (largest tolerance losing at most {GOOD_LOST_BUDGET:.0%} of the good images on average): {chosen:g}")
  if FLAGS.out:
    write_json(FLAGS.out, {"tolerances": {str(t): v for t, v in table.items()}, "chosen": chosen,
                           "good_lost_budget": GOOD_LOST_BUDGET})


if __name__ == "__main__":  # flags here, not at import: tail_test imports this module
  flags.DEFINE_list("roots", ["results/stop_rule_elpv", "results/stop_rule_mtd"], "Sweep folders.")
  flags.DEFINE_list("methods", [], "Replay only these methods' runs (default: every method).")
  flags.DEFINE_list("tolerances", [str(t) for t in TOLERANCES], "Tolerances replayed.")
  flags.DEFINE_list("patiences", ["1"], "Patiences replayed at each tolerance (more than 1: reported, not chosen).")
  flags.DEFINE_string("out", None, "JSON file for the figures.")
  app.run(main)
