"""Start-up validation of a run's config: every value range-checked before any expensive work starts, and
every check that needs the data (`check_feasible`) made right after the noise split, before the backbone runs.

Also turns a bad command line (an unknown `--config.` key, a typo in a config's `:variant`) into one line
(`flag_error_line`) instead of a traceback.
"""
from __future__ import annotations

import difflib
import math
import os
import re

from maml_iqr.data.readers import MTD_SPLITS
from maml_iqr.io import is_writer

METHODS = ("differnet", "one_shot", "iterative", "maml_iqr", "gaussian_iqr", "patch_iqr")
DATASETS = ("mvtec", "ksdd2", "magnetic_tile", "elpv", "folder")
BACKBONES = ("efficientnet_lite0", "alexnet")


class ConfigError(ValueError):
  """A config value out of range: the message names the flag and the allowed values."""


class FeasibilityError(ConfigError):
  """Values each in range that cannot work together on this data: the message names the flag and the fix."""


PATH_FLAGS = ("data.root", "data.defective_root", "backbone.weights_path", "cache_dir")


def expand_paths(c):
  """A copy of the config with `~` expanded in every path value (`PATH_FLAGS`): a shell leaves
  `--config.data.root=~/x` as it is, and the run must not read or create a literal './~' folder."""
  c = c.copy_and_resolve_references()
  for flag in PATH_FLAGS:
    *sections, name = flag.split(".")
    holder = c
    for section in sections:
      holder = holder[section]
    if isinstance(holder[name], str) and holder[name].startswith("~"):
      with holder.unlocked():
        holder[name] = os.path.expanduser(holder[name])
  return c


def _check(ok: bool, flag: str, value, expected: str) -> None:
  if not ok:
    raise ConfigError(f"--config.{flag}={value!r}: expected {expected}")


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
  """A finite real number (bools and strings are not numbers here; nan and inf are not finite)."""
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _writable(flag: str, path: str) -> None:
  """Creates `path` if needed and writes a probe file there, or raises a ConfigError naming the flag. In a
  multi-process run only process 0 writes (`io.is_writer`), so only it probes."""
  if not is_writer():
    return
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".write_probe_{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f"{flag}={path}: cannot write there ({e.strerror}); choose a writable folder") from None


def _check_patch(p) -> None:
  """patch.*: known blocks, and every block's map divides into or repeats onto the grid."""
  blocks = tuple(f"block{i}" for i in range(16))
  _check(isinstance(p.stages, (tuple, list)) and len(p.stages) > 0 and all(s in blocks for s in p.stages),
         "patch.stages", p.stages, "a non-empty list of efficientnet_lite0 blocks, block0..block15")
  _check(_is_int(p.grid) and p.grid >= 1, "patch.grid", p.grid, "an integer >= 1")
  _check(_is_int(p.local) and p.local >= 1 and p.local % 2 == 1, "patch.local", p.local, "an odd integer >= 1")
  _check(p.pool in ("mean", "max"), "patch.pool", p.pool, "mean or max")
  _check(_is_int(p.input_size) and (p.input_size == 0 or (p.input_size >= 32 and p.input_size % 32 == 0)),
         "patch.input_size", p.input_size, "0 (the backbone's size) or a multiple of 32")
  size = p.input_size or BACKBONE_INPUT_SIZE
  for s in p.stages:
    side = size // BLOCK_STRIDES[int(s[5:])]
    _check(side % p.grid == 0 or p.grid % side == 0, "patch.grid", p.grid,
           f"a divisor or a multiple of every stage map's side ({s} is {side}x{side} at {size}x{size} images)")


# efficientnet_lite0's input side and the cumulative stride of each block's output
# (maml_iqr/models/efficientnet_lite.py), kept here so that checking a config imports no jax.
BACKBONE_INPUT_SIZE = 224
BLOCK_STRIDES = (2, 4, 4, 8, 8, 16, 16, 16, 16, 16, 16, 32, 32, 32, 32, 32)


def validate(c) -> None:
  """Raises a ConfigError naming the first out-of-range value's flag and what it accepts."""
  _check(_is_int(c.seed) and c.seed >= 0, "seed", c.seed, "an integer >= 0")
  for flag in ("noise.overlap", "flow.zero_init", "train.recompute_features", "maml.first_order",
               "maml.diagnostics", "refine.warm_start"):
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
  _check(not (c.method in ("gaussian_iqr", "patch_iqr") and c.refine.warm_start), "refine.warm_start",
         c.refine.warm_start, f"False with method={c.method} (nothing is trained: there is nothing to warm-start)")
  _check(isinstance(c.refine.leave_one_out, bool), "refine.leave_one_out", c.refine.leave_one_out, "True or False")
  _check(not c.refine.leave_one_out or (c.method == "gaussian_iqr" and c.refine.folds == 1), "refine.leave_one_out",
         c.refine.leave_one_out, "False unless method=gaussian_iqr and refine.folds=1 (folds already score each image "
         "by a fit without it; patch_iqr never counts an image as its own neighbour)")
  if c.method == "patch_iqr":
    _check(c.refine.folds == 1, "refine.folds", c.refine.folds,
           "1 with method=patch_iqr (each image is scored against the other kept images: no folds needed)")
    _check(c.backbone.name == "efficientnet_lite0", "backbone.name", c.backbone.name,
           "efficientnet_lite0 with method=patch_iqr (its patches are that network's stage maps)")
  _check_patch(c.patch)  # every method: the section is part of the workdir fingerprint
  _check(c.data.name in DATASETS, "data.name", c.data.name, f"one of {DATASETS}")
  if c.data.name in ("mvtec", "ksdd2", "magnetic_tile", "folder"):
    _check(bool(c.data.root), "data.root", c.data.root, f"the {c.data.name} folder (it is required for this dataset)")
    _check(os.path.isdir(c.data.root), "data.root", c.data.root, "an existing folder")
  if c.data.name == "folder" and c.data.defective_root:
    _check(os.path.isdir(c.data.defective_root), "data.defective_root", c.data.defective_root,
           "an existing folder of defective images, or empty for none")
  if c.data.name == "mvtec":
    _check(c.data.category not in ("", "all"), "data.category", c.data.category, "an MVTec-AD category, e.g. bottle")
  _check(c.data.mtd_split in MTD_SPLITS, "data.mtd_split", c.data.mtd_split, f"one of {MTD_SPLITS}")
  _check(c.data.mtd_split == "differnet" or c.data.name == "magnetic_tile", "data.mtd_split", c.data.mtd_split,
         "differnet unless data.name=magnetic_tile (only Magnetic Tile's file names say which tile an image shows)")
  _check(isinstance(c.data.object_pattern, str), "data.object_pattern", c.data.object_pattern, "a string")
  _check(not c.data.object_pattern or c.data.name == "folder", "data.object_pattern", c.data.object_pattern,
         "empty unless data.name=folder (Magnetic Tile's tiles: data.mtd_split=by_tile)")
  if c.data.object_pattern:
    try:
      rx = re.compile(c.data.object_pattern)
    except re.error as e:
      rx = None
      _check(False, "data.object_pattern", c.data.object_pattern, f"a regular expression ({e})")
    _check(rx.groups <= 1, "data.object_pattern", c.data.object_pattern,
           "a regular expression with at most one group (its first group names the object), e.g. '^(part\\d+)_'")
  if c.data.name == "elpv":
    _check(c.data.category in ("all", "mono", "poly"), "data.category", c.data.category, "all, mono or poly")
    for flag in ("data.elpv_one_third", "data.elpv_two_thirds"):
      value = c.data[flag.split(".")[1]]
      _check(value in ("drop", "good", "defective"), flag, value, "drop, good or defective")
  if c.data.name == "folder":  # 0: no test split, the whole folder is cleaned (clean mode)
    _check(0 <= c.data.test_fraction < 1, "data.test_fraction", c.data.test_fraction, "a value in [0, 1)")
  else:
    _check(0 < c.data.test_fraction < 1, "data.test_fraction", c.data.test_fraction, "a value in (0, 1)")
  _check(0 <= c.noise.ratio <= 1, "noise.ratio", c.noise.ratio, "a value in [0, 1]")
  _check(c.noise.mode in ("defect_share", "train_share"), "noise.mode", c.noise.mode, "defect_share or train_share")
  _check(c.noise.on_shortage in ("fail", "cap"), "noise.on_shortage", c.noise.on_shortage, "fail or cap")
  _check(0 <= c.noise.val_fraction <= 1, "noise.val_fraction", c.noise.val_fraction,
         "a value in [0, 1] (1: the whole held-out set validates, no test set)")
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
  if c.backbone.name == "efficientnet_lite0" and c.backbone.weights_path:
    _check(os.path.isfile(c.backbone.weights_path), "backbone.weights_path", c.backbone.weights_path,
           "an existing EfficientNet-Lite0 .pth file, or empty for the packaged weights")
  if c.backbone.name == "alexnet" and c.backbone.weights_path != "random":
    _check(os.path.isfile(c.backbone.weights_path), "backbone.weights_path", c.backbone.weights_path,
           "a torchvision AlexNet .pth file (https://download.pytorch.org/models/alexnet-owt-7be5be79.pth)")
  for flag in ("flow.n_blocks", "flow.hidden", "train.meta_epochs", "train.sub_epochs", "train.batch_size",
               "train.n_views", "train.n_cached_views", "score.n_views", "maml.inner_steps",
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
  _check(_is_int(c.score.pixel_auroc_images) and c.score.pixel_auroc_images >= 0, "score.pixel_auroc_images",
         c.score.pixel_auroc_images, "an integer >= 0")
  _check(_is_int(c.maml.pretrain_epochs) and c.maml.pretrain_epochs >= 0, "maml.pretrain_epochs",
         c.maml.pretrain_epochs, "an integer >= 0")
  _check(c.maml.inner_update in ("sgd", "normalized"), "maml.inner_update", c.maml.inner_update,
         "sgd or normalized")
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
  _check(0 <= c.score.view_offset < 1, "score.view_offset", c.score.view_offset,
         "a value in [0, 1) (a fraction of the step between views; 0 is DifferNet's grid)")
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
  _check(c.refine.val_tolerance_se >= 0, "refine.val_tolerance_se", c.refine.val_tolerance_se, "a value >= 0")
  _check(_is_int(c.refine.patience) and c.refine.patience >= 1, "refine.patience", c.refine.patience,
         "a positive integer")
  if c.cache_dir:
    _writable("--config.cache_dir", c.cache_dir)


def check_workdir(workdir: str) -> None:
  """Fails before any training when the workdir cannot be written or the disk is nearly full."""
  if not workdir:
    raise ConfigError("--workdir is required: the folder where results.json, report.md and checkpoints go")
  _writable("--workdir", workdir)
  if not is_writer():
    return
  free = os.statvfs(workdir)
  free_mb = free.f_bavail * free.f_frsize / 2**20
  if free_mb < 200:
    raise ConfigError(f"--workdir={workdir}: only {free_mb:.0f} MiB free on its disk; a run needs at least 200 MiB")


# ------------------------------------------------------------------------------------------ feasibility

def smallest_fit_set(n_train: int, folds: int) -> int:
  """The fewest images a fold's fit set starts with: the training set less its largest fold (folds as equal as
  `permutation % folds` makes them, so the largest holds ceil(n / folds)); the whole set without folds."""
  return n_train - -(-n_train // folds) if folds > 1 else n_train


def fewest_kept(c, n_train: int) -> int:
  """The fewest images the cleaning can keep, by its removal caps (`refine.select_removals`)."""
  if c.method == "differnet" or n_train <= c.refine.min_kept:
    return n_train
  return max(c.refine.min_kept, n_train - int(math.floor(c.refine.max_remove_total * n_train)))


def _test_set_problem(c, split) -> str | None:
  """Why the test set cannot give an AUROC (it needs good and defective images), or None. An empty test set is
  no problem: clean mode (a user's folder cleaned whole, `data.test_fraction=0`) reports no test AUROC."""
  test, moved = split.test, split.n_injected
  if (test.n_defective and test.n_good) or not len(test):
    return None
  if not test.n_defective:
    if moved and not c.noise.overlap:
      how = (f"--config.noise.ratio={c.noise.ratio!r}" +
             (" with --config.noise.on_shortage=cap" if c.noise.on_shortage == "cap" else ""))
      return (f"{how} and noise.overlap=False move every defective test image ({moved}) into training: no "
              "defective test image is left to measure AUROC; lower --config.noise.ratio, or set "
              "--config.noise.overlap=True")
    if split.val.n_defective:
      return (f"--config.noise.val_fraction={c.noise.val_fraction!r} takes every defective test image "
              f"({split.val.n_defective}) for validation: none is left to measure AUROC; lower it")
    source = ("--config.data.defective_root is empty: the test set has no defective images to measure AUROC; "
              "point it at a folder of defective images" if c.data.name == "folder" else
              f"the dataset ({c.data.name}) has no defective test images to measure AUROC; check --config.data")
    return source
  return (f"the test set has no good images ({test.n_defective} defective) to measure AUROC; "
          + ("raise --config.data.test_fraction" if c.data.name in ("folder", "elpv") else
             "lower --config.noise.val_fraction") + " so that good images are left for testing")


def check_feasible(c, split) -> list[str]:
  """Every check that needs the data, made after the noise split and before any backbone runs.

  Raises FeasibilityError for a run that cannot finish: a test set without good or without defective images;
  a method that removes images with fewer training images than `refine.folds`; `maml.task_size` larger than
  the smallest fold's fit set (maml_iqr) or the fewest images the cleaning may keep (`train.init=meta`); an
  automatic threshold (`refine.auto_k_quantile`) without good validation images.

  Returns warnings for a run that finishes on weaker ground: a method that removes images with a validation
  set lacking good or defective images has no validation AUROC, so refinement runs to
  `refine.max_iterations` (or until nothing is removed) without its stopping rule. That is allowed, not
  refused: it is the paper's loop without early stopping, and a user's own folder may have no defects to
  validate with; the run says so in its log and in results.json (`warnings`). Likewise a flow-scored method
  without cross-fitting (`refine.folds=1`, what a user gets by switching `configs/folder.py` to maml_iqr alone).
  """
  problem = _test_set_problem(c, split)
  if problem:
    raise FeasibilityError(problem)
  n_train = len(split.train)
  removes = c.method != "differnet"
  if removes and n_train < c.refine.folds:
    raise FeasibilityError(f"--config.refine.folds={c.refine.folds}: the training set has only {n_train} images, "
                           "fewer than the folds it is split into; lower --config.refine.folds")
  if c.method == "maml_iqr":
    fit = smallest_fit_set(n_train, c.refine.folds)
    if c.maml.task_size > fit:
      raise FeasibilityError(
          f"--config.maml.task_size={c.maml.task_size}: a MAML task draws that many distinct images from a fold's "
          f"fit set, but with refine.folds={c.refine.folds} the smallest fit set of these {n_train} training "
          f"images holds {fit}; lower --config.maml.task_size to at most {fit}"
          + (" or lower --config.refine.folds" if c.refine.folds > 1 else ""))
  if c.method == "patch_iqr":
    from maml_iqr import patches  # noqa: PLC0415 - jax-heavy, needed only here
    if n_train < patches.K + 1:
      raise FeasibilityError(f"method=patch_iqr scores an image against its {patches.K}th nearest other training "
                             f"image, but the training set has only {n_train} images; use method=gaussian_iqr")
    problem = patches.table_problem(n_train, len(split.val), patches.recipe(c))
    if problem:
      raise FeasibilityError(problem)
  if c.train.init == "meta":
    fewest = fewest_kept(c, n_train)
    if c.maml.task_size > fewest:
      raise FeasibilityError(
          f"--config.maml.task_size={c.maml.task_size}: train.init=meta meta-trains the final detector on tasks "
          f"of that many kept images, but the cleaning may keep as few as {fewest}; lower --config.maml.task_size, "
          "raise --config.refine.min_kept, or set --config.train.init=fresh")
  val = split.val
  if removes and c.refine.auto_k_quantile > 0 and not val.n_good:
    raise FeasibilityError(
        f"--config.refine.auto_k_quantile={c.refine.auto_k_quantile!r} sets the threshold from good validation "
        f"images, but the validation set has none (noise.val_fraction={c.noise.val_fraction!r}); set "
        "--config.noise.val_fraction > 0, or --config.refine.auto_k_quantile=0 for the IQR rule")
  warnings = []
  if removes and not len(split.test) and not (val.n_good and val.n_defective):
    warnings.append(
        "clean mode (no test set) without labelled validation: refinement stops when the IQR rule removes nothing "
        f"or after refine.max_iterations={c.refine.max_iterations}; to measure it on validation AUROC (and let "
        "refine.val_tolerance_se stop it) and set the threshold by F1-max, give a folder of known-defective images "
        "(--config.data.defective_root) and hold out some good ones to validate with "
        "(--config.data.test_fraction=0.1 --config.noise.val_fraction=1)")
  elif removes and not (val.n_good and val.n_defective):
    warnings.append(
        f"no validation AUROC: the validation set has {val.n_good} good and {val.n_defective} defective images "
        f"(noise.val_fraction={c.noise.val_fraction!r}), so refine.val_tolerance_se cannot stop the refinement "
        f"(it runs to refine.max_iterations={c.refine.max_iterations} or until nothing is removed) and the "
        "detector's threshold is not set by F1-max; set --config.noise.val_fraction > 0 (and give the dataset "
        "defective images) for both")
  if removes and c.method not in ("gaussian_iqr", "patch_iqr") and c.refine.folds == 1:
    warnings.append(
        f"{c.method} with refine.folds=1: every image is scored by a flow fitted on it, which can learn it as "
        "normal; --config.refine.folds=2 scores each image by a flow that never saw it (the measured setting)")
  return warnings


# ------------------------------------------------------------------------------------------ command lines

def _override_paths(argv: list[str], flag: str) -> list[tuple[str, str]]:
  """(argument, dotted path) of every `--<flag>.a.b[=v]` override on a command line."""
  out = []
  for arg in argv:
    m = re.match(rf"--{re.escape(flag)}\.([^=]+)", arg)
    if m:
      out.append((arg.split("=", 1)[0], m.group(1)))
  return out


def unknown_override(config, argv: list[str], flag: str = "config") -> str | None:
  """A line naming the first `--config.x.y` override whose key does not exist in `config`, with the keys that
  do (and the closest one), or None when every key exists."""
  for arg, path in _override_paths(argv, flag):
    holder, walked = config, []
    for part in path.split("."):
      keys = list(holder.keys()) if hasattr(holder, "keys") else []
      if part not in keys:
        where = ".".join(walked) or flag
        close = difflib.get_close_matches(part, keys, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return (f"{arg}: {where} has no key {part!r}{hint}; its keys: {', '.join(sorted(keys)) or 'none'}")
      holder = holder[part]
      walked.append(part)
  return None


def _innermost_message(text: str) -> str:
  """The last line of a traceback embedded in a message ('pkg.SomeError: what' -> 'what'), or the first line."""
  lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
  if not lines:
    return text
  if any(ln.startswith("Traceback (most recent call last)") for ln in lines):
    last = lines[-1]
    m = re.match(r"^[\w.]+(Error|Exception): (.*)$", last)
    return m.group(2) if m else last
  return lines[0]


def flag_error_line(error: BaseException, argv: list[str], load_config=None, flag: str = "config") -> str:
  """One line for a command line that absl or ml_collections refused: an unknown override key is named with
  the keys that exist (`load_config(spec)` reads the config the spec names); a config file's own error
  (e.g. an unknown ':variant') is its message, without the traceback."""
  if load_config is not None:
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith(f"--{flag}=")), None)
    if spec:
      try:
        config = load_config(spec)
      except Exception as e:  # noqa: BLE001 - the config file itself is what failed: say so below
        return f"--{flag}={spec}: {_innermost_message(str(e))}"
      unknown = unknown_override(config, argv, flag)
      if unknown:
        return unknown
  return _innermost_message(str(error))


def load_config_file(spec: str):
  """`get_config(arg)` of a config spec 'path/to/config.py[:arg]', as `--config=` reads it."""
  import importlib.util  # noqa: PLC0415

  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"{path}: config file not found")
  module_spec = importlib.util.spec_from_file_location("experiment_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()  # sweep configs take no argument
