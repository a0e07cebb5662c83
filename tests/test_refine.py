import ml_collections
import numpy as np
import pytest

from maml_iqr.refine import RefineState, iqr_threshold, refine_step, select_removals


def _cfg(**kw):
  c = ml_collections.ConfigDict(dict(k=1.5, auto_k_quantile=0.0, max_remove_per_iteration=1.0, max_remove_total=1.0, min_kept=1,
                                     patience=1, max_iterations=5, val_tolerance_se=0.0))
  c.update(kw)
  return c


def test_iqr_threshold_known_value():
  # the seed's quick check: [1..9, 100] -> Q1 3.25, Q3 7.75, IQR 4.5, T = 7.75 + 1.5 * 4.5 = 14.5
  assert iqr_threshold(np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 100.0]), 1.5) == pytest.approx(14.5)


def test_removes_only_above_threshold_and_respects_guards():
  scores = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 100, 200, 300.0])
  kept = np.ones(12, bool)
  t, removed = select_removals(scores, kept, 1.5, 12, 1.0, 1.0, 1)
  assert list(removed) == [9, 10, 11]
  _, removed = select_removals(scores, kept, 1.5, 12, 2 / 12, 1.0, 1)   # at most 2 this iteration
  assert list(removed) == [10, 11]
  _, removed = select_removals(scores, kept, 1.5, 12, 1.0, 1.0, 11)     # never below 11 kept
  assert list(removed) == [11]
  kept[:2] = False                                                       # 2 of 12 already gone
  _, removed = select_removals(scores, kept, 1.5, 12, 1.0, 3 / 12, 1)   # total cap 3 -> 1 more
  assert list(removed) == [11]


def test_controller_history_and_stopping():
  n = 20
  injected = np.zeros(n, bool)
  injected[-2:] = True
  ids = tuple(f"i{j}" for j in range(n))
  scores = np.r_[np.linspace(0, 1, n - 3), 1.1, 50.0, 60.0]  # one good outlier-ish, two injected far out
  state = RefineState(np.ones(n, bool))
  val_labels = np.array([0, 0, 1, 1])
  state = refine_step(state, scores, val_labels, np.array([0.1, 0.2, 0.3, 0.4]), injected, ids, _cfg())
  h = state.history[0]
  assert (h["n_removed"], h["removed_injected"], h["removed_good"], h["injected_left"]) == (2, 2, 0, 0)
  assert h["removed_ids"] == ["i18", "i19"] and h["val_auroc"] == 1.0 and not state.done
  # second iteration: worse validation AUROC -> stalled; the final set is the one whose own flows validated
  # best, iteration 0's starting set: the set after its removal was validated by iteration 1, and worse
  scores[:3] = 100.0  # this worse-validated model would remove three more images
  state = refine_step(state, scores, val_labels, np.array([0.4, 0.3, 0.2, 0.1]), injected, ids, _cfg())
  assert state.stop_reason == "stalled" and state.history[1]["n_removed"] > 0
  assert state.best_iteration == 0 and state.final_kept().all()


def test_final_set_keeps_the_removals_of_a_last_iteration_that_validated_best():
  n, ids = 20, tuple(f"i{j}" for j in range(20))
  injected = np.zeros(n, bool)
  injected[-4:] = True
  val_labels = np.array([0, 0, 1, 1])
  state = RefineState(np.ones(n, bool))
  scores = np.r_[np.linspace(0, 1, n - 4), 30.0, 40.0, 0.5, 0.6]  # two of the four injected stand out
  state = refine_step(state, scores, val_labels, np.array([0.1, 0.3, 0.2, 0.4]), injected, ids, _cfg())
  scores = np.r_[np.linspace(0, 1, n - 4), 0.0, 0.0, 50.0, 60.0]  # a better flow finds the other two
  state = refine_step(state, scores, val_labels, np.array([0.1, 0.2, 0.3, 0.4]), injected, ids,
                      _cfg(max_iterations=2))
  assert state.stop_reason == "max_iterations" and state.best_iteration == 1
  assert (state.final_kept() == ~injected).all()
  # the same run, but the second flow validates worse: the set the first flow was fitted on (all images)
  state2 = refine_step(RefineState(np.ones(n, bool)), np.r_[np.linspace(0, 1, n - 4), 30.0, 40.0, 0.5, 0.6],
                       val_labels, np.array([0.1, 0.2, 0.3, 0.4]), injected, ids, _cfg())
  state2 = refine_step(state2, scores, val_labels, np.array([0.1, 0.3, 0.2, 0.4]), injected, ids,
                       _cfg(max_iterations=2, patience=2))
  assert state2.stop_reason == "max_iterations" and state2.best_iteration == 0 and state2.final_kept().all()


def test_stops_when_nothing_removed():
  state = refine_step(RefineState(np.ones(8, bool)), np.arange(8.0), np.array([0, 1]), np.array([0.0, 1.0]),
                      np.zeros(8, bool), tuple("abcdefgh"), _cfg())
  assert state.stop_reason == "nothing_removed" and state.final_kept().all()


def test_automatic_threshold_from_validation_good_scores():
  scores = np.r_[np.linspace(0, 1, 18), 5.0, 6.0]
  val_labels = np.r_[np.zeros(100, int), [1, 1]]
  val_scores = np.r_[np.linspace(0, 2.0, 100), 9.0, 9.5]  # 99 % of good validation images score <= ~1.98
  state = refine_step(RefineState(np.ones(20, bool)), scores, val_labels, val_scores, np.zeros(20, bool),
                      tuple(map(str, range(20))), _cfg(auto_k_quantile=0.99))
  h = state.history[0]
  assert h["threshold"] == pytest.approx(np.quantile(np.linspace(0, 2.0, 100), 0.99))
  assert h["n_removed"] == 2 and h["k"] > 1.5  # the data chose a larger k than 1.5


def test_removals_never_leave_a_fold_fit_set_below_the_minimum():
  """Two folds; the fit set of fold 0 is fold 1's kept images. High scores all in fold 1: removal stops when
  fold 1 would fall below min_fit, and takes the highest-scoring ones first."""
  fold_of = np.r_[np.zeros(6, int), np.ones(6, int)]
  scores = np.r_[np.zeros(6), 10.0, 11.0, 12.0, 13.0, 0.0, 0.0]
  kept = np.ones(12, bool)
  _, removed = select_removals(scores, kept, 0.1, 12, 1.0, 1.0, 1, threshold=1.0)
  assert list(removed) == [6, 7, 8, 9]
  _, removed = select_removals(scores, kept, 0.1, 12, 1.0, 1.0, 1, threshold=1.0, fold_of=fold_of, min_fit=4)
  assert list(removed) == [8, 9]  # fold 1 keeps 4 images: the two highest scores go


def test_ranking_reports_last_scores_and_undone_removals():
  """Iteration 0 removes i9; iteration 1's flows (fitted without i9) validate best and remove i8; iteration 2's
  validate worse: the final set is iteration 1's starting set, so i9 stays removed (at iteration 0) and i8's
  removal is undone. Each image carries its last score."""
  from maml_iqr.refine import ranking
  ids, labels = tuple(f"i{j}" for j in range(10)), np.array([0, 0, 1, 1])
  injected = np.zeros(10, bool)
  state = RefineState(np.ones(10, bool))
  for scores, val in ((np.r_[np.linspace(0, 1, 9), 50.0], [0.1, 0.3, 0.2, 0.4]),
                      (np.r_[np.linspace(0, 1, 8), 40.0, 0.0], [0.1, 0.2, 0.3, 0.4]),
                      (np.r_[np.linspace(0, 1, 7), 30.0, 0.0, 0.0], [0.4, 0.3, 0.2, 0.1])):
    state = refine_step(state, scores, labels, np.array(val), injected, ids, _cfg())
  assert state.stop_reason == "stalled" and state.best_iteration == 1
  r = ranking(state.history, state.final_kept(), state.kept)
  assert list(np.flatnonzero(r["removed"])) == [9] and r["removed_at"][9] == 0
  assert (r["removed_at"][:9] == -1).all()
  assert r["score"][9] == 50.0 and r["score"][8] == 40.0 and r["score"][7] == 30.0 and r["score"][0] == 0.0


def test_one_standard_error_rule_keeps_the_more_cleaned_set_unless_validation_drops_beyond_its_noise():
  """200 + 200 validation images: the standard error of an AUROC near 0.8 is about 0.022. Iteration 1 removes two
  more images and validates 0.01 lower: within one standard error, so its set is kept (the rule with tolerance 0
  returns to iteration 0's). A drop of 0.1 is beyond it: stalled, iteration 1's set."""
  from maml_iqr import metrics
  rng = np.random.default_rng(0)
  val_labels = np.r_[np.zeros(200, int), np.ones(200, int)]


  def run(tolerance, second_val):
    n, ids = 30, tuple(f"i{j}" for j in range(30))
    injected = np.zeros(n, bool)
    injected[-4:] = True
    state = RefineState(np.ones(n, bool))
    for scores, val in ((np.r_[np.linspace(0, 1, n - 4), 0.5, 0.6, 40.0, 50.0], first),
                        (np.r_[np.linspace(0, 1, n - 4), 30.0, 40.0, 0.0, 0.0], second_val),
                        (np.r_[np.linspace(0, 1, n - 4), 0.0, 0.0, 0.0, 0.0], second_val)):
      state = refine_step(state, scores, val_labels, val, injected, ids,
                          _cfg(val_tolerance_se=tolerance, max_iterations=3))
      if state.done:
        break
    return state, injected

  first = np.r_[rng.normal(0, 1, 200), rng.normal(np.sqrt(2) * 0.8416, 1, 200)]  # AUROC about 0.8
  a1 = metrics.auroc(val_labels, first)
  se = metrics.auroc_standard_error(a1, 200, 200)
  assert 0.015 < se < 0.03
  slightly = first.copy()
  slightly[200:] -= 0.05  # a little worse
  assert a1 - se < metrics.auroc(val_labels, slightly) < a1
  state, injected = run(1.0, slightly)
  assert state.best_iteration == 2 and (state.final_kept() == ~injected).all()
  state, _ = run(0.0, slightly)
  assert state.stop_reason == "stalled" and state.best_iteration == 0 and state.final_kept().all()
  much = first.copy()
  much[200:] -= 1.0
  assert metrics.auroc(val_labels, much) < a1 - 2 * se
  state, _ = run(1.0, much)
  assert state.stop_reason == "stalled" and state.best_iteration == 0 and state.final_kept().all()


def test_a_fall_from_a_perfect_validation_auroc_is_measured_against_a_nonzero_standard_error():
  """Hanley-McNeil's standard error of 1.0 is 0: a fall from a perfect validation AUROC to 0.995 (20 + 20 images)
  must hold at one standard error (that of one misordered pair, about 0.008) and not at none."""
  from maml_iqr import metrics
  from maml_iqr.refine import holds
  assert metrics.auroc_standard_error(1.0, 20, 20) == 0.0
  assert holds(0.995, 1.0, 20, 20, 1.0)
  assert not holds(0.995, 1.0, 20, 20, 0.0)
  assert not holds(0.98, 1.0, 20, 20, 1.0) and holds(0.98, 1.0, 20, 20, 100.0)
  assert holds(0.79, 0.8, 20, 20, 1.0) == (0.79 >= 0.8 - metrics.auroc_standard_error(0.8, 20, 20))


def test_auroc_standard_error_matches_the_spread_of_resampled_validation_sets():
  """Hanley-McNeil's formula against the measured spread of AUROC over 2000 independent validation draws."""
  from maml_iqr import metrics
  rng = np.random.default_rng(1)
  labels = np.r_[np.zeros(40, int), np.ones(60, int)]
  aucs = [metrics.auroc(labels, np.r_[rng.normal(0, 1, 40), rng.normal(1.2, 1, 60)]) for _ in range(2000)]
  se = metrics.auroc_standard_error(float(np.mean(aucs)), 60, 40)
  assert abs(se - np.std(aucs)) < 0.1 * np.std(aucs)
