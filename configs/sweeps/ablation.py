"""What each part of maml_iqr earns, at equal budget: Magnetic Tile (`:mtd`) or elpv mono (`:elpv`), noise 0, 20,
50 %, seeds 0, 1, 2, five arms on the CPU table settings (cpu.py):

  maml_iqr      the method: per fold, `maml.pretrain_epochs` plain epochs, then `maml.meta_epochs` of MAML, scored
                after the inner loop it trained for (normalised steps) on `maml.score_tasks` support sets
  objective_none  the same with `maml.objective=none`: every meta-step becomes a plain Adam step on the same
                rows (support + query), same count, same lr; scored after the same inner loop
  iterative     IRP with the same warm start rule and the same epochs (pretrain + meta epochs, plain training),
                scored by the trained flow without adaptation
  meta_init     no removal; the final detector starts from a flow meta-trained on the whole noisy set
  differnet     no removal, fresh start (the floor)
  gaussian_iqr  the same loop scored by a Ledoit-Wolf Gaussian on each image's mean evaluation view, fitted on the
                whole kept set (refine.folds=1: the better form by removal recall at <= 5 % good lost,
                benchmarks/cleaning_scorers.py); nothing is meta-learned or trained before the final detector
  patch_iqr     the same loop scored by patch-level nearest neighbours among the kept images (maml_iqr/patches.py),
                each image against the others (refine.folds=1), at k = 1: the label-free threshold chosen for
                these scores by a rule stated before its run (benchmarks/patch_scores.py); nothing is trained

Every arm: fresh fits every iteration (no warm start), the same folds (but gaussian_iqr and patch_iqr), stopping rule,
iteration cap and final detector (32 epochs, fresh init unless meta_init). Cells of both datasets share one
content-keyed feature cache. `:mtd/ARM1+ARM2` runs only those arms (an arm added to a grid, say).

  python -m launch.sweep --sweep=configs/sweeps/ablation.py:mtd --workdir=results/ablation_mtd
  python -m launch.sweep --sweep=configs/sweeps/ablation.py:elpv --workdir=results/ablation_elpv
"""
import ml_collections

from configs.sweeps import cpu

EXPERIMENTS = {"mtd": ("configs/mtd.py", "magnetic_tile"), "elpv": ("configs/elpv.py", "mono")}


def method_settings() -> dict:
  """The settings every arm shares, pinned here so that later changes of base.py's defaults cannot change what
  this sweep runs (the inner loop and schedule were chosen on validation data: README, "Why these settings").
  `refine.score_epochs` (read by iterative only) is the same number of passes as maml_iqr's pretrain + meta."""
  return {"maml": {"inner_update": "normalized", "inner_lr": 0.3, "inner_steps": 5, "pretrain_epochs": 8,
                   "meta_epochs": 2, "score_tasks": 4, "objective": "maml"},
          "refine": {"max_iterations": 3, "warm_start": False, "score_epochs": 10, "k": 1.5, "folds": 2},
          "train": {"init": "fresh"}}


def get_config(arg: str = "mtd"):
  name, _, only = arg.partition("/")
  if name not in EXPERIMENTS:
    raise ValueError(f"configs/sweeps/ablation.py:{arg}: expected one of {sorted(EXPERIMENTS)}, optionally "
                     "followed by /ARM1+ARM2")
  experiment, category = EXPERIMENTS[name]
  settings = method_settings()
  s = ml_collections.ConfigDict()
  s.experiment = experiment
  s.overrides = cpu.overrides()
  s.overrides.update(settings)
  s.overrides.score = {"pixel_auroc_images": 0}  # image-level ablation: no anomaly maps (minutes per cell on a CPU)
  s.categories = (category,)
  s.noise = cpu.NOISE
  s.seeds = (0, 1, 2)
  s.cache_dir = ""  # default <workdir>/cache; the feature cache is content-keyed, so sweeps can share one
  s.arms = ml_collections.ConfigDict({
      "maml_iqr": {"method": "maml_iqr"},
      "objective_none": {"method": "maml_iqr", "maml": {"objective": "none"}},
      "iterative": {"method": "iterative"},
      "meta_init": {"method": "differnet", "train": {"init": "meta"}},
      "differnet": {"method": "differnet"},
      "gaussian_iqr": {"method": "gaussian_iqr", "refine": {"folds": 1}},
      "patch_iqr": {"method": "patch_iqr", "refine": {"folds": 1, "k": 1.0}},
  })
  if only:
    unknown = set(only.split("+")) - set(s.arms)
    if unknown:
      raise ValueError(f"configs/sweeps/ablation.py:{arg}: no arm {sorted(unknown)}; arms: {sorted(s.arms)}")
    s.arms = ml_collections.ConfigDict({a: s.arms[a].to_dict() for a in only.split("+")})
  return s
