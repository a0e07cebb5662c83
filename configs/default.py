"""The default experiment: maml_iqr on elpv mono solar cells (installed from PyPI) at 20 % noise, sized for a first
result within 10 minutes on a 2-core CPU without AVX-512.

  python -m launch.main --config=configs/default.py --workdir=/tmp/maml_iqr_default

Real data, real EfficientNet-Lite0 weights, base.py's method (5 refinement iterations, 2 cross-fitted folds,
8 plain + 2 MAML epochs and 4 adapted scorers per fold, its stopping rule and k).

`configs/default.py:table` is the same experiment at the CPU table settings (configs/sweeps/cpu.py: a 512-wide,
8-block flow, 8 x 4 epochs for the final detector; base.py's 8 evaluation and 16 cached training views), which the
ablation tables and the benchmarks use. The default keeps the method and shrinks what it runs on, chosen by time
alone, never by AUROC: a 4-block flow, 4 evaluation views (the eval_views benchmark: 0.006 below 8 in validation
AUROC on elpv mono), 4 cached training views (as many as a batch takes per image) and no inner-loop diagnostics
(they change no result). README, "Two commands", has its time and AUROC against `:table`'s. `:quick` shrinks it
for smoke tests (scores not meaningful).
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
  if arg == "table":
    return c
  c.flow.n_blocks = 4
  c.score.n_views = 4
  c.train.n_cached_views = 4
  c.maml.diagnostics = False
  return variant(c, arg, others=("table",))
