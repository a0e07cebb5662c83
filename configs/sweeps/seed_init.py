"""The seed's MAML ablation: the final detector initialised from the meta-learned flow against a random init
(epochs to converge and AUROC), Magnetic Tile at 30 % noise.

  python -m launch.sweep --sweep=configs/sweeps/seed_init.py --workdir=results/seed_init
"""
import ml_collections

from configs.sweeps import cpu


def get_config():
  s = ml_collections.ConfigDict()
  s.experiment = "configs/mtd.py"
  s.overrides = cpu.overrides()
  s.categories = ("magnetic_tile",)
  s.noise = (0.3,)
  s.seeds = (0, 1, 2)
  s.methods = ("maml_iqr",)
  s.variants = ml_collections.ConfigDict({"init=meta": {"maml": {"init_final_from_meta": True}},
                                          "init=random": {"maml": {"init_final_from_meta": False}}})
  return s
