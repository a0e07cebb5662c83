"""Settings that make a table cell fit a 2-core CPU: a 512-wide flow, 32 epochs (measured to converge on the
real data), MAML for 2 meta-epochs per iteration (warm-started
across iterations) and 4 epochs of adaptation. The paper configs keep DifferNet's full settings."""
import ml_collections

NOISE = (0.0, 0.2, 0.5)
METHODS = ("differnet", "one_shot", "iterative", "maml_iqr")


def overrides() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "flow": {"hidden": 512},
      "train": {"meta_epochs": 8, "sub_epochs": 4},
      "maml": {"meta_epochs": 2, "adapt_epochs": 4},
      "refine": {"score_epochs": 8},
      "score": {"n_views": 64},
  })
