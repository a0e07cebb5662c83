"""Your own images: a folder of "good" images (some possibly defective: that is the point) and, optionally, a folder
of known-defective images.

  python -m launch.main --config=configs/folder.py --workdir=DIR --config.data.root=/my/good

cleans the whole folder (clean mode: W/suspicious.csv, W/review_*.png, W/model/). With
`--config.data.defective_root=/my/defective` half the good images (data.test_fraction) and the defective ones
form a test set, and the run reports test AUROC as the other experiments do.

Expected (README, "Clean your own images"; measured 2026-12-02 on a shared 2-core AMD EPYC CPU): 300 Magnetic
Tile good tiles + 20 defective, with the CPU table settings (--config.flow.hidden=512
--config.train.meta_epochs=8 --config.train.sub_epochs=4): 4.0 min; the cleaning scores rank the defective
tiles at AUROC 0.55 (3 of them among the 13 removed). These defaults (DifferNet's 2048-wide flow, 192 epochs)
have not been timed on a CPU.
"""
from configs.base import base, variant


def get_config(arg: str | None = None):
  c = base()
  c.data.name = "folder"
  return variant(c, arg)
