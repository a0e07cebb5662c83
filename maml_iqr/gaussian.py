"""A Gaussian with Ledoit-Wolf shrinkage, scored by Mahalanobis distance: the cleaning scorer of `gaussian_iqr`.

On the pooled backbone features it separates injected defective images from good ones far better than the
flows fitted to the same noisy set (`benchmarks/cleaning_scorers.py`): a flow is flexible enough to learn a
cluster of defects as part of what is normal, a single Gaussian is not. Shrinkage keeps the covariance
invertible with fewer images than feature dimensions.
"""
from __future__ import annotations

import numpy as np


def fit(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean, precision) of rows (n, D), n >= 2: the inverse of the Ledoit-Wolf (2004) shrunk covariance
  (1 - s) S + s (tr S / D) I, with s estimated from the rows."""
  x = np.asarray(rows, np.float64)
  n, dim = x.shape
  if n < 2:
    raise ValueError(f"a Gaussian needs at least 2 rows to fit, got {n}")
  centred = x - x.mean(0)
  cov = centred.T @ centred / n
  scale = np.trace(cov) / dim
  spread = ((cov - scale * np.eye(dim)) ** 2).sum() / dim
  # the mean over rows of ||x x^T - S||_F^2 / D, without forming the n outer products
  noise = (((centred ** 2).sum(1) ** 2).sum() / n - (cov ** 2).sum()) / (dim * n)
  shrink = 1.0 if spread <= 0 else min(noise, spread) / spread
  shrunk = shrink * scale * np.eye(dim) + (1 - shrink) * cov
  if scale <= 0:  # identical rows: every distance is 0 but at the mean
    shrunk = np.eye(dim)
  return x.mean(0), np.linalg.inv(shrunk)


def mahalanobis(mean: np.ndarray, precision: np.ndarray, rows: np.ndarray) -> np.ndarray:
  """Squared Mahalanobis distance of each row (..., D) from the Gaussian."""
  d = np.asarray(rows, np.float64) - mean
  return np.einsum("...d,de,...e->...", d, precision, d)
