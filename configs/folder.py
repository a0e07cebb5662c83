"""Your own images: a folder of good images (some possibly defective: that is the point) and, for testing,
a folder of known-defective images.

  python -m launch.main --config=configs/folder.py --workdir=DIR --config.data.root=/my/good \
      --config.data.defective_root=/my/defective
"""
from configs.base import base, variant


def get_config(arg: str | None = None):
  c = base()
  c.data.name = "folder"
  return variant(c, arg)
