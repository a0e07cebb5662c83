"""Start-up validation of a run's config: every value range-checked before any expensive work starts."""
from __future__ import annotations

import math
import os

METHODS = ("differnet", "one_shot", "iterative", "maml_iqr")
DATASETS = ("mvtec", "ksdd2", "magnetic_tile", "elpv", "folder")
BACKBONES = ("efficientnet_lite0", "alexnet")


class ConfigError(ValueError):
  """A config value out of range: the message names the flag and the allowed values."""


def _check(ok: bool, flag: str, value, expected: str) -> None:
  if not ok:
    raise ConfigError(f"--config.{flag}={value!r}: expected {expected}")


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
  """A finite real number (bools and strings are not numbers here; nan and inf are not finite)."""
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _writable(flag: str, path: str) -> None:
  """Creates `path` if needed and writes a probe file there, or raises a ConfigError naming the flag."""
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".write_probe_{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f"{flag}={path}: cannot write there ({e.strerror}); choose a writable folder") from None


def validate(c) -> None:
  """Raises a ConfigError naming the first out-of-range value's flag and what it accepts."""
  _check(_is_int(c.seed) and c.seed >= 0, "seed", c.seed, "an integer >= 0")
  for flag in ("noise.overlap", "flow.zero_init", "train.recompute_features", "maml.first_order",
               "refine.warm_start"):
    section, name = flag.split(".")
    _check(isinstance(c[section][name], bool), flag, c[section][name], "True or False")
  for flag in ("train.view_seed", "data.split_seed"):
    section, name = flag.split(".")
    _check(_is_int(c[section][name]) and c[section][name] >= 0, flag, c[section][name], "an integer >= 0")
  for flag in ("data.test_fraction", "noise.ratio", "noise.val_fraction", "flow.clamp", "train.lr", "train.b1",
               "train.b2", "train.eps", "train.weight_decay", "train.max_angle", "train.brightness",
               "train.contrast", "train.saturation", "maml.inner_lr", "maml.meta_lr", "maml.query_fraction",
               "refine.k", "refine.max_remove_per_iteration", "refine.max_remove_total"):
    section, name = flag.split(".")
    _check(_is_num(c[section][name]), flag, c[section][name], "a finite number")
  _check(c.method in METHODS, "method", c.method, f"one of {METHODS}")
  _check(c.data.name in DATASETS, "data.name", c.data.name, f"one of {DATASETS}")
  if c.data.name in ("mvtec", "ksdd2", "magnetic_tile", "folder"):
    _check(bool(c.data.root), "data.root", c.data.root, f"the {c.data.name} folder (it is required for this dataset)")
    _check(os.path.isdir(c.data.root), "data.root", c.data.root, "an existing folder")
  if c.data.name == "folder" and c.data.defective_root:
    _check(os.path.isdir(c.data.defective_root), "data.defective_root", c.data.defective_root,
           "an existing folder of defective images, or empty for none")
  if c.data.name == "mvtec":
    _check(c.data.category not in ("", "all"), "data.category", c.data.category, "an MVTec-AD category, e.g. bottle")
  if c.data.name == "elpv":
    _check(c.data.category in ("all", "mono", "poly"), "data.category", c.data.category, "all, mono or poly")
    for flag in ("data.elpv_one_third", "data.elpv_two_thirds"):
      value = c.data[flag.split(".")[1]]
      _check(value in ("drop", "good", "defective"), flag, value, "drop, good or defective")
  _check(0 < c.data.test_fraction < 1, "data.test_fraction", c.data.test_fraction, "a value in (0, 1)")
  _check(0 <= c.noise.ratio <= 1, "noise.ratio", c.noise.ratio, "a value in [0, 1]")
  _check(c.noise.mode in ("defect_share", "train_share"), "noise.mode", c.noise.mode, "defect_share or train_share")
  _check(c.noise.on_shortage in ("fail", "cap"), "noise.on_shortage", c.noise.on_shortage, "fail or cap")
  _check(0 <= c.noise.val_fraction < 1, "noise.val_fraction", c.noise.val_fraction, "a value in [0, 1)")
  _check(c.backbone.name in BACKBONES, "backbone.name", c.backbone.name, f"one of {BACKBONES}")
  if c.backbone.name == "efficientnet_lite0" and "stages" in c.backbone:
    from maml_iqr.models import efficientnet_lite  # noqa: PLC0415 - jax-heavy, needed only here
    stages = c.backbone.stages
    try:
      ok = isinstance(stages, (tuple, list)) and len(stages) > 0 and all(
          efficientnet_lite.stage_dim(s) for s in stages)
    except (ValueError, TypeError):
      ok = False
    _check(ok, "backbone.stages", stages, "a non-empty tuple of stem, block0..block15, head, stride4, stride8, "
           "stride16 or stride32")
  if c.backbone.name == "alexnet" and c.backbone.weights_path != "random":
    _check(os.path.isfile(c.backbone.weights_path), "backbone.weights_path", c.backbone.weights_path,
           "a torchvision AlexNet .pth file (https://download.pytorch.org/models/alexnet-owt-7be5be79.pth)")
  for flag in ("flow.n_blocks", "flow.hidden", "train.meta_epochs", "train.sub_epochs", "train.batch_size",
               "train.n_views", "train.n_cached_views", "score.n_views", "score.batch_size", "maml.inner_steps",
               "maml.tasks_per_batch", "maml.task_size", "maml.meta_epochs", "maml.score_tasks",
               "refine.max_iterations",
               "refine.min_kept", "refine.score_epochs", "refine.folds"):
    section, name = flag.split(".")
    value = c[section][name]
    _check(_is_int(value) and value > 0, flag, value, "a positive integer")
  from maml_iqr import maml  # noqa: PLC0415 - jax-heavy, needed only here
  _check(c.maml.objective in maml.OBJECTIVES, "maml.objective", c.maml.objective,
         f"a registered meta-objective: one of {sorted(maml.OBJECTIVES)}")
  _check(c.train.init in ("fresh", "meta"), "train.init", c.train.init, "fresh or meta")
  _check(c.train.n_views <= c.train.n_cached_views, "train.n_views", c.train.n_views,
         f"at most train.n_cached_views ({c.train.n_cached_views})")
  for flag in ("flow.clamp", "train.lr", "train.eps", "maml.inner_lr", "maml.meta_lr", "refine.k"):
    section, name = flag.split(".")
    _check(c[section][name] > 0, flag, c[section][name], "a positive number")
  for flag in ("train.b1", "train.b2"):
    section, name = flag.split(".")
    _check(0 <= c[section][name] < 1, flag, c[section][name], "a value in [0, 1)")
  _check(c.train.weight_decay >= 0, "train.weight_decay", c.train.weight_decay, "a value >= 0")
  _check(c.backbone.dtype in ("float32", "bfloat16"), "backbone.dtype", c.backbone.dtype, "float32 or bfloat16")
  _check(c.score.kind in ("z2", "nll"), "score.kind", c.score.kind, "z2 or nll")
  _check(0 <= c.train.max_angle <= 180, "train.max_angle", c.train.max_angle, "a value in [0, 180]")
  for flag in ("train.brightness", "train.contrast", "train.saturation"):
    section, name = flag.split(".")
    _check(0 <= c[section][name] < 1, flag, c[section][name], "a value in [0, 1)")
  _check(0 < c.maml.query_fraction < 1, "maml.query_fraction", c.maml.query_fraction, "a value in (0, 1)")
  _check(c.maml.task_size >= 2, "maml.task_size", c.maml.task_size, "at least 2 (one support, one query image)")
  _check(0 < c.refine.max_remove_per_iteration <= 1, "refine.max_remove_per_iteration",
         c.refine.max_remove_per_iteration, "a value in (0, 1]")
  _check(0 < c.refine.max_remove_total <= 1, "refine.max_remove_total", c.refine.max_remove_total,
         "a value in (0, 1]")
  _check(0 <= c.refine.auto_k_quantile < 1, "refine.auto_k_quantile", c.refine.auto_k_quantile,
         "0 (off: fixed k) or a quantile in (0, 1)")
  _check(_is_int(c.refine.patience) and c.refine.patience >= 1, "refine.patience", c.refine.patience,
         "a positive integer")
  if c.cache_dir:
    _writable("--config.cache_dir", c.cache_dir)


def check_workdir(workdir: str) -> None:
  """Fails before any training when the workdir cannot be written or the disk is nearly full."""
  if not workdir:
    raise ConfigError("--workdir is required: the folder where results.json, report.md and checkpoints go")
  _writable("--workdir", workdir)
  free = os.statvfs(workdir)
  free_mb = free.f_bavail * free.f_frsize / 2**20
  if free_mb < 200:
    raise ConfigError(f"--workdir={workdir}: only {free_mb:.0f} MiB free on its disk; a run needs at least 200 MiB")
