"""How well a refinement's first scores separate the injected images from the good ones in the training set, for
every threshold at once: the curve of removal recall against good images lost, read from a sweep's recorded
iteration-0 scores (results.json `refinement[0].scores` / `.scores_injected`; training-set labels only, no test
image is read, nothing is trained).

A threshold rule (k, a stopping rule) only picks a point on this curve; the curve itself is what the scores allow.
Per (dataset, arm, noise), mean ± std over seeds: the cleaning AUROC (injected against good), the recall at most
5 % of the good images lost (issue 13's budget), and the points of the IQR rule `Q3 + k * IQR` for several k on
the same standardised scores the rule saw.

The tables' removal_curve.png (`maml_iqr.tables`) plots a different quantity: the ranking a whole run ends with
(suspicious.csv: each image's score from the last iteration that scored it), not its first scoring.

  python -m benchmarks.removal_curve --roots=results/ablation_elpv,results/ablation_mtd \
      --out=results/benchmarks/removal_curve
"""
import collections

import numpy as np
from absl import app, flags

from maml_iqr import tables
from maml_iqr.io import write_atomic, write_json
from maml_iqr.metrics import GOOD_LOST_BUDGET, auroc, recall_at_good_lost, recall_within, removal_curve
from maml_iqr.refine import iqr_threshold

flags.DEFINE_list("roots", ["results/ablation_elpv", "results/ablation_mtd"], "Sweep folders.")
flags.DEFINE_string("out", "results/benchmarks/removal_curve", "Output prefix: PREFIX.json, .md and .png.")
FLAGS = flags.FLAGS
KS = (0.5, 1.0, 1.5, 2.0, 3.0)
GRID = np.linspace(0.0, 1.0, 201)  # good-lost axis on which seeds' curves are averaged


def cell_figures(r: dict) -> dict:
  """The curve's figures for one run's first refinement iteration."""
  first = r["refinement"][0]
  scores = np.asarray(first["scores"], np.float64)
  injected = np.asarray(first["scores_injected"], bool)
  good_lost, recall = removal_curve(injected, scores)
  k_points = {}
  for k in KS:
    removed = scores > iqr_threshold(scores, k)
    k_points[str(k)] = {"recall": float(removed[injected].mean()), "good_lost": float(removed[~injected].mean())}
  return {"auroc": auroc(injected, scores),
          "recall_at_budget": recall_at_good_lost(injected, scores, GOOD_LOST_BUDGET),
          "curve_on_grid": [recall_within(good_lost, recall, g) for g in GRID],
          "k": k_points}


def collect(roots: list[str]) -> dict:
  """{(dataset/category, arm, noise): [figures per seed]} for every finished noisy run of a removing arm."""
  groups = collections.defaultdict(list)
  for r in (r for root in roots for r in tables.collect(root)):
    if r.get("refinement") and r["contamination"]["n_injected"]:
      groups[(f"{r['dataset']}/{r['category']}", tables.label(r), r["noise"]["ratio"])].append(
          dict(cell_figures(r), seed=r["seed"]))
  return dict(sorted(groups.items()))


def _pm(values) -> str:
  return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def markdown(groups: dict) -> str:
  head = ["set", "arm", "noise", "seeds", "cleaning AUROC", f"recall at <= {GOOD_LOST_BUDGET:.0%} good lost"]
  head += [f"k={k}: recall / good lost" for k in KS]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for (data, arm, noise), runs in groups.items():
    row = [data, arm, f"{noise:.0%}", str(len(runs)), _pm([x["auroc"] for x in runs]),
           _pm([x["recall_at_budget"] for x in runs])]
    for k in KS:
      row.append(f"{np.mean([x['k'][str(k)]['recall'] for x in runs]):.2f} / "
                 f"{np.mean([x['k'][str(k)]['good_lost'] for x in runs]):.3f}")
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines) + "\n"


def plot(groups: dict, path: str) -> None:
  import matplotlib  # noqa: PLC0415 - plotting only here
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
  panels = sorted({(d, n) for d, _, n in groups})
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
  for ax, (data, noise) in zip(axes[0], panels):
    for (d, arm, n), runs in groups.items():
      if (d, n) != (data, noise):
        continue
      mean = np.mean([x["curve_on_grid"] for x in runs], axis=0)
      line, = ax.plot(GRID, mean, label=f"{arm} ({len(runs)} seeds)")
      for k in KS:
        ax.plot(np.mean([x["k"][str(k)]["good_lost"] for x in runs]),
                np.mean([x["k"][str(k)]["recall"] for x in runs]), "o", color=line.get_color(), ms=3)
    ax.axvline(GOOD_LOST_BUDGET, color="grey", lw=0.8, ls=":")
    ax.axhline(0.9, color="grey", lw=0.8, ls=":")
    ax.set(xlim=(0, 0.4), ylim=(0, 1.02), xlabel="good images lost (share)",
           ylabel="injected removed (recall)", title=f"{data}, {noise:.0%} noise")
    ax.legend(fontsize=7, loc="lower right")
  fig.suptitle(f"first-iteration scores: every threshold (dots: IQR rule at k = {', '.join(map(str, KS))})",
               fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  groups = collect(FLAGS.roots)
  if not groups:
    raise SystemExit(f"no finished noisy run of a removing method below {FLAGS.roots}")
  table = markdown(groups)
  print(table)
  write_atomic(FLAGS.out + ".md", table)
  write_json(FLAGS.out + ".json", {"good_lost_budget": GOOD_LOST_BUDGET, "ks": KS, "grid": GRID.tolist(),
                                   "groups": [{"set": d, "arm": a, "noise": n, "runs": runs}
                                              for (d, a, n), runs in groups.items()]})
  plot(groups, FLAGS.out + ".png")
  print(f"wrote {FLAGS.out}.md, .json, .png")


if __name__ == "__main__":
  app.run(main)
