"""Into how many folds gaussian_iqr splits the kept set: an image scored by a Gaussian fitted on the other folds.

The folder config fits one Gaussian on the whole kept set (`refine.folds=1`), which found more injected images than
two folds on Magnetic Tile and elpv (README, "A Gaussian finds the defects better than the flows"). On hazelnut_toy
(31-35 images) it removes nothing: the injected photos rank highest but a Gaussian fitted on them stays inside the
fence, where two folds remove 0.74 of them. Many folds sit between the two: each image is scored by a Gaussian
fitted on nearly all the others, never on itself.

The rule, stated 2026-12-06 before any of these cells ran:
  candidates  refine.folds 5 and 10, beside 1 (the folder config) and 2 (the tables' gaussian_iqr rows)
  replay      trajectories recorded at tolerance 100 (`:DATA/F`, its 1-epoch final detector a by-product),
              Magnetic Tile, elpv mono and hazelnut_toy, seeds 0-2, noise 0, 20, 50 %, replayed at the folder
              config's stop (tolerance 0, patience 3) by `benchmarks/stop_rule.py --tolerances=0 --patiences=3`
  adopt       the smaller of 5 and 10 whose mean removal recall over the 18 noisy runs is at least 0.03 above
              folds=1's while its mean share of good images lost over all 27 runs is at most 0.01 above; else
              keep 1. Training-set labels only; no test image is read.

  python -m launch.sweep --sweep=configs/sweeps/gaussian_folds.py:mtd/10 \
      --workdir=results/gaussian_folds_traj/mtd_10 --sweep.cache_dir=results/cache
"""
import ml_collections

from configs.sweeps import gaussian_patience


def get_config(arg: str = "mtd/10"):
  """arg: DATA/FOLDS, DATA in mtd | elpv | hazelnut."""
  name, _, folds = arg.partition("/")
  if name not in gaussian_patience.TABLES or not folds.isdigit() or int(folds) < 1:
    raise ValueError(f"configs/sweeps/gaussian_folds.py:{arg}: expected DATA/FOLDS with DATA in "
                     f"{sorted(gaussian_patience.TABLES)} and FOLDS a positive integer")
  s = gaussian_patience.table(name, trajectories=True)
  s.arms = ml_collections.ConfigDict({f"gaussian_iqr_folds{folds}_trajectory": {
      "method": "gaussian_iqr", "refine": {"folds": int(folds), "val_tolerance_se": 100.0}}})
  return s
