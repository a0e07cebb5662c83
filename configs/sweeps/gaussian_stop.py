"""gaussian_iqr keeping the set whose Gaussian validated best (`refine.val_tolerance_se=0`), at the CPU table
settings: the cells where that rule keeps a different set than the tables' (tolerance 100).

`benchmarks/stop_rule.py --methods=gaussian_iqr` (its per-method rule, stated before the replay) picked tolerance 0
for gaussian_iqr, and on Magnetic Tile's three clean cells, where it returns to the uncleaned set, the final
detectors are DifferNet's (validation AUROC 0.982 against 0.942 at 100: adopted). These cells report what the rule
does elsewhere; run after the decision, they do not change it. Each keeps a shorter prefix of the same trajectory:

  mtd    Magnetic Tile 20 % seeds 0 and 2, 50 % seeds 1 and 2 (20 % seed 1 returns to the uncleaned set: DifferNet's
         cell; 50 % seed 0 keeps every iteration: the tables' cell)
  elpv   elpv mono 0 % seed 2, 20 % seeds 0 and 1, 50 % seed 0 (0 % seeds 0 and 1 return to the uncleaned set; the
         other cells keep every iteration)

  python -m launch.sweep --sweep=configs/sweeps/gaussian_stop.py --workdir=results/gaussian_stop_mtd \
      --sweep.noise='(0.2,)' --sweep.seeds='(0,2)' --sweep.cache_dir=results/cache
  (and --sweep.noise='(0.5,)' --sweep.seeds='(1,2)'; `:elpv` into results/gaussian_stop_elpv with
  --sweep.categories='("mono",)' and the elpv cells above)

`:mtd/whole` runs the folder config's form (`refine.folds=1`) at the old tolerance 100, to set beside
`configs/sweeps/mtd_table.py:recommended/gaussian_iqr_whole` (at 0 since this decision).
"""
import ml_collections

from configs.sweeps import elpv_table, mtd_table


def get_config(arg: str = "mtd"):
  """arg: mtd | elpv, or mtd/whole: the folder config's whole-set Gaussian (refine.folds=1) at the old tolerance
  100, beside `configs/sweeps/mtd_table.py:recommended/gaussian_iqr_whole` (now at 0)."""
  name, _, form = (arg or "mtd").partition("/")
  s = {"mtd": mtd_table, "elpv": elpv_table}[name].get_config()
  arms = {"": {"gaussian_iqr_best_val": {"method": "gaussian_iqr", "refine": {"val_tolerance_se": 0.0}}},
          "whole": {"gaussian_iqr_whole_tol100": {"method": "gaussian_iqr",
                                                  "refine": {"folds": 1, "val_tolerance_se": 100.0}}}}[form]
  s.arms = ml_collections.ConfigDict(arms)
  return s
