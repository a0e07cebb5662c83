"""Magnetic Tile Defects with DifferNet's split (761 train; 191 good + 392 defective test).

  python -m launch.main --config=configs/mtd.py --workdir=DIR --config.data.root=../shared/data/magnetic_tile
"""
from configs.base import base, variant


def get_config(arg: str | None = None):
  c = base()
  c.data.name = "magnetic_tile"
  c.data.root = "../shared/data/magnetic_tile"
  c.data.category = "magnetic_tile"
  return variant(c, arg)
