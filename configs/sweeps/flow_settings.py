"""Does the CPU tables' smaller detector cost AUROC? DifferNet (the plain detector that every method ends
with) on clean elpv mono at the CPU settings (512-wide subnets, 8 x 4 epochs), at DifferNet's width, at its
epochs, and at both (2048-wide, 24 x 8 epochs: its full settings).

  python -m launch.sweep --sweep=configs/sweeps/flow_settings.py --workdir=results/flow_settings_elpv
"""
import ml_collections

from configs.sweeps import cpu


def get_config():
  s = ml_collections.ConfigDict()
  s.experiment = "configs/elpv.py"
  s.overrides = cpu.overrides()
  s.categories = ("mono",)
  s.noise = (0.0,)
  s.seeds = (0, 1, 2)
  s.methods = ("differnet",)
  full_epochs = {"meta_epochs": 24, "sub_epochs": 8}
  s.variants = ml_collections.ConfigDict({
      "w512_e32": {},                                                   # the CPU tables' settings
      "w2048_e32": {"flow": {"hidden": 2048}},
      "w512_e192": {"train": full_epochs},
      "w2048_e192": {"flow": {"hidden": 2048}, "train": full_epochs},  # DifferNet's full settings
  })
  return s
