"""Items 2 and 6 of issue 15: a workdir belongs to the config that made it and to one run at a time, a finished
results.json is never lost, `~` is expanded, and the folder reader says what it skips.

Checked against the code before this change (commit ab84591), with the new names stubbed: another config on a
finished workdir ran (and started the backbone); a failing rerun replaced the finished results.json
(`status: data`, then `failed`); a second concurrent launch ran to the end with exit code 0; `~/...` failed
validation as a missing folder; the folder reader skipped a subfolder and links without a word.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from configs import folder as folder_config
from launch import sweep as sweep_lib
from maml_iqr import feature_cache, run, workdir
from maml_iqr.data.images import list_images
from maml_iqr.models import backbones
from maml_iqr.workdir import WorkdirConfigError
from tests.conftest import REPO


class Reached(Exception):
  """Raised by a patched step: the run got past every check before it."""


def _config(folders, **overrides):
  c = folder_config.get_config("quick")
  c.data.root = str(folders / "good")
  c.data.defective_root = str(folders / "bad")
  c.method = "differnet"
  c.noise.ratio = 0.5
  for k, v in overrides.items():
    section, name = k.split(".") if "." in k else (None, k)
    (c[section] if section else c)[name] = v
  return c


@pytest.fixture(scope="module")
def finished(folders, tmp_path_factory):
  """A finished differnet run's workdir (results.json status done)."""
  path = tmp_path_factory.mktemp("finished")
  run.train_and_evaluate(_config(folders), str(path))
  workdir.release()
  return path


def _copy(src, dst):
  shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
  return dst


def _stop_at_backbone(monkeypatch):
  def reached(*a, **k):
    raise Reached()
  monkeypatch.setattr(backbones, "get_backbone", reached)


def test_another_config_is_refused_before_any_work(folders, finished, tmp_path, monkeypatch):
  w = _copy(finished, tmp_path / "w")
  before = (w / "results.json").read_bytes()
  monkeypatch.setattr(backbones, "get_backbone", lambda *a, **k: pytest.fail("work started on another's workdir"))
  with pytest.raises(WorkdirConfigError, match=r"was made by another config \(method: 'differnet' -> 'one_shot'; "
                                               r"refine.k: 1.5 -> 0.5\); use a new --workdir, or pass --overwrite"):
    run.train_and_evaluate(_config(folders, method="one_shot", **{"refine.k": 0.5}), str(w))
  assert (w / "results.json").read_bytes() == before


def test_a_key_added_later_reads_as_its_old_behaviour_in_earlier_workdirs(folders, tmp_path):
  """A workdir recorded before refine.leave_one_out existed was made with its behaviour at False: a config at False
  may resume it, one at True is another config."""
  c = _config(folders)
  old = c.to_dict()
  del old["refine"]["leave_one_out"]
  (tmp_path / "run_config.json").write_text(json.dumps({"config": old}))
  workdir.check_config(str(tmp_path), c)
  c.refine.leave_one_out = True
  with pytest.raises(WorkdirConfigError, match=r"refine.leave_one_out: False -> True"):
    workdir.check_config(str(tmp_path), c)


def test_spelling_of_paths_and_the_cache_dir_do_not_change_the_config(folders, finished, tmp_path, monkeypatch):
  """A control (it passes on the old code too): the fingerprint is not stricter than the results."""
  w = _copy(finished, tmp_path / "w")
  monkeypatch.setenv("HOME", str(folders))
  _stop_at_backbone(monkeypatch)
  same = _config(folders, cache_dir=str(tmp_path / "elsewhere"), **{"data.root": "~/good/",
                                                                   "data.defective_root": f"{folders}//bad"})
  with pytest.raises(Reached):  # the claim accepted it
    run.train_and_evaluate(same, str(w))


def test_overwrite_clears_the_outputs_and_keeps_the_cache(folders, finished, tmp_path, monkeypatch):
  w = _copy(finished, tmp_path / "w")
  assert {"results.json", "report.md", "run_config.json", "test_scores.png", "cache"} <= set(os.listdir(w))
  _stop_at_backbone(monkeypatch)
  with pytest.raises(Reached):
    run.train_and_evaluate(_config(folders, method="one_shot"), str(w), overwrite=True)
  assert sorted(os.listdir(w)) == [".lock", "cache"]
  assert list((w / "cache").glob("features_*.npz"))


def test_a_failing_rerun_leaves_the_finished_results(folders, finished, tmp_path, monkeypatch, capsys):
  w = _copy(finished, tmp_path / "w")
  before = (w / "results.json").read_bytes()

  def diverge(*a, **k):
    raise FloatingPointError("flow training 5: the loss became non-finite")

  monkeypatch.setattr(feature_cache, "features", diverge)  # after the placeholder would have been written
  with pytest.raises(SystemExit) as e:
    run.main(_config(folders), str(w))
  assert e.value.code == 2
  assert "error: flow training 5: the loss became non-finite" in capsys.readouterr().err
  assert (w / "results.json").read_bytes() == before


def _launch(workdir_path, folders, log):
  cmd = [sys.executable, "-m", "launch.main", "--config=configs/folder.py:quick", f"--workdir={workdir_path}",
         f"--config.data.root={folders / 'good'}", f"--config.data.defective_root={folders / 'bad'}",
         "--config.method=differnet", "--config.noise.ratio=0.5"]
  return subprocess.Popen(cmd, cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT, text=True)


def test_a_second_concurrent_run_is_refused_and_the_lock_dies_with_its_process(folders, tmp_path):
  w = tmp_path / "w"
  first = _launch(w, folders, tmp_path / "first.txt")
  try:
    deadline = time.time() + 120
    while time.time() < deadline and first.poll() is None and not (w / "results.json").exists():
      time.sleep(0.1)
    assert first.poll() is None, "the first run ended before the second could start"
    second = _launch(w, folders, tmp_path / "second.txt")
    assert second.wait(timeout=120) == 2
    out = (tmp_path / "second.txt").read_text()
    assert f"error: --workdir={w} is in use by another run (pid {first.pid} on" in out, out
    assert "Traceback" not in out
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait()
  workdir.claim(str(w), _config(folders))  # the OS dropped the dead run's lock
  child = subprocess.run([sys.executable, "-c", f"from maml_iqr import workdir; workdir.claim({str(w)!r}, None)"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
  assert child.returncode != 0 and f"is in use by another run (pid {os.getpid()} on" in child.stderr, child.stderr
  workdir.release()


def _one_cell_sweep(folders, **overrides):
  import ml_collections  # noqa: PLC0415
  s = ml_collections.ConfigDict()
  s.experiment = os.path.join(REPO, "configs", "folder.py:quick")
  s.overrides = ml_collections.ConfigDict({"data": {"root": str(folders / "good"),
                                                    "defective_root": str(folders / "bad")}, **overrides})
  s.categories, s.noise, s.seeds, s.methods = ("-",), (0.5,), (0,), ("differnet",)
  return s


def test_sweep_skips_its_finished_cells_and_refuses_changed_ones(folders, finished, tmp_path, monkeypatch):
  root = tmp_path / "sweep"
  sweep = _one_cell_sweep(folders)
  (cell,) = sweep_lib.cells(sweep)
  folder = sweep_lib.cell_dir(str(root), cell)
  _copy(finished, folder)  # the cell's own config made it
  before = open(os.path.join(folder, "results.json"), "rb").read()
  calls = []
  monkeypatch.setattr(run, "train_and_evaluate", lambda c, f, overwrite=False: calls.append(overwrite) or
                      pytest.fail("a finished cell ran again"))
  assert sweep_lib.run_cells(sweep, str(root), [cell]) == []
  monkeypatch.undo()

  changed = _one_cell_sweep(folders, refine={"k": 0.5})
  failed = sweep_lib.run_cells(changed, str(root), [cell])
  assert len(failed) == 1 and "was made by another config (refine.k: 1.5 -> 0.5)" in failed[0], failed
  assert open(os.path.join(folder, "results.json"), "rb").read() == before

  monkeypatch.setattr(run, "train_and_evaluate", lambda c, f, overwrite=False: (calls.append(overwrite),
                                                                                 {"auroc": 0.5})[1])
  assert sweep_lib.run_cells(changed, str(root), [cell], overwrite=True) == [] and calls == [True]


def test_sweep_override_keys_the_experiment_lacks_are_refused(folders, tmp_path):
  sweep = _one_cell_sweep(folders, refine={"kk": 0.5})
  with pytest.raises(sweep_lib.SweepError, match="--sweep.overrides sets refine.kk, which the experiment config "
                                                 "does not have"):
    sweep_lib.cell_config(sweep, sweep_lib.cells(sweep)[0], str(tmp_path))


def test_tilde_is_expanded_in_the_workdir_and_every_path(folders, tmp_path, monkeypatch):
  home, cwd = tmp_path / "home", tmp_path / "cwd"
  home.mkdir()
  cwd.mkdir()
  os.symlink(folders, home / "data")
  monkeypatch.setenv("HOME", str(home))
  monkeypatch.chdir(cwd)
  _stop_at_backbone(monkeypatch)
  c = _config(folders, cache_dir="~/cache", **{"data.root": "~/data/good", "data.defective_root": "~/data/bad"})
  with pytest.raises(Reached):
    run.train_and_evaluate(c, "~/run")
  assert (home / "run" / ".lock").exists() and (home / "cache").is_dir()
  assert not os.path.exists(cwd / "~")


def test_folder_reader_says_what_it_skips(tmp_path, caplog):
  from PIL import Image  # noqa: PLC0415
  good, outside = tmp_path / "good", tmp_path / "outside"
  (good / "more").mkdir(parents=True)
  outside.mkdir()
  for path in (good / "a.png", good / "more" / "b.png", outside / "c.png"):
    Image.new("RGB", (8, 8)).save(path)
  os.symlink(outside, good / "linked_folder")
  os.symlink(outside / "c.png", good / "linked.png")  # a symlink to an image is read, wherever it points
  os.symlink(tmp_path / "gone.png", good / "broken.png")
  (good / "notes.txt").write_text("x")
  caplog.set_level("INFO")
  assert [os.path.basename(p) for p in list_images(str(good))] == ["a.png", "linked.png"]
  assert (f"WARNING: {good}: read 2 images; skipped 2 subfolders (not read: move their images up or point the "
          "config at them) (linked_folder, more); 1 broken symlinks or special files (broken.png); 1 files that "
          "are not images (notes.txt)") in caplog.text
