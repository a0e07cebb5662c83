"""End-to-end runs on a tiny synthetic folder (mechanics only) and on the real hazelnut photos."""
import json
import signal
import subprocess
import sys
import time

import chex
import pytest

from configs import folder as folder_config
from configs import mvtec as mvtec_config
from maml_iqr import cleaning, detector, run
from maml_iqr.config_check import ConfigError
from tests.conftest import DATA, REPO, resumable_config, shared_data


def _config(folders, method, **overrides):
  c = folder_config.get_config("quick")
  c.data.root = str(folders / "good")
  c.data.defective_root = str(folders / "bad")
  c.method = method
  c.refine.folds = 2  # cross-fitted flows (configs/folder.py's 1 is gaussian_iqr's form)
  c.noise.ratio = 0.5
  c.refine.k = 0.5
  c.refine.min_kept = 4
  c.maml.meta_epochs = 1
  for k, v in overrides.items():
    section, name = k.split(".") if "." in k else (None, k)
    (c[section] if section else c)[name] = v
  return c


@pytest.mark.parametrize("method", ["differnet", "one_shot", "iterative", "maml_iqr"])
def test_each_method_writes_the_output_contract(folders, tmp_path, method, synthetic_feature_cache):
  res = run.train_and_evaluate(_config(folders, method, cache_dir=synthetic_feature_cache), str(tmp_path))
  on_disk = json.loads((tmp_path / "results.json").read_text())
  assert on_disk["status"] == "done" and on_disk["method"] == method
  for key in ("dataset", "category", "noise", "contamination", "seed", "backbone", "auroc", "refinement",
              "timings", "removal"):
    assert key in on_disk, key
  assert on_disk["contamination"]["n_injected"] == res["contamination"]["n_injected"] > 0
  assert 0.0 <= on_disk["auroc"] <= 1.0
  assert (tmp_path / "report.md").exists() and (tmp_path / "test_scores.png").exists()
  if method == "differnet":
    assert on_disk["refinement"] == []
  else:
    h = on_disk["refinement"][0]
    assert h["removed_injected"] + h["removed_good"] == h["n_removed"]
    assert (tmp_path / "refine_scores.png").exists()
  if method == "one_shot":
    assert len(on_disk["refinement"]) == 1
  if method == "maml_iqr":  # the inner loop's diagnostics reach results.json and report.md
    assert set(h["meta"]) >= {"support_drop", "query_drop", "grad_cosine"} and -1 <= h["meta"]["grad_cosine"] < 1
    assert "Does the inner loop adapt?" in (tmp_path / "report.md").read_text()


def test_diagnostics_off_changes_no_result(session_folders, resumable_reference, tmp_path):
  """`maml.diagnostics=False` (the default experiment's) skips the inner loop's diagnostics and nothing else: the
  same removals, validation AUROCs and test scores as the shared reference run, which has them on."""
  reference, ref_workdir = resumable_reference
  c = resumable_config(session_folders, cache_dir=str(ref_workdir / "cache"), **{"maml.diagnostics": False})
  res = run.train_and_evaluate(c, str(tmp_path))
  assert all("grad_cosine" in h["meta"] for h in reference["refinement"])
  assert not any("grad_cosine" in h["meta"] for h in res["refinement"])
  for key in ("n_removed", "removed_injected", "val_auroc"):
    assert [h[key] for h in res["refinement"]] == [h[key] for h in reference["refinement"]], key
  assert res["test_scores"] == reference["test_scores"] and res["auroc"] == reference["auroc"]


def test_no_recompile_across_refinement_iterations(folders, tmp_path, monkeypatch, synthetic_feature_cache):
  """Removing images changes indices only: a 4-iteration run traces the flow loss as often as a 1-iteration run."""
  original = detector.loss_fn

  def fresh_caches():
    for cached in (detector.make_train_chunk, detector.make_train_step, detector.make_scorer, cleaning._meta_step,
                   cleaning._adapt, cleaning._diagnostics):
      cached.cache_clear()
    chex.clear_trace_counter()

  counts = []
  monkeypatch.setattr(detector, "loss_fn", lambda *a: (counts.append(1), original(*a))[1])
  fresh_caches()
  one = _config(folders, "maml_iqr", cache_dir=synthetic_feature_cache, **{"refine.max_iterations": 1})
  run.train_and_evaluate(one, str(tmp_path / "one"))
  traces_one_iteration = len(counts)

  fresh_caches()
  monkeypatch.setattr(detector, "loss_fn", chex.assert_max_traces(original, n=traces_one_iteration))
  many = _config(folders, "maml_iqr", cache_dir=synthetic_feature_cache,
                 **{"refine.max_iterations": 4, "refine.patience": 4, "refine.k": 0.1, "refine.max_remove_total": 0.9})
  res = run.train_and_evaluate(many, str(tmp_path / "many"))
  assert len(res["refinement"]) >= 3, "the test needs several iterations to prove anything"
  assert len({h["n_kept_before"] for h in res["refinement"]}) >= 3  # the kept set really shrank
  chex.clear_trace_counter()


def test_bad_config_fails_before_work(folders, tmp_path):
  c = _config(folders, "maml_iqr")
  c.refine.k = -1.0
  with pytest.raises(ConfigError, match="refine.k"):
    run.train_and_evaluate(c, str(tmp_path))
  c = _config(folders, "nonsense")
  with pytest.raises(ConfigError, match="method"):
    run.train_and_evaluate(c, str(tmp_path))


def _launch(workdir, log, *extra):
  cmd = [sys.executable, "-m", "launch.main", "--config=configs/folder.py:quick", f"--workdir={workdir}", *extra]
  return subprocess.Popen(cmd, cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT)


# Without refine.warm_start (the default): the checkpoints carry no flow parameters, only the controller's state.
SIGKILL_RUN = {"noise.ratio": 0.5, "refine.k": 0.1, "refine.max_iterations": 3, "refine.patience": 3,
               "refine.min_kept": 4, "maml.meta_epochs": 1, "method": "maml_iqr", "refine.folds": 2}


def test_sigkill_then_resume_gives_the_same_results(folders, tmp_path, synthetic_feature_cache):
  args = [f"--config.data.root={folders / 'good'}", f"--config.data.defective_root={folders / 'bad'}",
          f"--config.cache_dir={synthetic_feature_cache}"] + [f"--config.{k}={v}" for k, v in SIGKILL_RUN.items()]
  killed = _launch(tmp_path / "run", tmp_path / "killed.txt", *args)
  ckpt = tmp_path / "run" / "checkpoints" / "refine"
  deadline = time.time() + 600
  while time.time() < deadline and killed.poll() is None:
    if ckpt.exists() and any(p.name.isdigit() for p in ckpt.iterdir()):
      break
    time.sleep(0.05)
  assert killed.poll() is None, "the run ended before it could be killed"
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  partial = json.loads((tmp_path / "run" / "results.json").read_text())
  assert partial["status"] == "data"
  resumed = _launch(tmp_path / "run", tmp_path / "resumed.txt", *args)
  # Meanwhile the uninterrupted reference, in this process: it runs on the XLA flags of the entry points
  # (conftest.py), and its jitted steps are this module's earlier runs' (the same shapes), so it takes seconds.
  same = {k: v for k, v in SIGKILL_RUN.items() if k != "method"}
  a = run.train_and_evaluate(_config(folders, "maml_iqr", cache_dir=synthetic_feature_cache, **same),
                             str(tmp_path / "ref"))
  assert resumed.wait(timeout=600) == 0, (tmp_path / "resumed.txt").read_text()[-3000:]
  assert "resumed refinement" in (tmp_path / "resumed.txt").read_text()
  b = json.loads((tmp_path / "run" / "results.json").read_text())
  for key in ("auroc", "aupr", "removal", "test_scores", "injected_ids"):
    assert a[key] == b[key], key
  assert [h["removed_ids"] for h in a["refinement"]] == [h["removed_ids"] for h in b["refinement"]]


def test_hazelnut_toy_differnet_end_to_end(tmp_path):
  shared_data("hazelnut_toy")
  c = mvtec_config.get_config("quick")
  c.data.root, c.data.category, c.backbone.name = DATA, "hazelnut_toy", "efficientnet_lite0"
  c.method, c.noise.val_fraction = "differnet", 0.0
  # test_clean_mode.py's flow and schedule on the same photos (so their compiled programs are shared through the
  # compilation cache); DifferNet's 8 blocks of 256 scored 0.98 here, these 0.99.
  c.flow.n_blocks, c.flow.hidden = 4, 128
  c.train.meta_epochs, c.train.sub_epochs, c.train.n_cached_views, c.train.n_views = 4, 4, 4, 4
  c.score.n_views = 4
  c.score.pixel_auroc_images = 2  # a map costs a backward pass per view: 2 images (a colour one, a good one)
  res = run.train_and_evaluate(c, str(tmp_path))
  assert res["contamination"]["n_good_train"] == 28 and res["contamination"]["n_test"] == 23
  assert res["auroc"] > 0.9  # measured 0.99: real features separate the colour defects
  assert res["pixel_auroc"]["n_images"] == 2  # the maps were made for the images asked for


def test_suspicious_csv_names_each_images_object_and_survives_a_comma_in_a_file_name(tmp_path, monkeypatch):
  """suspicious.csv is read by spreadsheets and csv readers: a file name with a comma stays one field, and where
  the folder names its parts (data.object_pattern) each row says which part it shows and parts.csv ranks the parts
  by their highest image score; without, no object column and no parts.csv."""
  import csv  # noqa: PLC0415
  import types  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415
  ids = ("a,1.png", "b.png", "c.png")
  monkeypatch.setattr(run.refine, "ranking", lambda history, kept, last: {
      "score": np.array([0.5, 2.0, 1.0]), "removed": np.array([False, True, False]), "removed_at": np.array([0, 1, 0])})
  split = types.SimpleNamespace(train=types.SimpleNamespace(ids=ids))
  state = types.SimpleNamespace(history=[], kept=None)
  for objects in (None, ["part,7", "part8", "part8"]):
    run.write_review(str(tmp_path), split, state, None, None, objects)
    with open(tmp_path / "suspicious.csv", newline="") as f:
      rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == ["b.png", "c.png", "a,1.png"] and rows[0]["iteration_removed"] == "1"
    assert [r.get("object") for r in rows] == ([None] * 3 if objects is None else ["part8", "part8", "part,7"])
    assert (tmp_path / "parts.csv").exists() == (objects is not None)
  # parts.csv: each part by its highest image score, with its images and how many were removed
  with open(tmp_path / "parts.csv", newline="") as f:
    parts = [(r["rank"], r["object"], float(r["score"]), r["images"], r["removed"]) for r in csv.DictReader(f)]
  assert parts == [("1", "part8", 2.0, "2", "1"), ("2", "part,7", 0.5, "1", "0")]
