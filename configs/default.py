"""The default experiment: maml_iqr on elpv mono solar cells (installed from PyPI) at 30 % noise.

  python -m launch.main --config=configs/default.py --workdir=/tmp/maml_iqr_default

Real data, real EfficientNet-Lite0 weights; a flow narrower than DifferNet's (hidden 512), 16 epochs, 2 MAML
meta-epochs per refinement iteration and 8 test rotations, so that it runs in minutes on a 2-core CPU.
`:quick` shrinks it further for smoke tests (scores not meaningful).
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
  c.maml.meta_epochs = 2
  c.maml.adapt_epochs = 4
  c.refine.score_epochs = 8
  return shrink(c) if arg == "quick" else c
