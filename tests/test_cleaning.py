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
