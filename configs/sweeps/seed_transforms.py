"""The seed's transformation ablation: rotation only, rotation + brightness, and the full set (rotation,
brightness, contrast, saturation), for training views and for the score, maml_iqr on elpv mono at 20 % noise.

  python -m launch.sweep --sweep=configs/sweeps/seed_transforms.py --workdir=results/seed_transforms_elpv
"""
import ml_collections

from configs.sweeps import cpu


def get_config():
  s = ml_collections.ConfigDict()
  s.experiment = "configs/elpv.py"
  s.overrides = cpu.overrides()
  s.categories = ("mono",)
  s.noise = (0.2,)
  s.seeds = (0, 1, 2)
  s.methods = ("maml_iqr",)
  s.variants = ml_collections.ConfigDict({
      "rotation": {"train": {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0}},
      "rotation+brightness": {"train": {"brightness": 0.2, "contrast": 0.0, "saturation": 0.0}},
      "full": {"train": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2}},
  })
  return s
