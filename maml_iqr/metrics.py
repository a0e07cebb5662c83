"""Image-level detection metrics on the host, in numpy, so results do not depend on scikit-learn.

Labels are 1 for defective (the positive class) and 0 for good; a higher score means more anomalous.
Every metric needs both classes and raises ValueError otherwise, since a one-class score is meaningless.
"""
from __future__ import annotations

import numpy as np


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
  """Validated 1-D bool labels and float64 scores."""
  labels = np.asarray(labels)
  scores = np.asarray(scores, dtype=np.float64)
  if labels.ndim != 1 or scores.ndim != 1 or labels.shape != scores.shape:
    raise ValueError(f"labels and scores must be 1-D of equal length, got shapes {labels.shape} and {scores.shape}")
  if not np.isin(labels, (0, 1)).all():
    raise ValueError(f"labels must be 0 (good) or 1 (defective), got values {np.unique(labels)}")
  if not np.isfinite(scores).all():
    raise ValueError(f"scores must be finite, got {int((~np.isfinite(scores)).sum())} non-finite values")
  labels = labels.astype(bool)
  n_pos = int(labels.sum())
  if n_pos == 0 or n_pos == labels.size:
    raise ValueError(f"metric needs both classes, got {n_pos} defective and {labels.size - n_pos} good images")
  return labels, scores


def _average_ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks of x with ties given the mean of their ranks."""
  order = np.argsort(x, kind="stable")
  sorted_x = x[order]
  # Each run of equal values [start, end) gets rank (start + 1 + end) / 2.
  starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
  ends = np.r_[starts[1:], x.size]
  run_ranks = (starts + 1 + ends) / 2.0
  ranks = np.empty(x.size)
  ranks[order] = np.repeat(run_ranks, ends - starts)
  return ranks


def auroc(labels, scores) -> float:
  """Area under the ROC curve = P(score_defective > score_good) + 0.5 P(tie), via Mann-Whitney U."""
  labels, scores = _check(labels, scores)
  n_pos, n_neg = int(labels.sum()), int((~labels).sum())
  u = _average_ranks(scores)[labels].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))


def auroc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
  """Hanley and McNeil's (1982) standard error of an AUROC measured on n_pos defective and n_neg good images:
  how far a validation AUROC moves by the luck of which images were drawn."""
  q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
  var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc ** 2) + (n_neg - 1) * (q2 - auc ** 2)) / (n_pos * n_neg)
  return float(np.sqrt(max(var, 0.0)))


def _pr_counts(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """True and false positive counts when flagging score >= t, for each distinct score t, high to low."""
  order = np.argsort(-scores, kind="stable")
  sorted_scores, sorted_labels = scores[order], labels[order]
  last_of_run = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
  tp = np.cumsum(sorted_labels)[last_of_run]
  fp = (np.flatnonzero(last_of_run) + 1) - tp
  return tp.astype(np.float64), fp.astype(np.float64)


def aupr(labels, scores) -> float:
  """Average precision sum_n (R_n - R_{n-1}) P_n over score thresholds (step-wise, as sklearn's)."""
  labels, scores = _check(labels, scores)
  tp, fp = _pr_counts(labels, scores)
  precision = tp / (tp + fp)
  recall = tp / labels.sum()
  return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def removal_curve(labels, scores) -> tuple[np.ndarray, np.ndarray]:
  """Cleaning read as detection on the training set: (share of good images lost, share of defective ones
  removed) when every image scoring at least t is removed, for each distinct score t from high to low, starting
  at (0, 0). Tied images are removed together."""
  labels, scores = _check(labels, scores)
  tp, fp = _pr_counts(labels, scores)
  return np.r_[0.0, fp / (~labels).sum()], np.r_[0.0, tp / labels.sum()]


GOOD_LOST_BUDGET = 0.05  # share of the good training images a cleaning may lose (issue 13: recall >= 0.9 within it)


def recall_within(good_lost, recall, budget: float = GOOD_LOST_BUDGET) -> float:
  """The highest recall on a removal curve (`removal_curve`) whose share of good images lost stays within
  `budget`; the 1e-12 lets a budget computed in floating point (a plot's grid) include the point it names."""
  return float(np.max(recall[good_lost <= budget + 1e-12]))


def recall_at_good_lost(labels, scores, budget: float = GOOD_LOST_BUDGET) -> float:
  """The highest share of defective images any threshold removes while losing at most `budget` of the good."""
  return recall_within(*removal_curve(labels, scores), budget)


def f1_max(labels, scores) -> float:
  """Best F1 = 2 TP / (2 TP + FP + FN) over all thresholds score >= t."""
  labels, scores = _check(labels, scores)
  tp, fp = _pr_counts(labels, scores)
  fn = labels.sum() - tp
  return float(np.max(2 * tp / (2 * tp + fp + fn)))


def f1_max_threshold(labels, scores) -> tuple[float, float]:
  """(threshold, F1) of the best F1 when flagging score > threshold.

  The threshold lies halfway between the lowest flagged score and the next lower one, so that a new image
  scoring like a flagged one is flagged too, with a margin on both sides; when the best F1 flags every image,
  it lies just below the lowest score.
  """
  labels, scores = _check(labels, scores)
  tp, fp = _pr_counts(labels, scores)
  fn = labels.sum() - tp
  f1 = 2 * tp / (2 * tp + fp + fn)
  best = int(np.argmax(f1))
  distinct = np.unique(scores)[::-1]  # high to low, one per run of _pr_counts
  lowest_flagged = distinct[best]
  if best + 1 < len(distinct):
    threshold = (lowest_flagged + distinct[best + 1]) / 2.0
  else:
    threshold = np.nextafter(np.float32(lowest_flagged), np.float32(-np.inf))
  return float(threshold), float(f1[best])


def pixel_auroc(masks, maps) -> float:
  """AUROC of anomaly-map values as pixel scores against defect masks (N, H, W), every pixel of every image
  pooled, as MVTec-AD's pixel AUROC. Needs defect and defect-free pixels."""
  masks = np.asarray(masks)
  maps = np.asarray(maps)
  if masks.shape != maps.shape or masks.ndim != 3:
    raise ValueError(f"masks and maps must both be (N, H, W) of one shape, got {masks.shape} and {maps.shape}")
  return auroc(masks.reshape(-1).astype(np.int32), maps.reshape(-1))
