"""Magnetic Tile Defects: the four methods at noise 0, 20, 50 % (share of the defective images, no overlap).

  python -m launch.sweep --sweep=configs/sweeps/mtd_table.py --workdir=results/mtd
"""
import ml_collections

from configs.sweeps import cpu


def get_config():
  s = ml_collections.ConfigDict()
  s.experiment = "configs/mtd.py"
  s.overrides = cpu.overrides()
  s.categories = ("magnetic_tile",)
  s.noise = cpu.NOISE
  s.seeds = (0, 1, 2)
  s.methods = cpu.METHODS
  return s
