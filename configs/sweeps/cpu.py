"""Settings that make a cell fit a 2-core CPU (the method's own settings are base.py's). The paper configs keep
DifferNet's full settings (2048-wide, 24 x 8 epochs).

`overrides()`: a 512-wide flow and 8 x 4 = 32 epochs for the final detector, the settings of the ablation and the
seed sweeps (their committed results were made with it). `table_overrides()`: the same flow at DifferNet's
24 x 8 = 192 epochs, the CPU tables' final detector since 2026-12-06. On clean elpv mono (3 seeds,
configs/sweeps/flow_settings.py) DifferNet's full settings score 0.938 ± 0.009, the 32-epoch detector
0.909 ± 0.002 and the 512-wide flow at 192 epochs 0.937 ± 0.008: the width costs nothing measurable there, the
32 epochs do. Compare methods within one table, not across settings."""
import ml_collections

from configs import folder

NOISE = (0.0, 0.2, 0.5)
METHODS = ("differnet", "one_shot", "iterative", "maml_iqr")
# The CPU tables add the Gaussian floor: the same loop and final detector, scored by a Gaussian on pooled features
# (README, "A Gaussian finds the defects better than the flows"); a table without it would hide that. It runs
# with the tables' shared settings, so cross-fitted on refine.folds=2 like the flows; its recommended folds=1
# (fitted on the whole kept set) is the ablation's arm, which finds more (README's cleaning-scorer table).
TABLE_METHODS = METHODS + ("gaussian_iqr",)


def overrides() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "flow": {"hidden": 512},
      "train": {"meta_epochs": 8, "sub_epochs": 4},
  })


def table_overrides() -> ml_collections.ConfigDict:
  c = overrides()
  c.train = {"meta_epochs": 24, "sub_epochs": 8}
  return c


# Cleaners at their own recommended settings (README: gaussian_iqr fitted on the whole kept set, "A Gaussian finds
# the defects better than the flows", keeping the set its Gaussian validated best, "Why these settings"; patch_iqr
# at k = 1 without the stopping rule, "Patch-level scores find more"), beside the tables' shared-settings rows:
# `configs/sweeps/elpv_table.py:recommended[/ARM1+ARM2]`. gaussian_iqr_whole is the folder config's cleaning.
_FOLDER = folder.get_config().refine
RECOMMENDED_ARMS = {
    "patch_iqr": {"method": "patch_iqr", "refine": {"folds": 1, "k": 1.0, "val_tolerance_se": 100.0}},
    "gaussian_iqr_whole": {"method": "gaussian_iqr", "refine": {
        "folds": _FOLDER.folds, "val_tolerance_se": _FOLDER.val_tolerance_se, "patience": _FOLDER.patience}},
}


def with_arms(s: ml_collections.ConfigDict, arg: str, where: str) -> ml_collections.ConfigDict:
  """A table sweep `s` as given (arg ''), or its cells run by the recommended arms instead of `s.methods`
  (arg 'recommended', or 'recommended/ARM1+ARM2' for some of them), same data, noise, seeds and final detector."""
  if not arg:
    return s
  name, _, only = arg.partition("/")
  arms = only.split("+") if only else list(RECOMMENDED_ARMS)
  if name != "recommended" or set(arms) - set(RECOMMENDED_ARMS):
    raise ValueError(f"{where}:{arg}: expected 'recommended' or 'recommended/ARM1+ARM2' with arms from "
                     f"{sorted(RECOMMENDED_ARMS)}")
  s.arms = ml_collections.ConfigDict({a: RECOMMENDED_ARMS[a] for a in arms})
  return s
