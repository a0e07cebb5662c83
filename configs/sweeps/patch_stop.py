"""Which stopping rule for patch_iqr? (issue 13) Stated before any cell of this sweep ran.

In the ablation (configs/sweeps/ablation.py) patch_iqr stops by the shared rule: the validation AUROC of its
scorer, here the patch memory of the kept images, within one standard error of the best so far. On Magnetic Tile
at 20 % that rule undid most of the cleaning (seed 1: back to the uncleaned set after removing 34 injected and 13
good tiles; seed 2: only the first iteration's removal kept), while the memory's validation AUROC is not what the
rule was chosen on (README, "Patch-level scores find more").

Arms, on the ablation's settings:
  patch_iqr           the ablation's arm: the one-standard-error rule on the patch memory's validation AUROC
  patch_iqr_no_stop   `refine.val_tolerance_se=100`: every iteration holds, so the loop runs until the IQR rule
                      removes nothing or `refine.max_iterations` (3)

Judge (validation data only): the final detector's validation AUROC (`validation_auroc` in results.json: the flow
fitted on the kept set, scored on the labelled validation images). no_stop becomes patch_iqr's rule if its mean
over Magnetic Tile and elpv mono at 20 and 50 % noise x seeds 0-2 is at least the shared rule's. Where both rules
keep the same set the final detectors are the same and count as equal: every elpv mono cell and Magnetic Tile at
50 % (the shared rule kept the set of the cap's last iteration there, results/ablation_*), so only Magnetic Tile
at 20 %, seeds 1 and 2, are run, both arms (seed 0 also kept its last iteration's set). Test AUROC and removal
are reported after the decision, not used for it.

  python -m launch.sweep --sweep=configs/sweeps/patch_stop.py --workdir=results/patch_stop_mtd \
      --sweep.cache_dir=results/cache --parallel=2
"""
import ml_collections

from configs.sweeps import ablation


def get_config(arg: str = "mtd"):
  s = ablation.get_config(f"{arg}/patch_iqr")
  s.noise = (0.2,)
  s.seeds = (1, 2)
  s.arms.patch_iqr_no_stop = {"method": "patch_iqr", "refine": {"folds": 1, "k": 1.0, "val_tolerance_se": 100.0}}
  return s
