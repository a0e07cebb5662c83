"""The default experiment: maml_iqr on elpv mono solar cells (installed from PyPI) at 20 % noise.

  python -m launch.main --config=configs/default.py --workdir=/tmp/maml_iqr_default

Real data, real EfficientNet-Lite0 weights, DifferNet's 64 test rotations; a flow narrower than DifferNet's
(hidden 512), 32 epochs and 2 MAML meta-epochs per refinement iteration, the settings of the committed elpv
table (its maml_iqr / mono / 20 % / seed 0 cell: AUROC 0.779), so that it runs in about a quarter of an hour on a
2-core CPU, most of it computing features once. With only 8 test rotations it measured 0.517: the score needs
the many views. `:quick` shrinks it for smoke tests (scores not meaningful).
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
