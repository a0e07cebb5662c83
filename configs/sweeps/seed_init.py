"""The seed's MAML ablation: the final detector initialised from the meta-learned flow against a random init
(epochs to converge and AUROC), maml_iqr on elpv mono at 20 % noise.

  python -m launch.sweep --sweep=configs/sweeps/seed_init.py --workdir=results/seed_init_elpv
"""
import ml_collections

from configs.sweeps import cpu


def get_config():
  s = ml_collections.ConfigDict()
  s.experiment = "configs/elpv.py"
  s.overrides = cpu.overrides()
  s.categories = ("mono",)
  s.noise = (0.2,)
  s.seeds = (0, 1, 2)
  s.methods = ("maml_iqr",)
  s.variants = ml_collections.ConfigDict({"init=meta": {"maml": {"init_final_from_meta": True}},
                                          "init=random": {"maml": {"init_final_from_meta": False}}})
  return s
