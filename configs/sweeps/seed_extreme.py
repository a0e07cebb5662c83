"""The seed's extreme-noise experiment: all four methods on Magnetic Tile at 60 and 70 % noise.

  python -m launch.sweep --sweep=configs/sweeps/seed_extreme.py --workdir=results/seed_extreme
"""
import ml_collections

from configs.sweeps import cpu


def get_config():
  s = ml_collections.ConfigDict()
  s.experiment = "configs/mtd.py"
  s.overrides = cpu.overrides()
  s.categories = ("magnetic_tile",)
  s.noise = (0.6, 0.7)
  s.seeds = (0, 1, 2)
  s.methods = cpu.METHODS
  return s
