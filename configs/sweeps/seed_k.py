"""The seed's k-sensitivity experiment, plus the automatic threshold (beyond the paper): maml_iqr on elpv
mono at 20 % noise with k in {0.5, 1.0, 1.5, 2.0} and with k chosen from validation-good scores; good/bad
removal counts are in results.csv (removal_recall, good_lost) and each cell's report.md.

  python -m launch.sweep --sweep=configs/sweeps/seed_k.py --workdir=results/seed_k_elpv
"""
import ml_collections

from configs.sweeps import cpu


def get_config():
  s = ml_collections.ConfigDict()
  s.experiment = "configs/elpv.py"
  s.overrides = cpu.overrides()
  s.categories = ("mono",)
  s.noise = (0.2,)
  s.seeds = (0, 1, 2)
  s.methods = ("maml_iqr",)
  s.variants = ml_collections.ConfigDict({
      **{f"k={k:g}".replace(".", "p"): {"refine": {"k": k}} for k in (0.5, 1.0, 1.5, 2.0)},  # k=0p5 ...
      "k=auto": {"refine": {"auto_k_quantile": 0.99}},
  })
  return s
