"""elpv solar cells at DifferNet's full settings (64 test rotations, 2048-wide flow).

  python -m launch.main --config=configs/elpv.py --workdir=DIR --config.noise.ratio=0.2 --config.method=maml_iqr
"""
from configs.base import base, variant


def get_config(arg: str | None = None):
  c = base()
  c.data.name = "elpv"
  c.data.category = "all"
  return variant(c, arg)
