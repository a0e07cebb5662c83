"""Magnetic Tile's table with no tile photographed on both sides of a split (`data.mtd_split=by_tile`): the good
test images are whole tiles drawn by `data.split_seed` (0), as many as DifferNet's split holds, and the noise
protocol draws the validation and the injected images by tile. Everything else is `mtd_table.py`'s, so its cells
compare with results/mtd_e192's at the same seed (README, "Magnetic Tile shows each tile up to six times").

  python -m launch.sweep --sweep=configs/sweeps/mtd_by_tile.py --workdir=results/mtd_by_tile

`:recommended` (or `:recommended/patch_iqr`) as in mtd_table.py.
"""
from configs.sweeps import mtd_table


def get_config(arg: str = ""):
  s = mtd_table.get_config(arg)
  s.overrides.data = {"mtd_split": "by_tile"}
  return s
