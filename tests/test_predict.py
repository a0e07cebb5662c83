"""launch.predict on the model a run saved: it reproduces the run's own test scores exactly, writes scores.csv
with decisions at the saved threshold, anomaly-map images with --maps, and says what is wrong with bad input.

Checked against broken code: with predict scoring at other views (1 instead of the stored 3), or with the flow
scoring in batches of 8 rows instead of the run's 64 (score 13 of 18 then differs by 1 ulp), the
exact-reproduction test fails; with decisions taken at another threshold than the saved one, the decision test
fails.
"""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import folder as folder_config
from launch import predict
from maml_iqr import detector, feature_cache, metrics, run, saved_model
from maml_iqr.data import readers
from maml_iqr.data.images import DataError
from maml_iqr.data.contamination import contaminate
from tests.conftest import REPO


@pytest.fixture(scope="module")
def trained(folders, tmp_path_factory):
  """A tiny differnet run on the synthetic folders: (workdir, results, test image paths, the run's own unrounded
  test scores, the saved detector's validation AUROC). The unrounded scores are recomputed as the run computes
  them: the images' evaluation features from the run's feature cache, scored by `detector.score` with the final
  parameters."""
  workdir = str(tmp_path_factory.mktemp("run"))
  c = folder_config.get_config("quick")
  c.data.root, c.data.defective_root = str(folders / "good"), str(folders / "bad")
  c.method = "differnet"
  c.score.n_views = 3  # odd on purpose: a view count the defaults never use
  c.cache_dir = os.path.join(workdir, "cache")
  results = run.train_and_evaluate(c, workdir)
  dataset = readers.read(c.data, 224)
  split = contaminate(dataset, c.noise.ratio, c.noise.mode, c.noise.overlap, c.seed, c.noise.on_shortage,
                      c.noise.val_fraction)
  det = saved_model.load(os.path.join(workdir, "model"))
  feats = feature_cache.features(c, det.backbone, det.backbone_params, split.test.images, dataset.name)["eval"]
  exact = detector.score(det.flow, det.params, feats, det.score_kind)
  assert [round(float(s), 6) for s in exact] == results["test_scores"]  # the recomputation is the run's
  val_feats = feature_cache.features(c, det.backbone, det.backbone_params, split.val.images, dataset.name)["eval"]
  val_auroc = metrics.auroc(split.val.labels, detector.score(det.flow, det.params, val_feats, det.score_kind))
  root = os.path.commonpath([c.data.root, c.data.defective_root])
  return workdir, results, [os.path.join(root, i) for i in split.test.ids], exact, val_auroc


def test_validation_auroc_is_the_saved_detectors_on_the_validation_images(trained):
  """results.json's `validation_auroc` (what choices between runs are made on) is the final detector's AUROC on
  the labelled validation images, not the test images' nor a refinement scorer's."""
  _, results, _, _, val_auroc = trained
  assert results["validation_auroc"] == val_auroc
  assert results["validation_auroc"] != results["auroc"]  # the two sets differ here: the check can tell them apart


@pytest.mark.parametrize("batch_images", [3, 1])
def test_predict_reproduces_the_runs_test_scores_exactly(trained, tmp_path, batch_images):
  workdir, results, paths, exact, _ = trained
  out = predict.predict(os.path.join(workdir, "model"), paths, str(tmp_path), batch_images=batch_images,
                        log=lambda _: None)
  np.testing.assert_array_equal(out["scores"], exact)  # bit for bit, not to a tolerance
  assert [round(float(s), 6) for s in out["scores"]] == results["test_scores"]
  assert len(paths) >= 10


def test_scores_csv_has_decisions_at_the_saved_threshold(trained, tmp_path):
  workdir, results, paths, _, _ = trained
  model = os.path.join(workdir, "model")
  threshold = saved_model.read_spec(model)["threshold"]
  assert threshold == results["model"]["threshold"]
  predict.predict(model, paths, str(tmp_path), log=lambda _: None)
  with open(tmp_path / "scores.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["path"] for r in rows] == paths
  scores = np.array([float(r["score"]) for r in rows])
  decisions = np.array([int(r["decision"]) for r in rows])
  np.testing.assert_array_equal(decisions, (scores > threshold["value"]).astype(int))
  assert 0 < decisions.sum() < len(decisions)  # the threshold separates something: the check above is not vacuous
  assert [round(float(np.float32(s)), 6) for s in scores] == results["test_scores"]  # 9 digits keep float32


def test_parts_csv_scores_each_part_by_its_highest_image(trained, tmp_path):
  """--object_pattern names the part in each file name: parts.csv ranks the parts by their highest image score and
  calls a part defective when any image is above the saved threshold. A model trained without part names writes
  no parts.csv by default, and a file the pattern finds nothing in stops before any scoring."""
  workdir, _, paths, _, _ = trained
  model = os.path.join(workdir, "model")
  assert saved_model.read_spec(model)["object_pattern"] == ""
  predict.predict(model, paths, str(tmp_path / "plain"), log=lambda _: None)
  assert not (tmp_path / "plain" / "parts.csv").exists()
  out = predict.predict(model, paths, str(tmp_path / "parts"), log=lambda _: None, object_pattern=r"^(\d)")
  part = [os.path.basename(p)[0] for p in out["paths"]]  # the synthetic files are 00.png, 01.png, ...: parts 0, 1
  threshold = saved_model.read_spec(model)["threshold"]["value"]
  top = {n: max(float(s) for q, s in zip(part, out["scores"]) if q == n) for n in set(part)}
  expected = sorted(((s, n) for n, s in top.items()), reverse=True)
  with open(tmp_path / "parts" / "parts.csv") as f:
    rows = list(csv.DictReader(f))
  assert [(r["object"], float(r["score"]), int(r["images"]), int(r["decision"])) for r in rows] == [
      (n, float(f"{s:.9g}"), part.count(n), int(s > threshold)) for s, n in expected]
  assert len(rows) > 1 and {r["decision"] for r in rows} == {"0", "1"}  # not vacuous: both decisions occur
  with pytest.raises(DataError, match="--object_pattern='\\^\\(x\\)' finds no object"):
    predict.predict(model, paths, str(tmp_path / "bad"), log=lambda _: None, object_pattern="^(x)")


def test_folder_input_and_maps(trained, tmp_path, folders):
  workdir = trained[0]
  out = predict.predict(os.path.join(workdir, "model"), [str(folders / "bad"), str(folders / "good" / "00.png")],
                        str(tmp_path), with_maps=True, batch_images=8, log=lambda _: None)
  assert len(out["paths"]) == 11 and out["paths"][-1].endswith(os.path.join("good", "00.png"))
  names = sorted(os.listdir(tmp_path / "maps"))
  assert len(names) == 11 and names[0] == "00000_00.png" and names[-1] == "00010_00.png"
  assert out["timing"]["images_per_s"] > 0


def test_command_line_reports_a_missing_model_and_missing_images(tmp_path, trained):
  cmd = [sys.executable, "-m", "launch.predict", f"--out={tmp_path / 'o'}"]
  bad_model = subprocess.run(cmd + [f"--model={tmp_path / 'nowhere'}", f"--images={tmp_path}"], cwd=REPO,
                             capture_output=True, text=True, timeout=300)
  assert bad_model.returncode != 0 and "model folder not found" in bad_model.stderr
  bad_images = subprocess.run(cmd + [f"--model={os.path.join(trained[0], 'model')}",
                                     f"--images={tmp_path / 'missing.png'}"],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
  assert bad_images.returncode != 0 and "missing.png: no such file or folder" in bad_images.stderr
