"""Magnetic Tile Defects: the paper's four methods and the Gaussian floor (gaussian_iqr) at noise 0, 20, 50 %
(share of the defective images, no overlap), with the CPU table settings (cpu.table_overrides: a 512-wide flow,
192-epoch final detectors).

  python -m launch.sweep --sweep=configs/sweeps/mtd_table.py --workdir=results/mtd

`:recommended` (or `:recommended/patch_iqr`) runs the cleaners at their own recommended settings instead
(cpu.RECOMMENDED_ARMS), into the same workdir, so that the tables show them beside the shared-settings rows.
"""
import ml_collections

from configs.sweeps import cpu


def get_config(arg: str = ""):
  s = ml_collections.ConfigDict()
  s.experiment = "configs/mtd.py"
  s.overrides = cpu.table_overrides()
  s.categories = ("magnetic_tile",)
  s.noise = cpu.NOISE
  s.seeds = (0, 1, 2)
  s.cache_dir = ""  # default <workdir>/cache; content-keyed, so sweeps can share one (--sweep.cache_dir)
  s.methods = cpu.TABLE_METHODS
  return cpu.with_arms(s, arg, "configs/sweeps/mtd_table.py")
