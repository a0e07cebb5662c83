"""Magnetic Tile Defects with DifferNet's split (761 train; 191 good + 392 defective test), DifferNet's full
flow settings (2048-wide, 24 x 8 epochs).

  python -m launch.main --config=configs/mtd.py --workdir=DIR --config.data.root=../shared/data/magnetic_tile

Expected: not measured at these settings on this project's CPU (DifferNet's paper reports 0.977 clean). At the
CPU table settings (configs/sweeps/cpu.py: 512-wide, 32 epochs) `method=differnet` scores 0.950 +- 0.007 clean,
0.886 +- 0.003 at 20 % and 0.788 +- 0.008 at 50 % noise (seeds 0-2, results/differnet_mtd_cpu, with DifferNet's 64
test rotations, where base.py now has 8 half-step ones), 3-6 min per cell on a shared 2-core AMD EPYC CPU plus
about 18 min of features once.
"""
from configs.base import base, variant


def get_config(arg: str | None = None):
  c = base()
  c.data.name = "magnetic_tile"
  c.data.root = "../shared/data/magnetic_tile"
  c.data.category = "magnetic_tile"
  return variant(c, arg)
