"""Cross-fitting: no flow scores an image it was fitted on, also through warm starts across iterations."""
import numpy as np
import pytest

from configs import folder as folder_config
from maml_iqr import cleaning

N_TRAIN, N_VAL = 40, 6


@pytest.mark.parametrize("method", ["iterative", "maml_iqr"])
@pytest.mark.parametrize("warm_start", [False, True])
def test_fold_fits_never_see_the_images_they_score(monkeypatch, method, warm_start):
  c = folder_config.get_config("quick")
  c.method, c.refine.folds, c.refine.warm_start = method, 3, warm_start
  seen_by_fit = []  # per fit: every training image its params have been fitted on, warm starts included

  def spy_fit(ctx, mask, start, stage):
    seen = set(np.flatnonzero(mask)) | (start if start is not None else set())
    seen_by_fit.append(seen)
    return cleaning.Fit(carry=seen, scorers=[seen], info={})

  scored = []

  def spy_score(scorers, feats):
    ids = set(np.asarray(feats)[:, 0, 0].astype(int).tolist())  # feature rows carry their image's index
    if feats.shape[0] != N_VAL:
      scored.append((scorers[0], ids))
    return np.asarray(feats)[:, 0, 0].astype(np.float32) % 7

  monkeypatch.setitem(cleaning.FITTERS, method, spy_fit)
  monkeypatch.setattr(cleaning, "mean_score", spy_score)
  train_eval = np.broadcast_to(np.arange(N_TRAIN, dtype=np.float32)[:, None, None], (N_TRAIN, 2, 3))
  ctx = cleaning.Context(c, None, {"train_eval": train_eval, "val": np.full((N_VAL, 2, 3), -1.0, np.float32)}, {})
  fold_of = cleaning.fold_assignment(c, N_TRAIN)
  kept, carries = np.ones(N_TRAIN, bool), [None] * 3
  for iteration in range(3):
    carries, train_scores, _, _ = cleaning.score_iteration(ctx, kept, fold_of, carries, iteration)
    kept[np.flatnonzero(kept)[:5]] = False  # some removals between iterations
  assert len(scored) == 9 and all(ids for _, ids in scored)
  for seen, ids in scored:
    assert not seen & ids, f"a fit scored images it was fitted on: {sorted(seen & ids)}"
  # the control: a fit over the whole kept set (one fold) does see what it scores, so the check can fail
  c.refine.folds = 1
  scored.clear()
  cleaning.score_iteration(ctx, np.ones(N_TRAIN, bool), fold_of * 0, [None], 0)
  assert scored and all(seen & ids for seen, ids in scored)


@pytest.mark.parametrize("objects", [False, True])
def test_gaussian_leave_one_out_leaves_out_the_whole_object_where_objects_are_known(objects):
  """Five captures of one part share a defect (a shift along the small directions) among 35 images of 9 other
  parts: scored each by the others, the part's other captures vouch for it and none is removed; scored by the
  other objects' Gaussian (ctx.groups, as a folder with data.object_pattern gives it), all five are."""
  from maml_iqr import refine  # noqa: PLC0415
  c = folder_config.get_config("quick")
  c.refine.leave_one_out = True
  rng = np.random.default_rng(0)
  rows = rng.normal(size=(40, 200)) * np.r_[np.full(20, 3.0), np.full(180, 0.3)]
  shift = rng.normal(size=180)
  rows[:5, 20:] += 12 * shift / np.linalg.norm(shift)
  groups = np.array(["part"] * 5 + [f"other{i // 4}" for i in range(35)]) if objects else None
  train_eval = np.repeat(rows[:, None, :], 2, axis=1).astype(np.float32)
  ctx = cleaning.Context(c, None, {"train_eval": train_eval, "val": train_eval[:4]}, {}, groups=groups)
  kept = np.ones(40, bool)
  _, scores, _, _ = cleaning.score_iteration(ctx, kept, np.zeros(40, int), [None], 0)
  _, removed = refine.select_removals(scores, kept, c.refine.k, 40, 0.3, 0.6, 10)
  part = set(range(5))
  assert (part <= set(removed.tolist())) if objects else not part & set(removed.tolist())


@pytest.mark.parametrize("leave_one_out", [False, True])
def test_gaussian_iqr_removes_what_its_own_fit_hides_only_when_scoring_each_image_by_the_others(leave_one_out):
  """gaussian_iqr without folds on 30 images in 200 dimensions, 2 shifted far along the small directions: fitted on
  all 30, their own distances stay inside the IQR fence and nothing is removed (hazelnut_toy's case); with
  refine.leave_one_out the iteration's scores are each image's distance from the others and both are removed."""
  from maml_iqr import refine  # noqa: PLC0415
  c = folder_config.get_config("quick")
  c.refine.leave_one_out = leave_one_out
  rng = np.random.default_rng(4)
  rows = rng.normal(size=(30, 200)) * np.r_[np.full(20, 3.0), np.full(180, 0.3)]
  rows[:2, 20:] += 1.5
  train_eval = np.repeat(rows[:, None, :], 2, axis=1).astype(np.float32)
  ctx = cleaning.Context(c, None, {"train_eval": train_eval, "val": train_eval[:4]}, {})
  kept = np.ones(30, bool)
  _, scores, _, _ = cleaning.score_iteration(ctx, kept, np.zeros(30, int), [None], 0)
  _, removed = refine.select_removals(scores, kept, c.refine.k, 30, 0.3, 0.6, 10)
  assert ({0, 1} <= set(removed.tolist())) if leave_one_out else len(removed) == 0
