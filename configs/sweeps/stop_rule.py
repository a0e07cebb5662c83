"""Which stopping rule keeps the cleanest set? maml_iqr on elpv mono (`:elpv`) or Magnetic Tile (`:mtd`) at noise
0, 20 and 50 %, with a rule that never stalls (`refine.val_tolerance_se=100`), so that every run records its
whole trajectory up to `refine.max_iterations`. An iteration's fits depend only on the set it starts from and its
seed, so a rule that stops earlier sees a prefix of the same trajectory: `benchmarks/stop_rule.py` replays each
rule on the recorded validation AUROCs and reports the removal recall and good images lost of the set it keeps.

  python -m launch.sweep --sweep=configs/sweeps/stop_rule.py:elpv --workdir=results/stop_rule_elpv \
      --sweep.cache_dir=results/cache
  python -m launch.sweep --sweep=configs/sweeps/stop_rule.py:mtd --workdir=results/stop_rule_mtd \
      --sweep.cache_dir=results/cache
  python -m benchmarks.stop_rule --roots=results/stop_rule_elpv,results/stop_rule_mtd

Settings: the ablation's (configs/sweeps/ablation.py), with base.py's 5 iterations (4 before 2026-12-05).
"""
import ml_collections

from configs.sweeps import ablation


def get_config(arg: str = "elpv"):
  s = ablation.get_config(arg)
  s.seeds = (0, 1)
  s.overrides.refine.max_iterations = 5  # base.py's: the rule is chosen for the default's whole trajectory
  s.overrides.refine.val_tolerance_se = 100.0
  s.overrides.train.meta_epochs = 1  # the final detector is not what this measures: a short one
  s.arms = ml_collections.ConfigDict({"maml_iqr": {"method": "maml_iqr"}})
  return s
