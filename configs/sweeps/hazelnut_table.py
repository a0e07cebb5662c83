"""hazelnut_toy from ../shared/data (28 good train images; 6 good + 17 defective test): the paper's four methods
and the Gaussian floor (gaussian_iqr) at noise 0, 20, 50 %, EfficientNet-Lite0 features and the CPU table
settings (cpu.table_overrides: a 512-wide flow, 192-epoch final detectors). A toy: with 6 good test images
(fewer after the validation carve-out), one image moves the AUROC by several points, so read it as a smoke test
of the whole pipeline on real photos, not as a benchmark.

  python -m launch.sweep --sweep=configs/sweeps/hazelnut_table.py --workdir=results/hazelnut
"""
import ml_collections

from configs.sweeps import cpu


def get_config():
  s = ml_collections.ConfigDict()
  s.experiment = "configs/mvtec.py"
  s.overrides = cpu.table_overrides()
  s.overrides.data = {"root": "../shared/data"}
  s.overrides.backbone = {"name": "efficientnet_lite0"}
  s.categories = ("hazelnut_toy",)
  s.noise = cpu.NOISE
  s.seeds = (0, 1, 2)
  s.cache_dir = ""  # default <workdir>/cache; content-keyed, so sweeps can share one (--sweep.cache_dir)
  s.methods = cpu.TABLE_METHODS
  return s
