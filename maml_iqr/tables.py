"""Paper-format tables and plots from a sweep's results.json files.

Per method: one row per category, one column per noise level, a mean row; cells are mean ± std over seeds.
A comparison table: one row per method, the mean over categories per noise level. Markdown and CSV. Column
headers give the noise level and the contamination it realised in the training sets (injected / all). A mean
or comparison cell whose method lacks some of the (category, seed) runs that the other methods have at its noise
level says so, "(k of n runs)", and so do the plots: a comparison is paired or it is marked.

Removal is read two ways: where the run stopped (recall of the injected images, share of the good ones lost) and
what its cleaning ranking allows (`suspicious.csv`: each image's score from the last iteration that scored it):
the recall at the largest threshold that loses at most `metrics.GOOD_LOST_BUDGET` of the good images, and the whole
recall / good-lost curve (removal_curve.png), each run's stopping point marked on it.
"""
from __future__ import annotations

import collections
import csv
import io
import json
import os

import numpy as np

from maml_iqr import metrics
from maml_iqr.io import write_atomic


def collect(root: str) -> list[dict]:
  """Every finished run (results.json with status 'done') below `root`, with its cleaning ranking's curve under
  "curve" where it has one (see `ranking_curve`)."""
  rows = []
  for folder, _, files in sorted(os.walk(root)):
    if "results.json" in files:
      with open(os.path.join(folder, "results.json")) as f:
        r = json.load(f)
      if r.get("status") == "done":
        r["curve"] = ranking_curve(folder, r)
        rows.append(r)
  return rows


def ranking_curve(folder: str, r: dict) -> dict | None:
  """`metrics.removal_curve` of the run's cleaning ranking (suspicious.csv against its injected ids): good lost
  and recall at every threshold; None for runs that rank nothing (no refinement, no injected images, or no
  suspicious.csv)."""
  path = os.path.join(folder, "suspicious.csv")
  if (not r.get("refinement") or not r["contamination"]["n_injected"] or "injected_ids" not in r
      or not os.path.exists(path)):  # results.json files before 2026-11 name no injected ids
    return None
  with open(path) as f:
    rows = [row for row in csv.DictReader(f) if row["score"] not in ("", "nan")]
  injected = set(r["injected_ids"])
  good_lost, recall = metrics.removal_curve(np.array([row["id"] in injected for row in rows]),
                                            np.array([float(row["score"]) for row in rows]))
  return {"good_lost": good_lost, "recall": recall}


ORDER = ["differnet", "one_shot", "iterative", "maml_iqr", "gaussian_iqr", "patch_iqr"]


def label(r: dict) -> str:
  """The method, with a sweep variant's tag where there is one (e.g. 'maml_iqr [k=0.5]')."""
  return r["method"] + (f" [{r['tag']}]" if r.get("tag") else "")


def _order(labels) -> list[str]:
  return sorted(labels, key=lambda m: (ORDER.index(m.split(" ")[0]), m))


def _cell(values: list[float]) -> str:
  if not values:
    return "-"
  if len(values) == 1:
    return f"{values[0]:.3f}"
  return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def _group(runs, key_fn):
  out = collections.defaultdict(list)
  for r in runs:
    out[key_fn(r)].append(r)
  return out


def tables(runs: list[dict]) -> dict[str, str]:
  """{name: markdown} for each method, the comparison, and removal recall / good lost per method."""
  noises = sorted({r["noise"]["ratio"] for r in runs})
  methods = _order({label(r) for r in runs})
  columns = " | ".join(_noise_header(runs, n) for n in noises) + " |\n|---|" + "---|" * len(noises) + "\n"
  header = "| category | " + columns
  at_noise = _group(runs, lambda r: r["noise"]["ratio"])
  gaps = _gaps(runs)
  out = {}
  for m in methods:
    by = _group([r for r in runs if label(r) == m], lambda r: (f"{r['dataset']}/{r['category']}", r["noise"]["ratio"]))
    cats = sorted({k[0] for k in by})
    body = ""
    for c in cats:
      body += f"| {c} | " + " | ".join(_cell([r["auroc"] for r in by.get((c, n), [])]) for n in noises) + " |\n"
    means = []
    for n in noises:
      per_cat = [np.mean([r["auroc"] for r in by[(c, n)]]) for c in cats if (c, n) in by]
      means.append((f"{np.mean(per_cat):.3f}" if per_cat else "-") + gaps[(m, n)])
    body += "| **mean** | " + " | ".join(means) + " |\n"
    out[f"auroc_{m}"] = f"### {m}: test image AUROC\n\n" + header + body
  comp = "| method | " + columns
  rem, within = comp, comp
  for m in methods:
    cells, rcells, wcells = [], [], []
    for n in noises:
      sel = [r for r in at_noise[n] if label(r) == m]
      gap = gaps[(m, n)]
      cells.append(_cell([r["auroc"] for r in sel]) + gap)
      rec = [r["removal"]["recall"] for r in sel if r["removal"]["recall"] is not None]
      lost = [r["removal"]["good_lost"] for r in sel]
      rcells.append((f"{np.mean(rec):.2f}" if rec else "-") + " / " + (f"{np.mean(lost):.3f}" if lost else "-") + gap)
      wcells.append(_cell([metrics.recall_within(r["curve"]["good_lost"], r["curve"]["recall"])
                          for r in sel if r.get("curve")]) + gap)
    comp += f"| {m} | " + " | ".join(cells) + " |\n"
    rem += f"| {m} | " + " | ".join(rcells) + " |\n"
    within += f"| {m} | " + " | ".join(wcells) + " |\n"
  if any(gaps.values()):
    note = ("\n(k of n runs): the method has only k of the n (category, seed) runs that the methods at this noise "
            "level have together; its cell is not paired with the others'.\n")
    comp, rem, within = comp + note, rem + note, within + note
  out["comparison"] = "### Methods compared: test image AUROC (mean ± std over seeds and categories)\n\n" + comp
  out["removal"] = ("### Removal where the run stopped: recall of the injected images / share of the good images "
                    "lost\n\n" + rem)
  out["within_budget"] = ("### Removal the cleaning ranking allows: recall at <= "
                          f"{100 * metrics.GOOD_LOST_BUDGET:.0f} % of the good images lost (suspicious.csv; "
                          "mean ± std over seeds)\n\n" + within)
  return out


def _gaps(runs: list[dict]) -> dict[tuple[str, float], str]:
  """{(method label, noise): `_coverage` of that method's runs among every run at that noise level}."""
  at_noise = _group(runs, lambda r: r["noise"]["ratio"])
  return {(m, n): _coverage([r for r in level if label(r) == m], level)
          for n, level in at_noise.items() for m in {label(r) for r in runs}}


def _coverage(sel: list[dict], level: list[dict]) -> str:
  """' (k of n runs)' where the runs `sel` of one method cover only k of the n (category, seed) pairs that the
  runs `level` of every method at the same noise level cover, so that an unpaired mean is never read as paired;
  '' where they cover all of them or none (the cell is '-')."""
  have = {(r["dataset"], r["category"], r["seed"]) for r in sel}
  every = {(r["dataset"], r["category"], r["seed"]) for r in level}
  return "" if not have or have >= every else f" ({len(have)} of {len(every)} runs)"


def _noise_header(runs, noise: float) -> str:
  """'20 % (14.5 % realised)': the noise level and the injected share of the training sets it made (a range when
  categories differ)."""
  realised = sorted({round(100 * r["contamination"]["realised"], 1) for r in runs
                     if r["noise"]["ratio"] == noise and r["contamination"].get("realised") is not None})
  name = f"{int(round(100 * noise))} %"
  if not realised or realised == [0.0]:
    return name
  span = f"{realised[0]:.1f}" if realised[0] == realised[-1] else f"{realised[0]:.1f}-{realised[-1]:.1f}"
  return f"{name} ({span} % realised)"


def write(root: str, out_dir: str, note: str = "") -> list[str]:
  """Writes tables.md (headed by `note`, a sweep's warning on how to read it), results.csv and the plots for the
  runs below `root`; returns the files written."""
  runs = collect(root)
  if not runs:
    return []
  md = tables(runs)
  head = f"> {note}\n\n" if note else ""
  write_atomic(os.path.join(out_dir, "tables.md"), head + "\n".join(md.values()))
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(["dataset", "category", "method", "tag", "noise", "seed", "auroc", "aupr", "f1_max", "n_injected",
              "realised", "removal_recall", "removal_precision", "good_lost", "iterations", "total_s"])
  for r in runs:
    rm = r["removal"]
    w.writerow([r["dataset"], r["category"], r["method"], r.get("tag", ""), r["noise"]["ratio"], r["seed"], r["auroc"], r["aupr"],
                r["f1_max"], r["contamination"]["n_injected"], r["contamination"]["realised"], rm["recall"],
                rm["precision"], rm["good_lost"], len(r["refinement"]), r["timings"]["total_s"]])
  write_atomic(os.path.join(out_dir, "results.csv"), buf.getvalue())
  return ["tables.md", "results.csv"] + _plots(runs, out_dir)


def _plots(runs, out_dir) -> list[str]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  noises = sorted({r["noise"]["ratio"] for r in runs})
  methods = _order({label(r) for r in runs})
  gaps = _gaps(runs)
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for m in methods:
    mean, std = [], []
    for n in noises:
      v = [r["auroc"] for r in runs if label(r) == m and r["noise"]["ratio"] == n]
      mean.append(np.mean(v) if v else np.nan)
      std.append(np.std(v) if v else np.nan)
    axes[0].errorbar(np.array(noises) * 100, mean, yerr=std, marker="o", capsize=3, label=m)
    for n, y in zip(noises, mean):  # an unpaired mean is labelled on the plot as in the tables
      if gaps[(m, n)]:
        axes[0].annotate(gaps[(m, n)].strip(" ()"), (100 * n, y), fontsize=6, xytext=(4, -8),
                         textcoords="offset points")
    rec = [np.mean([r["removal"]["recall"] for r in runs if label(r) == m and r["noise"]["ratio"] == n
                    and r["removal"]["recall"] is not None] or [np.nan]) for n in noises]
    prec = [np.mean([r["removal"]["precision"] for r in runs if label(r) == m and r["noise"]["ratio"] == n
                     and r["removal"]["precision"] is not None] or [np.nan]) for n in noises]
    if m != "differnet":
      axes[1].plot(np.array(noises) * 100, rec, "o-", label=f"{m} recall")
      axes[1].plot(np.array(noises) * 100, prec, "s--", label=f"{m} precision")
  axes[0].set(xlabel="noise (%)", ylabel="test AUROC", title="AUROC against noise")
  axes[1].set(xlabel="noise (%)", ylim=(0, 1.02), title="removal of injected images")
  axes[0].legend()
  if axes[1].get_legend_handles_labels()[0]:
    axes[1].legend(fontsize=7)
  else:
    axes[1].text(0.5, 0.5, "no cleaning method in this sweep", ha="center", transform=axes[1].transAxes)
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
  plt.close(fig)
  write_atomic(os.path.join(out_dir, "auroc_vs_noise.png"), buf.getvalue())
  return ["auroc_vs_noise.png"] + _curve_plot(runs, out_dir, gaps)


def _curve_plot(runs, out_dir, gaps) -> list[str]:
  """removal_curve.png: one panel per noise level, per method the recall against the share of good images lost
  along its ranking (mean over runs on a common grid), each run's stopping point as a dot, the budget dotted; the
  legend calls a method unpaired where `gaps` (`_gaps(runs)`) marks it.
  benchmarks/removal_curve.py plots the same axes for a run's first scoring instead of its final ranking."""
  import matplotlib.pyplot as plt
  ranked = [r for r in runs if r.get("curve")]
  if not ranked:
    return []
  noises = sorted({r["noise"]["ratio"] for r in ranked})
  grid = np.linspace(0, 0.3, 121)
  methods = _order({label(r) for r in ranked})  # one colour per method across the panels
  fig, axes = plt.subplots(1, len(noises), figsize=(4.2 * len(noises), 3.6), squeeze=False)
  for ax, n in zip(axes[0], noises):
    for i, m in enumerate(methods):
      sel = [r for r in ranked if label(r) == m and r["noise"]["ratio"] == n]
      if not sel:
        continue
      # the recall reached within each grid point's loss: a step function of the ranking, so take the max below
      mean = np.mean([[metrics.recall_within(r["curve"]["good_lost"], r["curve"]["recall"], g) for g in grid]
                     for r in sel], 0)
      colour = f"C{i}"
      runs_note = f"{len(sel)} run{'s' * (len(sel) > 1)}" + ("; unpaired" if gaps[(m, n)] else "")
      ax.plot(100 * grid, mean, color=colour, label=f"{m} ({runs_note})")
      ax.scatter([100 * r["removal"]["good_lost"] for r in sel], [r["removal"]["recall"] for r in sel],
                 color=colour, s=14, zorder=3)
    ax.axvline(100 * metrics.GOOD_LOST_BUDGET, color="grey", ls=":")
    ax.set(xlabel="good images lost (%)", ylabel="recall of injected images", ylim=(0, 1.02),
           title=f"noise {int(round(100 * n))} %")
    ax.legend(fontsize=7, loc="lower right")
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
  plt.close(fig)
  write_atomic(os.path.join(out_dir, "removal_curve.png"), buf.getvalue())
  return ["removal_curve.png"]
