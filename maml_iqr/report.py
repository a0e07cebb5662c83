"""report.md and plots from a run's results: what a person reads first."""
from __future__ import annotations

import io
import os

import numpy as np

from maml_iqr.io import write_atomic


def _fmt(x, digits=4):
  return "-" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def _save(fig, path):
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
  write_atomic(path, buf.getvalue())


def plots(workdir: str, results: dict) -> list[str]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  made = []
  labels, scores = np.asarray(results["test_labels"]), np.asarray(results["test_scores"])
  if results["auroc"] is not None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.histogram_bin_edges(scores, 40)
    ax.hist(scores[labels == 0], bins, alpha=0.6, label="good")
    ax.hist(scores[labels == 1], bins, alpha=0.6, label="defective")
    ax.set(xlabel="anomaly score", ylabel="test images", title=f"test scores, AUROC {results['auroc']:.4f}")
    ax.legend()
    _save(fig, os.path.join(workdir, "test_scores.png"))
    plt.close(fig)
    made.append("test_scores.png")
  history = results.get("refinement") or []
  if history:
    fig, axes = plt.subplots(1, len(history), figsize=(4 * len(history), 3.2), squeeze=False)
    for ax, h in zip(axes[0], history):
      s, inj = np.asarray(h["scores"]), np.asarray(h["scores_injected"], bool)
      bins = np.histogram_bin_edges(s, 40)
      ax.hist(s[~inj], bins, alpha=0.6, label="good")
      ax.hist(s[inj], bins, alpha=0.6, label="injected")
      ax.axvline(h["threshold"], color="k", ls="--", label="IQR threshold")
      ax.set(title=f"iteration {h['iteration']}: -{h['n_removed']}", xlabel="training score")
    axes[0][0].legend()
    _save(fig, os.path.join(workdir, "refine_scores.png"))
    plt.close(fig)
    made.append("refine_scores.png")
    n_inj = results["contamination"]["n_injected"]
    it = [h["iteration"] for h in history]
    cum_inj = np.cumsum([h["removed_injected"] for h in history])
    cum_all = np.cumsum([h["n_removed"] for h in history])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(it, [h["val_auroc"] for h in history], "o-", label="validation AUROC")
    if n_inj:
      ax.plot(it, cum_inj / n_inj, "s-", label="removal recall")
    ax.plot(it, np.where(cum_all > 0, cum_inj / np.maximum(cum_all, 1), np.nan), "^-", label="removal precision")
    ax.set(xlabel="iteration", ylim=(0, 1.02))
    ax.legend()
    _save(fig, os.path.join(workdir, "refine_progress.png"))
    plt.close(fig)
    made.append("refine_progress.png")
  return made


def write(workdir: str, results: dict) -> None:
  c, r = results["contamination"], results["removal"]
  lines = [f"# {results['method']} on {results['dataset']}/{results['category']}", "",
           f"noise {results['noise']['ratio']} ({results['noise']['mode']}, overlap {results['noise']['overlap']}), "
           f"seed {results['seed']}, backbone {results['backbone']}", "",
           "| test AUROC | AUPR | F1-max | train images | injected | realised noise | removed | removed injected | "
           "removed good | recall | good lost |", "|---|---|---|---|---|---|---|---|---|---|---|",
           f"| {_fmt(results['auroc'])} | {_fmt(results['aupr'])} | {_fmt(results['f1_max'])} | {c['n_train']} | "
           f"{c['n_injected']} | {_fmt(c['realised'], 3)} | {r['n_removed']} | {r['removed_injected']} | "
           f"{r['removed_good']} | {_fmt(r['recall'], 3)} | {_fmt(r['good_lost'], 3)} |", ""]
  if results.get("refinement"):
    lines += [f"## Refinement (stopped: {results['stop_reason']}; the final set is the one whose flows validated "
              f"best, iteration {results.get('best_iteration')})", "",
              "| iteration | threshold | kept before | removed | removed injected | removed good | injected left | "
              "val AUROC | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for h in results["refinement"]:
      lines.append(f"| {h['iteration']} | {_fmt(h['threshold'])} | {h['n_kept_before']} | {h['n_removed']} | "
                   f"{h['removed_injected']} | {h['removed_good']} | {h['injected_left']} | {_fmt(h['val_auroc'])} | "
                   f"{_fmt(h.get('seconds'), 1)} |")
    lines.append("")
    fits = [(h["iteration"], h["meta"]) for h in results["refinement"] if "support_drop" in h.get("meta", {})]
    if fits:
      lines += ["### Does the inner loop adapt? (last meta-step, mean over folds, in the loss's units)", "",
                "| iteration | support-loss drop | query-loss drop | cosine(meta-gradient, query gradient) | "
                "meta-loss first epoch | last epoch |", "|---|---|---|---|---|---|"]
      lines += [f"| {i} | {_fmt(f['support_drop'], 5)} | {_fmt(f['query_drop'], 5)} | {_fmt(f['grad_cosine'], 4)} | "
                f"{_fmt(f.get('meta_loss_first_epoch'))} | {_fmt(f.get('meta_loss_last_epoch'))} |" for i, f in fits]
      lines.append("")
  if results.get("auroc") is None:
    lines += ["No test set (clean mode): every image was cleaned and the detector trained on what was kept. "
              "`suspicious.csv` ranks every training image by its cleaning score; `review*.png` shows the removed and "
              "the borderline images with the detector's anomaly maps.", ""]
  lines += [f"Stopping rule: {results.get('stop_rule') or '-'}. Saved detector: `model/` (threshold "
            f"{_fmt(results.get('model', {}).get('threshold', {}).get('value'))}, "
            f"{results.get('model', {}).get('threshold', {}).get('rule', '-')}); pixel AUROC "
            f"{_fmt((results.get('pixel_auroc') or {}).get('value'))}.", ""]
  lines += ["## Timings (s)", "", " | ".join(f"{k} {v}" for k, v in results["timings"].items()), ""]
  for name in plots(workdir, results):
    lines += [f"![{name}]({name})", ""]
  write_atomic(os.path.join(workdir, "report.md"), "\n".join(lines))
