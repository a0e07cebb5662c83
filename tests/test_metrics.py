"""Metrics against hand-computed values and brute-force definitions."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from maml_iqr import metrics

# Labels with both classes, integer scores in a small range so ties are common.
_cases = st.integers(2, 30).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda l: 0 < sum(l) < len(l)),
    st.lists(st.integers(-20, 20), min_size=n, max_size=n)))


def test_auroc_perfect_inverted_tied():
  labels = [0, 0, 1, 1]
  assert metrics.auroc(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
  assert metrics.auroc(labels, [0.9, 0.8, 0.2, 0.1]) == 0.0
  assert metrics.auroc(labels, [0.3, 0.3, 0.3, 0.3]) == 0.5


def test_auroc_with_ties_hand_computed():
  # Positive-negative pairs: 0.5>0.1, 0.5=0.5 (1/2), 0.9>0.1, 0.9>0.5 -> 3.5 / 4.
  assert metrics.auroc([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9]) == pytest.approx(0.875)


def test_aupr_hand_computed():
  # Precision at each new positive: 1/1, 2/3, 3/5; each adds recall 1/3.
  ap = metrics.aupr([1, 0, 1, 0, 1], [0.9, 0.8, 0.7, 0.6, 0.5])
  assert ap == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)


def test_aupr_ties_are_one_threshold():
  # Threshold 0.8: P 1/2, R 1/2; threshold 0.5: P 2/3, R 1.
  assert metrics.aupr([1, 0, 1, 0], [0.8, 0.8, 0.5, 0.1]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)


def test_aupr_perfect():
  assert metrics.aupr([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8]) == 1.0


def test_f1_max_hand_computed():
  # Flagging all five: TP 3, FP 2, FN 0 -> 6 / 8, the best of 1/2, 2/5, 2/3, 4/7, 3/4.
  assert metrics.f1_max([1, 0, 1, 0, 1], [0.9, 0.8, 0.7, 0.6, 0.5]) == pytest.approx(0.75)
  assert metrics.f1_max([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0


@pytest.mark.parametrize("fn", [metrics.auroc, metrics.aupr, metrics.f1_max])
def test_one_class_raises(fn):
  with pytest.raises(ValueError, match="both classes"):
    fn([1, 1, 1], [0.1, 0.2, 0.3])
  with pytest.raises(ValueError, match="both classes"):
    fn([0, 0], [0.1, 0.2])


@pytest.mark.parametrize("fn", [metrics.auroc, metrics.aupr, metrics.f1_max])
def test_bad_input_raises(fn):
  with pytest.raises(ValueError, match="equal length"):
    fn([0, 1], [0.1, 0.2, 0.3])
  with pytest.raises(ValueError, match="0 \\(good\\) or 1"):
    fn([0, 2], [0.1, 0.2])
  with pytest.raises(ValueError, match="finite"):
    fn([0, 1], [0.1, np.nan])


@settings(max_examples=60, deadline=None)
@given(_cases)
def test_auroc_matches_pairwise_count(case):
  labels, scores = map(np.asarray, case)
  pos, neg = scores[labels == 1], scores[labels == 0]
  diff = pos[:, None] - neg[None, :]
  expected = ((diff > 0) + 0.5 * (diff == 0)).mean()
  assert metrics.auroc(labels, scores) == pytest.approx(expected)
  assert metrics.auroc(labels, -scores) == pytest.approx(1 - expected)


@settings(max_examples=60, deadline=None)
@given(_cases)
def test_invariant_to_monotone_transform(case):
  labels, scores = np.asarray(case[0]), np.asarray(case[1], np.float64)
  transformed = np.exp(scores / 10) * 3 + 1  # strictly increasing, keeps ties as ties
  for fn in (metrics.auroc, metrics.aupr, metrics.f1_max):
    assert fn(labels, transformed) == pytest.approx(fn(labels, scores))


@settings(max_examples=60, deadline=None)
@given(_cases)
def test_ranges_and_order_invariance(case):
  labels, scores = map(np.asarray, case)
  perm = np.random.default_rng(len(labels)).permutation(len(labels))
  for fn in (metrics.auroc, metrics.aupr, metrics.f1_max):
    value = fn(labels, scores)
    assert 0.0 <= value <= 1.0
    assert fn(labels[perm], scores[perm]) == pytest.approx(value)


def test_removal_curve_is_exact_and_removes_ties_together():
  """Hand-made case: a good and a defective image tie at 4.0 and leave together; the best recall within a
  good-lost budget reads the curve; a reversed score finds nothing within a small budget."""
  labels = np.array([1, 0, 1, 0, 0, 0])
  good_lost, recall = metrics.removal_curve(labels, np.array([5.0, 4.0, 4.0, 1.0, 0.0, -1.0]))
  np.testing.assert_allclose(good_lost, [0, 0, 0.25, 0.5, 0.75, 1.0])
  np.testing.assert_allclose(recall, [0, 0.5, 1.0, 1.0, 1.0, 1.0])
  assert metrics.recall_at_good_lost(labels, np.array([5.0, 4.0, 4.0, 1.0, 0.0, -1.0]), 0.2) == 0.5
  assert metrics.recall_at_good_lost(labels, np.array([5.0, 4.0, 4.0, 1.0, 0.0, -1.0]), 0.25) == 1.0
  assert metrics.recall_at_good_lost(labels, -np.arange(6.0), 0.05) == 0.5
  assert metrics.recall_at_good_lost(labels, np.arange(6.0), 0.5) == 0.0
