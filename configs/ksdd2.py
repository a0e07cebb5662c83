"""KolektorSDD2 as the paper runs it: AlexNet features (DifferNet), a user's data and weights.

  python -m launch.main --config=configs/ksdd2.py --workdir=DIR --config.data.root=/data/ksdd2 \
      --config.backbone.weights_path=/weights/alexnet-owt-7be5be79.pth

Expected: not measured here (KSDD2 cannot be redistributed, and this project's machines have no copy).
Published for comparison (../shared/PAPER_NOTES.md, third-party summary): IRP 0.940 / 0.902 / 0.897 image AUROC
at 0 / 20 / 50 % noise. Time: not measured; KSDD2 has 2085 good training images, so plan on a GPU.
"""
from configs.base import base, variant


def get_config(arg: str | None = None):
  c = base()
  c.data.name = "ksdd2"
  c.data.category = "ksdd2"
  c.backbone.name = "alexnet"
  return variant(c, arg)
