"""The IQR rejection rule and the refinement controller's state, in numpy, with no model.

Each iteration, `cleaning.refine` asks the method's fit functions for cross-fitted scores of the kept training
images and of the validation set, then `refine_step` applies T = Q3 + k * IQR, records what was removed, and
decides whether to stop. The state is a `RefineState`, checkpointed after every iteration.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from maml_iqr import metrics


def iqr_threshold(scores: np.ndarray, k: float) -> float:
  """T = Q3 + k * (Q3 - Q1) of the scores (numpy's linear-interpolation quartiles)."""
  q1, q3 = np.percentile(scores, [25, 75])
  return float(q3 + k * (q3 - q1))


def validation_threshold(val_good_scores: np.ndarray, quantile: float) -> float:
  """Automatic threshold: the `quantile` of the scores of known-good validation images.

  Beyond the paper: instead of a fixed k, remove training images that score above what (say) 99 % of
  labelled good images score, so the share of good images lost is set directly; k follows from the data.
  """
  return float(np.quantile(val_good_scores, quantile))


def select_removals(scores: np.ndarray, kept: np.ndarray, k: float, n_original: int, max_per_iteration: float,
                    max_total: float, min_kept: int, threshold: float | None = None,
                    fold_of: np.ndarray | None = None, min_fit: int = 1) -> tuple[float, np.ndarray]:
  """Indices (into the full set) to remove this iteration, highest scores first, within every guard.

  `scores` holds one score per training image (entries not in `kept` are ignored). Guards: at most
  `max_per_iteration` of the current set, at most `max_total` of the original set over the whole run, the set
  never falls below `min_kept` images, and (with `fold_of`, the fold of every image) no fold's fit set, the
  kept images of the other folds, falls below `min_fit` images (a MAML task needs `task_size` of them).
  `threshold` overrides the IQR rule (see `validation_threshold`).
  """
  kept_idx = np.flatnonzero(kept)
  s = scores[kept_idx]
  threshold = iqr_threshold(s, k) if threshold is None else threshold
  over = kept_idx[s > threshold]
  over = over[np.argsort(-scores[over], kind="stable")]
  budget = min(int(np.floor(max_per_iteration * len(kept_idx))),
               int(np.floor(max_total * n_original)) - (n_original - len(kept_idx)),
               len(kept_idx) - min_kept)
  over = over[:max(budget, 0)]
  if fold_of is not None and len(over):
    n_folds = int(fold_of.max()) + 1
    per_fold = np.bincount(fold_of[kept_idx], minlength=n_folds)
    chosen = []
    for i in over:
      after = per_fold.copy()
      after[fold_of[i]] -= 1
      fit_sets = after.sum() - after if n_folds > 1 else after
      if fit_sets.min() >= min_fit:
        per_fold, chosen = after, chosen + [i]
    over = np.asarray(chosen, np.int64)
  return threshold, np.sort(over)


@dataclasses.dataclass
class RefineState:
  """Everything the controller needs to resume: the kept mask, the iteration reached, the history so far."""
  kept: np.ndarray
  iteration: int = 0
  history: list = dataclasses.field(default_factory=list)
  best_iteration: int = -1    # the iteration whose starting set is kept (see `refine_step`)
  best_val_auroc: float = -1.0  # the highest validation AUROC so far
  stop_reason: str = ""

  @property
  def done(self) -> bool:
    return bool(self.stop_reason)

  def final_kept(self) -> np.ndarray:
    """The set the final detector trains on.

    Validation measures the flows fitted on an iteration's starting set (`kept_before`). When the last
    iteration validated best (or there is no validation), its removals are kept: the set after the last
    removal. Otherwise the set whose own flows validated best, `kept_before` of the best iteration: every later
    removal was made by flows that validated worse.
    """
    if not self.history or self.best_iteration == self.iteration - 1:
      return self.kept
    return np.asarray(self.history[self.best_iteration]["kept_before"], bool)


def holds(val_auroc: float, best: float, n_defective: int, n_good: int, tolerance_se: float) -> bool:
  """Whether an iteration's validation AUROC is as good as the highest so far (`best`, this one included) by the
  one-standard-error rule; without validation (nan) every iteration holds. The standard error of a perfect 1.0
  is 0 (Hanley-McNeil), which made any fall from it stop the loop whatever the tolerance: it is taken at the
  nearest AUROC short of perfect, one pair of the validation images misordered."""
  if np.isnan(val_auroc):
    return True
  at = min(best, 1.0 - 1.0 / max(n_defective * n_good, 1))
  return val_auroc >= best - tolerance_se * metrics.auroc_standard_error(at, n_defective, n_good)


def refine_step(state: RefineState, train_scores: np.ndarray, val_labels: np.ndarray, val_scores: np.ndarray,
                injected: np.ndarray, ids: tuple[str, ...], r, fold_of: np.ndarray | None = None,
                min_fit: int = 1) -> RefineState:
  """Applies one iteration's IQR removal and the stopping rules (r = config.refine); returns the new state.
  `fold_of` and `min_fit` keep every fold's fit set large enough (see `select_removals`).

  The stopping rule is a one-standard-error rule: an iteration whose validation AUROC is within
  `r.val_tolerance_se` standard errors (`metrics.auroc_standard_error`) of the highest so far is as good as it,
  and the latest such iteration, the most cleaned set, becomes `best_iteration`; refinement stops `r.patience`
  iterations after it. A drop smaller than the validation set's own noise is no evidence that a removal hurt,
  and every removal measured so far lowered the injected share of the kept set (README, "Why these settings").
  `val_tolerance_se=0` keeps the set with the highest validation AUROC."""
  n = len(state.kept)
  auto = None
  if r.auto_k_quantile > 0 and (val_labels == 0).any():
    auto = validation_threshold(val_scores[val_labels == 0], r.auto_k_quantile)
  threshold, removed = select_removals(train_scores, state.kept, r.k, n, r.max_remove_per_iteration,
                                       r.max_remove_total, r.min_kept, auto, fold_of, min_fit)
  q1, q3 = np.percentile(train_scores[state.kept], [25, 75])
  val_auroc = metrics.auroc(val_labels, val_scores) if len(np.unique(val_labels)) == 2 else float("nan")
  kept = state.kept.copy()
  kept[removed] = False
  entry = {
      "iteration": state.iteration,
      "threshold": threshold,
      "k": float((threshold - q3) / (q3 - q1)) if q3 > q1 else None,  # the k in effect (differs when automatic)
      "n_kept_before": int(state.kept.sum()),
      "n_removed": int(len(removed)),
      "n_kept": int(kept.sum()),
      "removed_injected": int(injected[removed].sum()),
      "removed_good": int((~injected[removed]).sum()),
      "injected_left": int((injected & kept).sum()),
      "val_auroc": val_auroc,
      "removed_ids": [ids[i] for i in removed],
      "kept_before": state.kept.astype(int).tolist(),
      "scores": [round(float(x), 6) for x in train_scores[state.kept]],
      "scores_injected": injected[state.kept].astype(int).tolist(),
  }
  best = state.best_val_auroc if np.isnan(val_auroc) else max(state.best_val_auroc, val_auroc)
  best_iteration = state.best_iteration
  if holds(val_auroc, best, int((val_labels == 1).sum()), int((val_labels == 0).sum()), r.val_tolerance_se):
    best_iteration = state.iteration
  reason = ""
  if state.iteration - best_iteration >= r.patience:
    reason = "stalled"
  elif len(removed) == 0:
    reason = "nothing_removed"
  elif state.iteration + 1 >= r.max_iterations:
    reason = "max_iterations"
  return RefineState(kept, state.iteration + 1, state.history + [entry], best_iteration, best, reason)


def ranking(history: list, final_kept: np.ndarray, last_kept: np.ndarray) -> dict[str, np.ndarray]:
  """Every training image's cleaning score from the last iteration that scored it (the one that removed it, or
  the last one), whether the final set leaves it out, and the iteration whose removal did (-1 for kept images:
  removals undone because later flows validated worse are not removals). `last_kept`: the set after the last
  iteration's removal."""
  score = np.full(len(final_kept), np.nan)
  removed_at = np.full(len(final_kept), -1)
  afters = [h["kept_before"] for h in history[1:]] + [last_kept]
  for h, after in zip(history, afters):
    before, after = np.asarray(h["kept_before"], bool), np.asarray(after, bool)
    score[before] = h["scores"]
    removed_at[before & ~after & ~final_kept] = h["iteration"]
  return {"score": score, "removed": ~final_kept, "removed_at": removed_at}
