"""elpv solar cells (mono and poly cells as two categories): the four methods at noise 0, 20, 50 %.

  python -m launch.sweep --sweep=configs/sweeps/elpv_table.py --workdir=results/elpv
"""
import ml_collections

from configs.sweeps import cpu


def get_config():
  s = ml_collections.ConfigDict()
  s.experiment = "configs/elpv.py"
  s.overrides = cpu.overrides()
  s.categories = ("mono", "poly")
  s.noise = cpu.NOISE
  s.seeds = (0, 1, 2)
  s.methods = cpu.METHODS
  return s
