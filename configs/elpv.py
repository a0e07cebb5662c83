"""elpv solar cells at DifferNet's flow settings (2048-wide flow, 24 x 8 epochs); base.py's 8 half-step test
rotations where DifferNet has 64 (`--config.score.n_views=64 --config.score.view_offset=0` for DifferNet's).

  python -m launch.main --config=configs/elpv.py --workdir=DIR --config.data.category=mono \
      --config.noise.ratio=0.2 --config.method=maml_iqr

Expected (measured on a 2-core AMD EPYC CPU, jax 0.10.2): `method=differnet` on clean mono cells scores test
AUROC 0.938 +- 0.009 over seeds 0-2 with DifferNet's 64 rotations and a cell takes about 15 min plus 17 min of features once
(results/flow_settings_elpv). maml_iqr at these settings has not been measured: its refinement trains 2 folds x
(8 + 2) epochs of the 2048-wide flow per iteration, several times the CPU table settings' cost.
"""
from configs.base import base, variant


def get_config(arg: str | None = None):
  c = base()
  c.data.name = "elpv"
  c.data.category = "all"
  return variant(c, arg)
