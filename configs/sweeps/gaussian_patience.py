"""How long gaussian_iqr's whole-set form (the folder config's, `refine.folds=1`) looks past a validation fall
before it keeps the set its Gaussian validated best (`refine.val_tolerance_se=0`).

At patience 1, tolerance 0 stops at the first fall, however small: on Magnetic Tile 50 % seed 0 validation went
0.869, 0.886, 0.885, 0.888, 0.888 and a fall of 0.001 stopped it after 42 of 157 injected tiles, where tolerance 100
went on to 67 (final detectors 0.769 against 0.809 test AUROC).

The rule, stated 2026-12-06 before any of these cells ran:
  candidates  patience 1, 2, 3 at tolerance 0 (max_iterations stays 5)
  replay      `benchmarks/stop_rule.py --tolerances=0 --patiences=1,2,3` on trajectories recorded at tolerance 100
              (`:DATA/trajectories`, which records every iteration; its 1-epoch final detector is a by-product,
              not a detector), Magnetic Tile, elpv mono and hazelnut_toy, seeds 0-2, noise 0, 20, 50 %
  judge       the Magnetic Tile and elpv mono cells whose kept set at patience 2 differs from patience 1's are run
              to final detectors at the table settings (`:DATA/p1`, `:DATA/p2`); patience 2 is adopted if the
              final detectors' mean validation AUROC over those cells is higher than patience 1's (a tie keeps 1);
              only then is 3 judged against 2 the same way. Test AUROC is reported, never used.

  python -m launch.sweep --sweep=configs/sweeps/gaussian_patience.py:mtd/trajectories \
      --workdir=results/gaussian_patience_traj --sweep.cache_dir=results/cache
"""
import ml_collections

from configs.sweeps import elpv_table, hazelnut_table, mtd_table

MODES = ("trajectories", "p1", "p2", "p3")
TABLES = {"mtd": mtd_table, "elpv": elpv_table, "hazelnut": hazelnut_table}


def table(name: str, trajectories: bool) -> ml_collections.ConfigDict:
  """The CPU table sweep of DATA `name` (elpv: mono), with `trajectories` a 1-epoch final detector: the refinement
  trajectory is all that is read (gaussian_iqr's does not depend on the final detector)."""
  s = TABLES[name].get_config()
  if name == "elpv":
    s.categories = ("mono",)
  if trajectories:
    s.overrides.train = {"meta_epochs": 1, "sub_epochs": 1}
    s.note = ("A trajectory sweep: read the refinement (results.json's `refinement`, benchmarks/stop_rule.py). "
              "Its final detectors train for 1 epoch only to finish the runs, so the AUROC below is not a result.")
  return s


def get_config(arg: str = "mtd/trajectories"):
  """arg: DATA/MODE, DATA in mtd | elpv | hazelnut, MODE in MODES."""
  name, _, mode = arg.partition("/")
  if name not in TABLES or mode not in MODES:
    raise ValueError(f"configs/sweeps/gaussian_patience.py:{arg}: expected DATA/MODE with DATA in {sorted(TABLES)} "
                     f"and MODE in {MODES}")
  s = table(name, mode == "trajectories")
  if mode == "trajectories":  # every iteration holds, so every one is recorded
    arm, refine = "gaussian_iqr_whole_trajectory", {"folds": 1, "val_tolerance_se": 100.0}
  else:
    arm, refine = f"gaussian_iqr_whole_{mode}", {"folds": 1, "val_tolerance_se": 0.0, "patience": int(mode[1:])}
  s.arms = ml_collections.ConfigDict({arm: {"method": "gaussian_iqr", "refine": refine}})
  return s
