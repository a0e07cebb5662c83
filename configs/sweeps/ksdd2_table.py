"""The paper's KSDD2 table: noise 0-50 % x 3 seeds x 4 methods, AlexNet, DifferNet's full settings.

  python -m launch.sweep --sweep=configs/sweeps/ksdd2_table.py --workdir=results/ksdd2 \
      --sweep.overrides.data.root=/data/ksdd2 --sweep.overrides.backbone.weights_path=/weights/alexnet-owt-7be5be79.pth
"""
import ml_collections

from configs.sweeps import cpu


def get_config():
  s = ml_collections.ConfigDict()
  s.experiment = "configs/ksdd2.py"
  s.overrides = ml_collections.ConfigDict({"data": {"root": ""}, "backbone": {"weights_path": ""}})
  s.categories = ("ksdd2",)
  s.noise = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
  s.seeds = (0, 1, 2)
  s.methods = cpu.METHODS
  return s
