"""Settings that make a table cell fit a 2-core CPU: a 512-wide flow and 8 x 4 = 32 epochs for the final detector
(the method's own settings are base.py's). The paper configs keep DifferNet's full settings (2048-wide, 24 x 8
epochs).

These detectors are not DifferNet's. On clean elpv mono, DifferNet's full settings score 0.938 ± 0.009 and these
0.909 ± 0.002; a 512-wide flow at 192 epochs scores 0.937 ± 0.008 (3 seeds, configs/sweeps/flow_settings.py).
Compare methods within one table, not across settings."""
import ml_collections

NOISE = (0.0, 0.2, 0.5)
METHODS = ("differnet", "one_shot", "iterative", "maml_iqr")


def overrides() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "flow": {"hidden": 512},
      "train": {"meta_epochs": 8, "sub_epochs": 4},
  })
