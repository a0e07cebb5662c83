"""Clean mode: a user's folder of "good" images, some of them defective, cleaned whole (no test split)."""
import csv
import json
import os

import numpy as np
import pytest

from configs import folder as folder_config
from maml_iqr import metrics, run
from tests.conftest import shared_data

N_DEFECTS = 6


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> str:
  """One feature cache for both methods: the same images and view settings, so the second run reads what the first
  computed (content-keyed; cache_dir cannot change a result)."""
  return str(tmp_path_factory.mktemp("clean_mode_cache"))


@pytest.mark.parametrize("method", ["default", "maml_iqr"])
def test_clean_mode_ranks_the_defects_mixed_into_a_real_folder_high(tmp_path, method, shared_cache, monkeypatch):
  """28 good hazelnut photos plus 6 with colour defects in one folder, no labels, with the folder config's
  default scorer (gaussian_iqr) and with the paper's (maml_iqr, cross-fitted): suspicious.csv must rank the
  6 high (AUROC of the cleaning scores against the hidden truth >= 0.85; random scores give 0.5, and reach
  0.85 with probability below 1 %), the run must say it has no test set and which stopping rule it used, and
  the saved detector and review sheet must be there."""
  data = shared_data("hazelnut_toy")
  folder = tmp_path / "line"
  folder.mkdir()
  for name in sorted(os.listdir(os.path.join(data, "train", "good"))):
    os.symlink(os.path.join(data, "train", "good", name), folder / f"good_{name}")
  for name in sorted(os.listdir(os.path.join(data, "test", "colour")))[:N_DEFECTS]:
    os.symlink(os.path.join(data, "test", "colour", name), folder / f"colour_{name}")
  c = folder_config.get_config()
  c.data.root = str(folder)
  assert c.method == "gaussian_iqr" and c.refine.folds == 1
  if method == "maml_iqr":
    c.method, c.refine.folds = "maml_iqr", 2
  c.flow.n_blocks, c.flow.hidden = 4, 128
  c.train.meta_epochs, c.train.sub_epochs, c.train.n_cached_views, c.train.n_views = 4, 4, 4, 4
  c.score.n_views, c.refine.max_iterations, c.maml.pretrain_epochs = 4, 1, 4
  c.cache_dir = shared_cache
  # The review sheet draws an anomaly map (a backward pass through the backbone per view) for each removed image
  # and REVIEW_BORDERLINE kept ones: 12 of them took half of this test's time; 3 still make a sheet with kept images.
  monkeypatch.setattr(run, "REVIEW_BORDERLINE", 3)
  run.main(c, str(tmp_path / "w"))  # what launch.main runs, its last line included
  res = json.loads((tmp_path / "w" / "results.json").read_text())

  assert res["status"] == "done" and res["auroc"] is None and res["contamination"]["n_test"] == 0
  assert res["stop_rule"].startswith("no labelled validation")
  assert res["model"]["threshold"]["rule"] == "kept_train_quantile"
  saved = json.loads((tmp_path / "w" / "results.json").read_text())
  with open(tmp_path / "w" / "suspicious.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 28 + N_DEFECTS
  truth = np.array([r["id"].split("/")[-1].startswith("colour_") for r in rows], int)
  scores = np.array([float(r["score"]) for r in rows])
  print("clean-mode timings", saved["timings"], "AUROC of the cleaning scores", metrics.auroc(truth, scores))
  assert metrics.auroc(truth, scores) >= 0.85, (metrics.auroc(truth, scores), rows[:10])
  assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
  assert all(r["iteration_removed"] == "" for r in rows if r["removed"] == "0")
  assert (tmp_path / "w" / "review.png").exists() or list((tmp_path / "w").glob("review_*.png"))
  assert (tmp_path / "w" / "model" / "detector.json").exists()
  assert saved["removal"]["n_removed"] == sum(r["removed"] == "1" for r in rows)
