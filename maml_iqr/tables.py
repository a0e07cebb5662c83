"""Paper-format tables and plots from a sweep's results.json files.

Per method: one row per category, one column per noise level, a mean row; cells are mean ± std over seeds.
A comparison table: one row per method, the mean over categories per noise level. Markdown and CSV.
"""
from __future__ import annotations

import collections
import csv
import io
import json
import os

import numpy as np

from maml_iqr.io import write_atomic


def collect(root: str) -> list[dict]:
  """Every finished run (results.json with status 'done') below `root`."""
  rows = []
  for folder, _, files in sorted(os.walk(root)):
    if "results.json" in files:
      with open(os.path.join(folder, "results.json")) as f:
        r = json.load(f)
      if r.get("status") == "done":
        rows.append(r)
  return rows


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
  header = "| category | " + " | ".join(f"{int(round(100 * n))} %" for n in noises) + " |\n"
  header += "|---|" + "---|" * len(noises) + "\n"
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
      means.append(f"{np.mean(per_cat):.3f}" if per_cat else "-")
    body += "| **mean** | " + " | ".join(means) + " |\n"
    out[f"auroc_{m}"] = f"### {m}: test image AUROC\n\n" + header + body
  comp = "| method | " + " | ".join(f"{int(round(100 * n))} %" for n in noises) + " |\n|---|" + "---|" * len(noises) + "\n"
  rem = comp
  for m in methods:
    cells, rcells = [], []
    for n in noises:
      sel = [r for r in runs if label(r) == m and r["noise"]["ratio"] == n]
      cells.append(_cell([r["auroc"] for r in sel]))
      rec = [r["removal"]["recall"] for r in sel if r["removal"]["recall"] is not None]
      lost = [r["removal"]["good_lost"] for r in sel]
      rcells.append((f"{np.mean(rec):.2f}" if rec else "-") + " / " + (f"{np.mean(lost):.3f}" if lost else "-"))
    comp += f"| {m} | " + " | ".join(cells) + " |\n"
    rem += f"| {m} | " + " | ".join(rcells) + " |\n"
  out["comparison"] = "### Methods compared: test image AUROC (mean ± std over seeds and categories)\n\n" + comp
  out["removal"] = "### Removal recall of injected images / share of good images lost\n\n" + rem
  return out


def write(root: str, out_dir: str) -> list[str]:
  """Writes tables.md, results.csv and the plots for the runs below `root`; returns the files written."""
  runs = collect(root)
  if not runs:
    return []
  md = tables(runs)
  write_atomic(os.path.join(out_dir, "tables.md"), "\n".join(md.values()))
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
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for m in methods:
    mean, std = [], []
    for n in noises:
      v = [r["auroc"] for r in runs if label(r) == m and r["noise"]["ratio"] == n]
      mean.append(np.mean(v) if v else np.nan)
      std.append(np.std(v) if v else np.nan)
    axes[0].errorbar(np.array(noises) * 100, mean, yerr=std, marker="o", capsize=3, label=m)
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
  return ["auroc_vs_noise.png"]
