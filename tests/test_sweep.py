"""The table sweep on a tiny synthetic folder: cells, resumption and the paper-format tables."""
import glob
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from launch.sweep import cells, done_by_this_sweep, load_experiment
from tests.conftest import REPO, write_synthetic_folders


def test_sweep_runs_cells_skips_finished_and_writes_tables(tmp_path):
  write_synthetic_folders(tmp_path, n_good=16, n_bad=8, size=32)
  sweep = tmp_path / "sweep.py"
  sweep.write_text(f'''
import ml_collections
def get_config():
  s = ml_collections.ConfigDict()
  s.experiment = "configs/folder.py:quick"
  s.overrides = ml_collections.ConfigDict({{"data": {{"root": "{tmp_path / 'good'}",
                                           "defective_root": "{tmp_path / 'bad'}"}}, "maml": {{"meta_epochs": 1, "task_size": 4}},
                                           "refine": {{"folds": 2}}}})
  s.categories = ("-",)
  s.noise = (0.0, 0.5)
  s.seeds = (0,)
  s.methods = ("differnet", "maml_iqr")
  s.variants = ml_collections.ConfigDict({{"k=1": {{"refine": {{"k": 1.0}}}}}})
  return s
''')
  cmd = [sys.executable, "-m", "launch.sweep", f"--sweep={sweep}", f"--workdir={tmp_path / 'out'}"]
  first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert first.returncode == 0, first.stdout + first.stderr
  assert "4 cells, 0 already done" in first.stdout
  done = [p for p in (tmp_path / "out").rglob("results.json")]
  assert len(done) == 4 and all(json.loads(p.read_text())["status"] == "done" for p in done)
  assert all(json.loads(p.read_text())["tag"] == "k=1" for p in done)
  md = (tmp_path / "out" / "tables.md").read_text()
  assert "| **mean** |" in md and "maml_iqr [k=1]" in md
  realised = json.loads(next(p for p in done if "noise_0.5" in str(p)).read_text())["contamination"]["realised"]
  assert f"| 0 % | 50 % ({100 * realised:.1f} % realised) |" in md  # the column names what the noise realised
  csv = (tmp_path / "out" / "results.csv").read_text().splitlines()
  assert len(csv) == 5 and csv[0].startswith("dataset,category,method,tag,noise")
  assert (tmp_path / "out" / "auroc_vs_noise.png").exists()
  again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0 and "4 cells, 4 already done" in again.stdout
  assert "[sweep] cell" not in again.stdout  # nothing re-run
  # cells made by another config are not counted as done (they are rerun): here, other MAML settings
  spec = importlib.util.spec_from_file_location("sweep_config", sweep)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  same, other = module.get_config(), module.get_config()
  other.overrides.maml.meta_epochs = 2
  assert all(done_by_this_sweep(same, str(tmp_path / "out"), c) for c in cells(same))
  assert not any(done_by_this_sweep(other, str(tmp_path / "out"), c) for c in cells(other))


def test_every_sweep_config_loads_and_names_real_experiments():
  not_sweeps = {"__init__.py", "cpu.py"}  # cpu.py holds the shared CPU overrides, not a sweep
  paths = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "sweeps", "*.py"))
                 if os.path.basename(p) not in not_sweeps)
  assert len(paths) >= 8
  for path in paths:
    spec = importlib.util.spec_from_file_location("sweep_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sweep = module.get_config()
    assert cells(sweep), path
    load_experiment(os.path.join(REPO, sweep.experiment))  # the experiment config it names exists


def test_table_sweeps_run_the_cleaners_at_their_recommended_settings_on_request():
  """`:recommended` swaps the tables' shared-settings methods for the recommended arms, with the same data, noise,
  seeds and final detector; a misspelt arm is refused."""
  from configs.sweeps import cpu, mtd_table
  from launch.sweep import cell_config, cell_dir
  plain, rec = mtd_table.get_config(), mtd_table.get_config("recommended/patch_iqr")
  todo = cells(rec)
  assert {c["arm"] for c in todo} == {"patch_iqr"} and len(todo) == len(plain.noise) * len(plain.seeds)
  c = cell_config(rec, todo[0], "/r")
  base = cell_config(plain, dict(todo[0], method="gaussian_iqr", arm=""), "/r")
  assert c.method == "patch_iqr" and (c.refine.folds, c.refine.k, c.refine.val_tolerance_se) == (1, 1.0, 100.0)
  assert base.refine.folds == 2 and c.train.to_dict() == base.train.to_dict() and c.flow.to_dict() == base.flow.to_dict()
  assert c.tag == "" and cell_dir("/r", todo[0]).startswith("/r/magnetic_tile/patch_iqr/")
  both = cells(mtd_table.get_config("recommended"))
  assert {x["arm"] for x in both} == set(cpu.RECOMMENDED_ARMS)
  whole = cell_config(mtd_table.get_config("recommended"), [x for x in both if x["arm"] == "gaussian_iqr_whole"][0], "/r")
  assert whole.method == "gaussian_iqr" and whole.refine.folds == 1 and whole.tag == "gaussian_iqr_whole"
  assert whole.refine.val_tolerance_se == 0.0  # keeps the set its Gaussian validated best (README)
  from configs import folder  # the recommended arm is the folder config's cleaning, patience included
  mine = folder.get_config().refine
  assert (whole.refine.folds, whole.refine.patience) == (mine.folds, mine.patience) == (1, 3)
  with pytest.raises(ValueError, match="recommended"):
    mtd_table.get_config("recommended/patch")


def test_arms_set_method_and_settings_together():
  """An ablation's arms: one cell per arm, each with its own method and overrides, in its own folder, and the
  tag names the arm where the method alone would not (tables tell `maml_iqr` from `maml_iqr [objective_none]`)."""
  from configs.sweeps import ablation
  from launch.sweep import cell_config, cell_dir
  sweep = ablation.get_config("elpv")
  todo = cells(sweep)
  assert len(todo) == len(sweep.arms) * len(sweep.noise) * len(sweep.seeds)
  by_arm = {c["arm"]: cell_config(sweep, c, "/tmp/root") for c in todo if c["noise"] == 0.2 and c["seed"] == 1}
  assert by_arm["objective_none"].method == "maml_iqr" and by_arm["objective_none"].maml.objective == "none"
  assert by_arm["maml_iqr"].maml.objective == "maml" and by_arm["maml_iqr"].tag == ""
  assert by_arm["objective_none"].tag == "objective_none"
  assert by_arm["meta_init"].method == "differnet" and by_arm["meta_init"].train.init == "meta"
  budget = by_arm["maml_iqr"].maml.pretrain_epochs + by_arm["maml_iqr"].maml.meta_epochs
  assert by_arm["iterative"].method == "iterative" and by_arm["iterative"].refine.score_epochs == budget
  assert all(c.noise.ratio == 0.2 and c.seed == 1 and c.refine.max_iterations == 3 for c in by_arm.values())
  assert len({cell_dir("/r", c) for c in todo}) == len(todo)
  assert cell_dir("/r", [c for c in todo if c["arm"] == "objective_none"][0]).startswith("/r/mono/objective_none/")
  only = ablation.get_config("elpv/gaussian_iqr+differnet")  # arms added to a grid run alone
  assert set(only.arms) == {"gaussian_iqr", "differnet"}
  gauss = cell_config(only, [c for c in cells(only) if c["arm"] == "gaussian_iqr"][0], "/r")
  assert gauss.method == "gaussian_iqr" and gauss.refine.folds == 1 and gauss.refine.max_iterations == 3
  with pytest.raises(ValueError, match="no arm"):
    ablation.get_config("elpv/gaussian")
