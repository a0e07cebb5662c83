"""The table sweep on a tiny synthetic folder: cells, resumption and the paper-format tables."""
import glob
import importlib.util
import json
import os
import subprocess
import sys

from launch.sweep import cells, load_experiment
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
                                           "defective_root": "{tmp_path / 'bad'}"}}, "maml": {{"meta_epochs": 1}}}})
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
  assert "| **mean** |" in md and "maml_iqr [k=1]" in md and "| 0 % | 50 % |" in md
  csv = (tmp_path / "out" / "results.csv").read_text().splitlines()
  assert len(csv) == 5 and csv[0].startswith("dataset,category,method,tag,noise")
  assert (tmp_path / "out" / "auroc_vs_noise.png").exists()
  again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0 and "4 cells, 4 already done" in again.stdout
  assert "[sweep] cell" not in again.stdout  # nothing re-run


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
