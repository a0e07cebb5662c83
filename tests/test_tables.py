"""Paper-format tables from finished runs: the realised contamination in the headers and the removal a cleaning
ranking allows within the good-image budget, read from each run's suspicious.csv."""
import json

import numpy as np

from maml_iqr import metrics, tables


def _run(folder, method, ranked_ids, injected, n_train, removal, seed=0):
  """A finished run as `launch.main` leaves it: results.json and suspicious.csv (highest score first)."""
  folder.mkdir(parents=True)
  n_injected = len(injected)
  result = {"status": "done", "dataset": "toy", "category": "c", "method": method, "tag": "", "seed": seed,
            "noise": {"ratio": 0.2}, "auroc": 0.9, "aupr": 0.9, "f1_max": 0.9, "injected_ids": injected,
            "contamination": {"n_injected": n_injected, "n_train": n_train, "realised": n_injected / n_train},
            "removal": removal, "refinement": [{"iteration": 0}] if method != "differnet" else [],
            "timings": {"total_s": 1.0}}
  (folder / "results.json").write_text(json.dumps(result))
  lines = ["rank,id,score,removed,iteration_removed"]
  lines += [f"{k + 1},{i},{len(ranked_ids) - k:.6f},0," for k, i in enumerate(ranked_ids)]
  (folder / "suspicious.csv").write_text("\n".join(lines) + "\n")


def test_ranking_recall_within_budget_and_realised_contamination(tmp_path):
  good = [f"g{i}" for i in range(40)]
  injected = [f"d{i}" for i in range(10)]
  # ranking: 6 injected, then 2 good (5 % of 40), then 2 injected, then 1 good, then the rest
  ranked = injected[:6] + good[:2] + injected[6:8] + good[2:3] + injected[8:] + good[3:]
  removal = {"recall": 0.6, "precision": 1.0, "good_lost": 0.0}
  _run(tmp_path / "maml_iqr", "maml_iqr", ranked, injected, 50, removal)
  _run(tmp_path / "differnet", "differnet", ranked, injected, 50, {"recall": 0.0, "precision": None, "good_lost": 0})
  runs = tables.collect(str(tmp_path))
  by = {r["method"]: r for r in runs}
  assert by["differnet"]["curve"] is None  # no refinement: nothing ranked
  curve = by["maml_iqr"]["curve"]
  # within 2 of 40 good lost (5 %): 8 of 10 injected; within 0: 6; within 3 (7.5 %): all 10
  assert metrics.recall_within(curve["good_lost"], curve["recall"], 0.05) == 0.8
  assert metrics.recall_within(curve["good_lost"], curve["recall"], 0.0) == 0.6
  assert metrics.recall_within(curve["good_lost"], curve["recall"], 0.075) == 1.0
  np.testing.assert_allclose(curve["good_lost"][-1], 1.0)
  md = tables.tables(runs)
  assert "20 % (20.0 % realised)" in md["comparison"]
  assert "| maml_iqr | 0.800 |" in md["within_budget"]
  assert "| differnet | - |" in md["within_budget"]
  assert "| maml_iqr | 0.60 / 0.000 |" in md["removal"]
  written = tables.write(str(tmp_path), str(tmp_path))
  assert "removal_curve.png" in written and (tmp_path / "removal_curve.png").stat().st_size > 0


def test_trajectory_sweeps_head_their_tables_with_the_warning_that_their_auroc_is_no_result(tmp_path):
  """The trajectory sweeps train 1-epoch final detectors only to finish their runs: their tables.md says so first;
  a sweep of real detectors writes no such line."""
  from configs.sweeps import gaussian_folds, gaussian_loo, gaussian_patience  # noqa: PLC0415
  trajectory = [gaussian_patience.get_config("mtd/trajectories"), gaussian_folds.get_config("elpv/5"),
                gaussian_loo.get_config("hazelnut/trajectories")]
  assert all("not a result" in s.note for s in trajectory)
  assert "note" not in gaussian_patience.get_config("mtd/p3")
  _run(tmp_path / "run", "gaussian_iqr", ["g0", "d0"], ["d0"], 2, {"recall": 1.0, "precision": 1.0, "good_lost": 0})
  tables.write(str(tmp_path), str(tmp_path), trajectory[0].note)
  assert (tmp_path / "tables.md").read_text().startswith(f"> {trajectory[0].note}\n\n### ")
  tables.write(str(tmp_path), str(tmp_path))
  assert (tmp_path / "tables.md").read_text().startswith("### ")


def _unpaired_runs(tmp_path):
  """maml_iqr at seeds 0 and 1, gaussian_iqr at seed 0 only."""
  removal = {"recall": 1.0, "precision": 1.0, "good_lost": 0.0}
  for seed in (0, 1):
    _run(tmp_path / f"maml_iqr{seed}", "maml_iqr", ["d0", "g0"], ["d0"], 2, removal, seed=seed)
  _run(tmp_path / "gaussian_iqr0", "gaussian_iqr", ["d0", "g0"], ["d0"], 2, removal, seed=0)


def test_a_method_missing_runs_that_others_have_is_marked_unpaired(tmp_path):
  """maml_iqr ran seeds 0 and 1, gaussian_iqr seed 0 only: gaussian_iqr's comparison and mean cells say
  '(1 of 2 runs)', maml_iqr's do not, so that an unpaired mean is never read as a paired comparison."""
  _unpaired_runs(tmp_path)
  md = tables.tables(tables.collect(str(tmp_path)))
  for name in ("comparison", "removal", "within_budget"):
    rows = {line.split(" | ")[0]: line for line in md[name].splitlines() if line.startswith("| ")}
    assert "(1 of 2 runs)" in rows["| gaussian_iqr"] and "runs)" not in rows["| maml_iqr"]
  assert "| **mean** | 0.900 (1 of 2 runs) |" in md["auroc_gaussian_iqr"]
  assert "| **mean** | 0.900 |" in md["auroc_maml_iqr"]


def test_the_plots_mark_the_unpaired_method_too(tmp_path, monkeypatch):
  """The same runs as above: auroc_vs_noise.png labels gaussian_iqr's point '1 of 2 runs' and removal_curve.png's
  legend calls it unpaired; maml_iqr is marked in neither."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  _unpaired_runs(tmp_path)
  figures, subplots = [], plt.subplots
  monkeypatch.setattr(plt, "subplots", lambda *a, **k: figures.append(subplots(*a, **k)) or figures[-1])
  tables.write(str(tmp_path), str(tmp_path))
  (_, noise_axes), (_, curve_axes) = figures
  assert [t.get_text() for t in noise_axes[0].texts] == ["1 of 2 runs"]
  legend = [t.get_text() for t in curve_axes[0][0].get_legend().get_texts()]
  assert sorted(legend) == ["gaussian_iqr (1 run; unpaired)", "maml_iqr (2 runs)"]
