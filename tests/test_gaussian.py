"""The Ledoit-Wolf Gaussian that gaussian_iqr cleans with: right where the answer is known, usable where a plain
covariance is not."""
import numpy as np
import pytest

from maml_iqr import gaussian


def test_many_rows_recover_the_true_distance():
  """With 20,000 rows of a known Gaussian the shrinkage vanishes: distances match the analytic ones."""
  rng = np.random.default_rng(0)
  std = np.array([1.0, 2.0, 3.0, 4.0])
  mean, precision = gaussian.fit(5.0 + rng.normal(size=(20_000, 4)) * std)
  probes = 5.0 + np.array([[1.0, 0, 0, 0], [0, 0, 0, 4.0], [1.0, 2.0, 3.0, 4.0]])
  np.testing.assert_allclose(gaussian.mahalanobis(mean, precision, probes), [1.0, 1.0, 4.0], rtol=0.05)


def test_fewer_rows_than_dimensions_still_rank_an_outlier_first():
  """30 rows in 100 dimensions: the plain covariance is singular, the shrunk one is not, and a row shifted
  along a direction the rows barely vary in scores far above every row it was fitted on."""
  rng = np.random.default_rng(1)
  rows = rng.normal(size=(30, 100)) * np.r_[np.full(10, 5.0), np.full(90, 0.1)]
  assert np.linalg.matrix_rank(np.cov(rows.T)) < 100
  mean, precision = gaussian.fit(rows)
  assert np.all(np.isfinite(precision)) and np.all(np.linalg.eigvalsh(precision) > 0)
  outlier = mean + np.r_[np.zeros(10), np.full(90, 1.0)]  # 10 of the rows' spreads along each of those 90
  inliers = gaussian.mahalanobis(mean, precision, rows)
  assert gaussian.mahalanobis(mean, precision, outlier) > 3 * inliers.max()


def test_distances_keep_leading_shape_and_refuse_one_row():
  mean, precision = gaussian.fit(np.random.default_rng(2).normal(size=(50, 3)))
  assert gaussian.mahalanobis(mean, precision, np.zeros((7, 5, 3))).shape == (7, 5)
  with pytest.raises(ValueError, match="at least 2 rows"):
    gaussian.fit(np.ones((1, 3)))


def test_leave_one_out_equals_refitting_without_each_row():
  """The closed form against n refits, each on the other rows at the whole set's shrinkage and scale."""
  x = np.random.default_rng(3).normal(size=(25, 40)) * np.linspace(0.5, 3.0, 40)
  _, _, shrink, scale = gaussian._shrunk(x)
  brute = []
  for i in range(len(x)):
    others = np.delete(x, i, 0)
    centred = others - others.mean(0)
    cov = shrink * scale * np.eye(40) + (1 - shrink) * centred.T @ centred / len(others)
    brute.append(gaussian.mahalanobis(others.mean(0), np.linalg.inv(cov), x[i]))
  np.testing.assert_allclose(gaussian.leave_one_out(x), brute, rtol=1e-9)


def test_a_row_scored_by_the_others_passes_the_fence_its_own_fit_hides():
  """30 rows in 200 dimensions, 2 of them shifted far along the rows' small directions: fitted on all 30, every
  in-sample distance is squeezed under the bound n - 1, and the IQR fence (Q3 + 1.5 IQR) passes no row though the
  2 shifted rows rank first; scored by the others, both pass it."""
  rng = np.random.default_rng(4)
  x = rng.normal(size=(30, 200)) * np.r_[np.full(20, 3.0), np.full(180, 0.3)]
  x[:2, 20:] += 1.5
  def past_fence(s):
    q1, q3 = np.percentile(s, [25, 75])
    return np.flatnonzero(s > q3 + 1.5 * (q3 - q1))
  in_sample = gaussian.mahalanobis(*gaussian.fit(x), x)
  assert set(np.argsort(in_sample)[-2:]) == {0, 1} and len(past_fence(in_sample)) == 0
  assert {0, 1} <= set(past_fence(gaussian.leave_one_out(x)))


def test_leave_groups_out_equals_refitting_without_each_group():
  """Each row's distance from the Gaussian refitted on the other groups' rows (shrinkage and scale held at the whole
  set's, as leave_one_out holds them), groups of 1 to 4 rows; one-row groups give leave_one_out exactly."""
  rng = np.random.default_rng(0)
  n, dim = 40, 60
  x = rng.normal(size=(n, dim)) * rng.uniform(0.5, 2, dim)
  groups = np.array([f"g{i // 3}" for i in range(n)])
  groups[-1], groups[:4] = "alone", "four"
  _, _, shrink, scale = gaussian._shrunk(x)
  expected = np.empty(n)
  for g in set(groups):
    others = x[groups != g]
    centred = others - others.mean(0)
    cov = shrink * scale * np.eye(dim) + (1 - shrink) * centred.T @ centred / len(others)
    for i in np.flatnonzero(groups == g):
      d = x[i] - others.mean(0)
      expected[i] = d @ np.linalg.solve(cov, d)
  np.testing.assert_allclose(gaussian.leave_groups_out(x, groups), expected, rtol=1e-9)
  np.testing.assert_allclose(gaussian.leave_groups_out(x, np.arange(n)), gaussian.leave_one_out(x), rtol=1e-9)
  with pytest.raises(ValueError, match="group 'most' holds 39 of 40 rows"):
    gaussian.leave_groups_out(x, ["most"] * 39 + ["one"])
  with pytest.raises(ValueError, match="3 group names for 40 rows"):
    gaussian.leave_groups_out(x, ["a", "b", "c"])
