"""The default experiment: elpv solar cells (installed from PyPI), 30 % noise, the method against its baselines.

  python -m launch.main --config=configs/default.py --workdir=/tmp/maml_iqr_default

Real data, real EfficientNet-Lite0 weights; a flow narrower than DifferNet's (hidden 512) and 8 test rotations so
that it runs in minutes on a 2-core CPU. `:quick` shrinks it further for smoke tests.
"""
from configs.base import base, shrink


def get_config(arg: str | None = None):
  c = base()
  c.data.name = "elpv"
  c.data.category = "mono"
  c.noise.ratio = 0.3
  c.flow.hidden = 512
  c.train.meta_epochs = 8
  c.train.sub_epochs = 2
  c.score.n_views = 8
  return shrink(c) if arg == "quick" else c
