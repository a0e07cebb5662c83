"""patch_iqr at its recommended setting (README: `refine.folds=1, k=1, val_tolerance_se=100`, chosen by
configs/sweeps/patch_stop.py on validation data) at every noise level of the ablation, 3 seeds (issue 13).

Nothing is chosen from this sweep: it reports the setting's test AUROC, removal recall and good images lost
beside the ablation's arms (same splits, same final detector). Its Magnetic Tile 20 % seeds 1 and 2 are the
cells of results/patch_stop_mtd run again, through the patch distance cache that patch_iqr's cells now share
(maml_iqr/patches.py): they check that the cache changes no result.

  python -m launch.sweep --sweep=configs/sweeps/patch_recommended.py:mtd --workdir=results/patch_recommended_mtd \
      --sweep.cache_dir=results/cache --parallel=2
"""
from configs.sweeps import ablation


def get_config(arg: str = "mtd"):
  s = ablation.get_config(f"{arg}/patch_iqr")
  s.noise = (0.2, 0.3, 0.5)
  s.seeds = (0, 1, 2)
  s.arms = {"patch_iqr_no_stop": {"method": "patch_iqr",
                                  "refine": {"folds": 1, "k": 1.0, "val_tolerance_se": 100.0}}}
  return s
