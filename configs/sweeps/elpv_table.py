"""elpv solar cells (mono and poly cells as two categories): the paper's four methods and the Gaussian floor
(gaussian_iqr) at noise 0, 20, 50 %, with the CPU table settings (cpu.table_overrides: a 512-wide flow,
192-epoch final detectors).

  python -m launch.sweep --sweep=configs/sweeps/elpv_table.py --workdir=results/elpv

`:recommended` (or `:recommended/patch_iqr`) runs the cleaners at their own recommended settings instead
(cpu.RECOMMENDED_ARMS), into the same workdir, so that the tables show them beside the shared-settings rows.
"""
import ml_collections

from configs.sweeps import cpu


def get_config(arg: str = ""):
  s = ml_collections.ConfigDict()
  s.experiment = "configs/elpv.py"
  s.overrides = cpu.table_overrides()
  s.categories = ("mono", "poly")
  s.noise = cpu.NOISE
  s.seeds = (0, 1, 2)
  s.cache_dir = ""  # default <workdir>/cache; content-keyed, so sweeps can share one (--sweep.cache_dir)
  s.methods = cpu.TABLE_METHODS
  return cpu.with_arms(s, arg, "configs/sweeps/elpv_table.py")
