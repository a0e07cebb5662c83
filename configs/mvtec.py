"""One MVTec-AD category as the paper runs it: AlexNet features (DifferNet), a user's data and weights.

  python -m launch.main --config=configs/mvtec.py --workdir=DIR --config.data.root=/data/mvtec_ad \
      --config.data.category=bottle --config.backbone.weights_path=/weights/alexnet-owt-7be5be79.pth

Expected: not measured here (MVTec-AD cannot be redistributed, and this project's machines have no copy).
Published for comparison (../shared/PAPER_NOTES.md): DifferNet 0.949 mean image AUROC clean (bottle 0.990);
IRP, the method without MAML, 0.912 / 0.864 / 0.771 at 0 / 20 / 50 % noise (third-party summary). Time: not
measured; at DifferNet's settings plan on a GPU.
"""
from configs.base import base, variant


def get_config(arg: str | None = None):
  c = base()
  c.data.name = "mvtec"
  c.data.category = "bottle"
  c.backbone.name = "alexnet"
  return variant(c, arg)
