"""KolektorSDD2 as the paper runs it: AlexNet features (DifferNet), a user's data and weights.

  python -m launch.main --config=configs/ksdd2.py --workdir=DIR --config.data.root=/data/ksdd2 \
      --config.backbone.weights_path=/weights/alexnet-owt-7be5be79.pth
"""
from configs.base import base, variant


def get_config(arg: str | None = None):
  c = base()
  c.data.name = "ksdd2"
  c.data.category = "ksdd2"
  c.backbone.name = "alexnet"
  return variant(c, arg)
