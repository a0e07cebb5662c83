"""One MVTec-AD category as the paper runs it: AlexNet features (DifferNet), a user's data and weights.

  python -m launch.main --config=configs/mvtec.py --workdir=DIR --config.data.root=/data/mvtec_ad \
      --config.data.category=bottle --config.backbone.weights_path=/weights/alexnet-owt-7be5be79.pth
"""
from configs.base import base, variant


def get_config(arg: str | None = None):
  c = base()
  c.data.name = "mvtec"
  c.data.category = "bottle"
  c.backbone.name = "alexnet"
  return variant(c, arg)
