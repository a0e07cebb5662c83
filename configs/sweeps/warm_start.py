"""Why `refine.warm_start` is off: the ablation's settings (configs/sweeps/ablation.py, fresh fits every
iteration) against the same with each fold's fit warm-started from its fit of the iteration before. The stopping
rule compares validation AUROC across iterations; warm-started, iteration i's flows have had the epochs of i+1
fits, so the comparison is not between equally trained flows.

  python -m launch.sweep --sweep=configs/sweeps/warm_start.py:elpv --workdir=results/warm_start_elpv \
      --sweep.cache_dir=results/cache
"""
import ml_collections

from configs.sweeps import ablation


def get_config(arg: str = "elpv"):
  s = ablation.get_config(arg)
  s.noise = (0.2,)
  s.seeds = (0,)
  warm = {"refine": {"warm_start": True}}
  s.arms = ml_collections.ConfigDict({
      "maml_iqr": {"method": "maml_iqr"}, "iterative": {"method": "iterative"},
      "maml_iqr_warm": {"method": "maml_iqr", **warm}, "iterative_warm": {"method": "iterative", **warm}})
  return s
