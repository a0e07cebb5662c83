"""The default experiment: maml_iqr on elpv mono solar cells (installed from PyPI) at 20 % noise.

  python -m launch.main --config=configs/default.py --workdir=/tmp/maml_iqr_default

Real data, real EfficientNet-Lite0 weights, DifferNet's 64 test rotations; the CPU table settings for the final
detector (a 512-wide flow, 8 x 4 epochs; configs/sweeps/cpu.py) and base.py's method settings.

Expected (measured 2026-12-02 on a shared 2-core AMD EPYC CPU, jax 0.10.2): test AUROC 0.711, about 18 min
(15 min of it computing features, which later runs given the same --config.cache_dir reuse: the rest takes
about 3 min). The refinement removes 7 cells (5 injected) and then 9 (8 injected), but validation AUROC falls
from 0.722 to 0.718, so the stopping rule keeps the uncleaned set and the detector equals DifferNet on the noisy set (0.711): see README,
"What each part earns". `:quick` shrinks it for smoke tests (scores not meaningful).
"""
from configs.base import base, variant


def get_config(arg: str | None = None):
  c = base()
  c.data.name = "elpv"
  c.data.category = "mono"
  c.noise.ratio = 0.2
  c.flow.hidden = 512
  c.train.meta_epochs = 8
  c.train.sub_epochs = 4
  return variant(c, arg)
