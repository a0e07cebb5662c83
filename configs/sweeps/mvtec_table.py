"""The paper's MVTec-AD table: 15 categories x noise 0-50 % x 3 seeds x 4 methods, AlexNet as DifferNet uses it,
DifferNet's full settings. Needs MVTec-AD and torchvision's AlexNet weights (see README).

  python -m launch.sweep --sweep=configs/sweeps/mvtec_table.py --workdir=results/mvtec \
      --sweep.overrides.data.root=/data/mvtec_ad --sweep.overrides.backbone.weights_path=/weights/alexnet-owt-7be5be79.pth
"""
import ml_collections

from configs.sweeps import cpu

CATEGORIES = ["bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw",
              "tile", "toothbrush", "transistor", "wood", "zipper"]


def get_config():
  s = ml_collections.ConfigDict()
  s.experiment = "configs/mvtec.py"
  s.overrides = ml_collections.ConfigDict({"data": {"root": ""}, "backbone": {"weights_path": ""}})
  s.categories = tuple(CATEGORIES)
  s.noise = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
  s.seeds = (0, 1, 2)
  s.methods = cpu.METHODS
  return s
