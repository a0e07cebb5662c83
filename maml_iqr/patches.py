"""Patch-level nearest-neighbour cleaning scores (`patch_iqr`): a small defect moves an image's pooled vector
little, but one of its patches stands far from every patch of the good images.

Patch features: EfficientNet-Lite0's stride-8 and stride-16 maps of one unrotated view, each averaged over 3x3
neighbourhoods (PatchCore's local aggregation), the stride-8 map pooled 2x2 to the 14x14 grid: 196 patches of
40 + 112 dimensions per image. A patch scores its distance to the nearest patch of the K-th nearest memory image
(K = 3: a defect that one or two other injected images share still stands out), an image the mean of its 5
highest patch scores. Chosen among 14 variants on Magnetic Tile and elpv mono, confirmed on elpv poly
(benchmarks/patch_scores.py; README, "Patch-level scores"); six other feature recipes measured and not kept
(benchmarks/patch_recipes.py). The recipe is the config's `patch` section (`Recipe`, `recipe(config)`).

The distance from every patch of image i to its nearest patch of image j, `D[i, p, j]`, is computed once per run
for the training set and for the validation images against it; a refinement iteration then only reduces D over
the columns of the images kept (the memory), and an image never counts as its own neighbour (D[i, :, i] = inf),
nor, where the dataset knows which images show one object (`Dataset.groups`), does another image of its object.

D is cached (`cached_distances`): one file per dataset, category and settings in the run's cache folder holds the patch
features and D of every image some run used, keyed by pixel digest as the feature cache is. Another seed or
noise level, a rerun at another k, or a run resumed after a kill computes only the pairs it has not seen.
"""
from __future__ import annotations

import dataclasses
import fcntl
import functools
import json
import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from maml_iqr import feature_cache
from maml_iqr import features as features_lib
from maml_iqr.common import log
from maml_iqr.io import write_atomic
from maml_iqr.models import efficientnet_lite as enet
from maml_iqr.workdir import raise_if_stopped

K, TOP = 3, 5
MAX_TABLE_BYTES = 8 << 30  # the distance tables live in host memory: refuse what does not fit a small host


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How an image becomes patches: each backbone stage map averaged over `local` x `local` neighbourhoods
  (PatchCore's local aggregation; 1: none), then brought to a `grid` x `grid` grid by `pool` ('mean' or 'max')
  where it is finer and repeated where it is coarser; the stages' channels concatenated. `input_size`: the images'
  side in pixels (0: the backbone's own)."""
  stages: tuple[str, ...] = ("block4", "block10")  # stride 8, stride 16
  grid: int = 14
  local: int = 3
  pool: str = "mean"
  input_size: int = 0

  @property
  def patches(self) -> int:
    return self.grid * self.grid

  @property
  def dim(self) -> int:
    return sum(enet.stage_dim(s) for s in self.stages)

  def side(self, backbone_size: int) -> int:
    """The images' side in pixels for a backbone whose own input side is `backbone_size`."""
    return self.input_size or backbone_size


RECIPE = Recipe()  # configs/base.py's `patch` section; chosen in benchmarks/patch_scores.py and patch_recipes.py


def recipe(config) -> Recipe:
  """The recipe a config's `patch` section names."""
  p = config.patch
  return Recipe(tuple(p.stages), int(p.grid), int(p.local), str(p.pool), int(p.input_size))


def table_problem(n_train: int, n_val: int, recipe: Recipe = RECIPE) -> str:
  """Why the run's distance tables (N x patches x (N + M) float32) would not fit in host memory, or ''."""
  need = 4 * recipe.patches * n_train * (n_train + n_val)
  if need <= MAX_TABLE_BYTES:
    return ""
  return (f"method=patch_iqr: {n_train} training and {n_val} validation images need {need / 2**30:.1f} GiB of patch "
          f"distance tables (at most {MAX_TABLE_BYTES / 2**30:.0f} GiB); clean at most about "
          f"{int(np.sqrt(MAX_TABLE_BYTES / (4 * recipe.patches)))} images at a time, or use method=gaussian_iqr")


def _to_grid(m, recipe: Recipe):
  """(B, h, w, C) stage map -> (B, grid, grid, C)."""
  if recipe.local > 1:
    m = jax.lax.reduce_window(m, 0.0, jax.lax.add, (1, recipe.local, recipe.local, 1), (1, 1, 1, 1),
                              "SAME") / recipe.local ** 2
  b, h, w, c = m.shape
  g = recipe.grid
  if h % g == 0 and w % g == 0:
    m = m.reshape(b, g, h // g, g, w // g, c)
    return m.mean((2, 4)) if recipe.pool == "mean" else m.max((2, 4))
  if g % h == 0 and g % w == 0:
    return jnp.repeat(jnp.repeat(m, g // h, 1), g // w, 2)
  raise ValueError(f"patch recipe: a {h}x{w} stage map does not divide into or repeat onto a {g}x{g} grid")


def patch_features(params, images, recipe: Recipe = RECIPE):
  """(B, H, W, 3) -> (B, patches * dim): the recipe's stage maps on its grid."""
  maps = enet._stage_maps(params, images, set(recipe.stages))
  grids = [_to_grid(maps[s], recipe) for s in recipe.stages]
  return jnp.concatenate(grids, -1).reshape(len(images), -1)


def extract(backbone, bparams, images: np.ndarray, dtype: str = "float32", recipe: Recipe = RECIPE) -> np.ndarray:
  """(N, S, S, 3) uint8 -> (N, patches, dim) patch features of each image's unrotated view."""
  size = recipe.side(backbone.input_size)
  if images.shape[1:3] != (size, size):
    raise ValueError(f"patch recipe {recipe} expects {size}x{size} images, got {images.shape[1]}x{images.shape[2]}")
  patchy = dataclasses.replace(backbone, feature_dim=recipe.patches * recipe.dim,
                               features=functools.partial(patch_features, recipe=recipe))
  views = features_lib.fixed_view_params(len(images), 1, 0.0)
  feats = features_lib.extract(patchy, bparams, images, views, label="patches", dtype=dtype)
  return feats[:, 0].reshape(len(images), recipe.patches, recipe.dim)


@functools.partial(jax.jit, static_argnames="tile")
def _tile(queries, memory, i0, j0, tile: int):
  """Images i0.. and j0.. (`tile` each) of the padded (N, P, C) arrays -> (rows (tile, P, tile): patch p of query
  image i to its nearest patch of memory image j; cols (tile, P, tile): patch q of memory image j to its nearest
  patch of query image i), both from one matrix of squared distances."""
  q = jax.lax.dynamic_slice_in_dim(queries, i0, tile)
  m = jax.lax.dynamic_slice_in_dim(memory, j0, tile)
  p, c = q.shape[1:]
  qf, mf = q.reshape(-1, c), m.reshape(-1, c)
  d2 = (qf ** 2).sum(1)[:, None] + (mf ** 2).sum(1)[None] - 2.0 * qf @ mf.T
  d2 = d2.reshape(tile, p, tile, p)
  dist = lambda x: jnp.sqrt(jnp.maximum(x, 0.0))  # after the min: the root is monotone
  return dist(d2.min(-1)), jnp.moveaxis(dist(d2.min(1)), 0, -1)


def _pairs(queries: np.ndarray, memory: np.ndarray | None, label: str,
           tile: int = 16) -> tuple[np.ndarray, np.ndarray | None]:
  """(Q, P, C) queries and (N, P, C) memory images -> (D[query i, p, memory j] (Q, P, N), D[memory j, q, query i]
  (N, P, Q)), both from one matrix of patch distances per image pair. `memory=None`: the queries against
  themselves, where that matrix gives D[i, :, j] and D[j, :, i], so only half the image pairs are computed (and
  the second table is the first). Fixed tile shapes (the arrays padded), so one compile serves a run."""
  same = memory is None
  memory = queries if same else memory
  pad = lambda a: jnp.asarray(np.concatenate([a, np.zeros((-len(a) % tile,) + a.shape[1:], a.dtype)]))
  q_dev = pad(queries)
  m_dev = q_dev if same else pad(memory)
  nq, nm = len(queries), len(memory)
  out = np.empty((q_dev.shape[0], queries.shape[1], m_dev.shape[0]), np.float32)
  back = None if same else np.empty((m_dev.shape[0], queries.shape[1], q_dev.shape[0]), np.float32)
  blocks = [(i, j) for i in range(0, len(q_dev), tile) for j in range(i if same else 0, len(m_dev), tile)]
  start = last = time.time()
  for n_done, (i, j) in enumerate(blocks, 1):
    raise_if_stopped()
    rows, cols = _tile(q_dev, m_dev, i, j, tile)
    out[i:i + tile, :, j:j + tile] = np.asarray(rows)
    if not same:
      back[j:j + tile, :, i:i + tile] = np.asarray(cols)
    elif j != i:
      out[j:j + tile, :, i:i + tile] = np.asarray(cols)
    if time.time() - last > 30:
      last = time.time()
      log(f"patch distances {label}: {n_done}/{len(blocks)} blocks, "
          f"{(last - start) / n_done * (len(blocks) - n_done):.0f} s left")
  return out[:nq, :, :nm], (None if same else back[:nm, :, :nq])


def nearest_patch_distances(queries: np.ndarray, memory: np.ndarray | None, label: str,
                            tile: int = 16) -> np.ndarray:
  """(Q, P, C) queries against (N, P, C) memory images -> (Q, P, N) float32: D[i, p, j], patch p of query i to its
  nearest patch of memory image j (`memory=None`: the queries against themselves, half the pairs computed)."""
  return _pairs(queries, memory, label, tile)[0]


def table_problem_or_raise(n_train: int, n_val: int, recipe: Recipe = RECIPE) -> None:
  problem = table_problem(n_train, n_val, recipe)
  if problem:  # config_check.check_feasible refuses such a run before any backbone runs
    raise MemoryError(problem)


def _grow(feats: np.ndarray, dist: np.ndarray, new: np.ndarray) -> np.ndarray:
  """D (n, P, n) of n images with features `feats` (n, P, C) -> D of those and `new` (m, P, C) images, (n + m, P,
  n + m): only the pairs with a new image computed."""
  n, m = len(feats), len(new)
  out = np.empty((n + m, new.shape[1], n + m), np.float32)
  out[:n, :, :n] = dist
  if n:
    out[n:, :, :n], out[:n, :, n:] = _pairs(new, feats, "new images against cached ones")
  out[n:, :, n:] = nearest_patch_distances(new, None, "new images")
  return out


def split_tables(dist: np.ndarray, n_train: int, groups=None) -> dict[str, np.ndarray]:
  """D over the training then the validation images -> the scorer inputs {'train_patch_d' (N, P, N) with
  D[i, :, i] = inf, 'val_patch_d' (M, P, N)}: views of `dist`, which is overwritten there.

  `groups` (one name per row of `dist`, or None): the object each image shows, where one object has several
  images (Magnetic Tile's tiles under six lights, `Dataset.groups`). Then no image of the same object is a
  neighbour either (D = inf): a defective tile's other captures show the same defect and would vouch for it
  (README, "Captures of one object are not each other's neighbours")."""
  train_d = dist[:n_train, :, :n_train]
  train_d[np.arange(n_train), :, np.arange(n_train)] = np.inf  # never its own neighbour
  if groups is not None:
    groups = np.asarray(groups)
    if len(groups) != len(dist):
      raise ValueError(f"{len(groups)} group names for {len(dist)} images")
    same = groups[:, None] == groups[None, :n_train]
    rows, cols = np.nonzero(same)
    dist[rows, :, cols] = np.inf
    others = n_train - same[:n_train].sum(1)
    if others.min() < K:
      raise ValueError(f"training image {int(others.argmin())} has {int(others.min())} training images of other "
                       f"objects; patch_iqr scores against the {K}th nearest: give more objects")
  return {"train_patch_d": train_d, "val_patch_d": dist[n_train:, :, :n_train]}


def distance_tables(train: np.ndarray, val: np.ndarray) -> dict[str, np.ndarray]:
  """Patch features (N, P, C) of the training and (M, P, C) of the validation images -> the scorer inputs
  (`split_tables`), computed without a cache."""
  table_problem_or_raise(len(train), len(val))
  dist = _grow(train[:0], np.zeros((0, train.shape[1], 0), np.float32), np.concatenate([train, val]))
  return split_tables(dist, len(train))


FORMAT = 1  # bump when the table layout or the way a recipe is computed changes: older files are then not read


def cache_settings(config, backbone, recipe: Recipe = RECIPE) -> dict:
  """Everything a cached patch feature or distance depends on besides the image itself."""
  b = config.backbone
  return {"format": FORMAT, "backbone": b.name, "weights": feature_cache.weights_identity(b.name, b.weights_path),
          "dtype": b.dtype, "input_size": recipe.side(backbone.input_size), "stages": list(recipe.stages),
          "grid": recipe.grid, "local_mean": recipe.local, "pool": recipe.pool}


def cache_path(cache_dir: str, name: str, spec: dict) -> str:
  """One file per dataset and category (`name`): a table grows with the square of the images it holds."""
  name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
  return os.path.join(cache_dir, f"patch_distances_{name}_{feature_cache.settings_key(spec)}.npz")


def _read_cache(path: str, spec: dict, recipe: Recipe) -> dict | None:
  if not os.path.exists(path):
    return None
  try:
    with np.load(path) as f:
      store = {k: f[k] for k in ("settings", "digests", "feats", "dist")}
    stored = json.loads(str(store.pop("settings")))
    if stored != spec:
      raise ValueError(f"its settings {stored} are not this run's {spec}")
    n = len(store["digests"])
    if store["feats"].shape != (n, recipe.patches, recipe.dim) or store["dist"].shape != (n, recipe.patches, n):
      raise ValueError(f"its arrays {[a.shape for a in store.values()]} do not fit {n} images")
    return store
  except Exception as e:  # noqa: BLE001 - a damaged cache is recomputed, never trusted
    log(f"WARNING: patch distance cache {path} is unusable ({type(e).__name__}: {e}); recomputing it")
    return None


def cached_distances(config, backbone, bparams, images: np.ndarray, name: str,
                     recipe: Recipe = RECIPE) -> tuple[np.ndarray, np.ndarray]:
  """(D (n, P, n), patch features (n, P, C)) of `images`, rows and columns in their order, read from the cache in
  `config.cache_dir` where their pixels match and computed (and added to it) where not. The cache is locked for
  the whole call: a second run of a sweep waits, then reuses what the first computed instead of computing it too.
  When the cache would outgrow `MAX_TABLE_BYTES`, it starts again from these images."""
  spec = cache_settings(config, backbone, recipe)
  path = cache_path(config.cache_dir, name, spec)
  digests = [feature_cache.image_digest(im) for im in images]
  os.makedirs(config.cache_dir, exist_ok=True)
  with open(path + ".lock", "a") as lock:
    waited = time.time()
    fcntl.flock(lock, fcntl.LOCK_EX)  # every process of a run waits: they all read the same tables
    if time.time() - waited > 1:
      log(f"patch distance cache {path}: waited {time.time() - waited:.0f} s for another run to finish with it")
    store = _read_cache(path, spec, recipe) or {"digests": np.zeros((0, 20), np.uint8),
                                                "feats": np.zeros((0, recipe.patches, recipe.dim), np.float32),
                                                "dist": np.zeros((0, recipe.patches, 0), np.float32)}
    row = {d.tobytes(): r for r, d in enumerate(store["digests"])}
    missing = list(dict.fromkeys(d for d in digests if d not in row))  # a duplicate image computed once
    if not missing:
      log(f"patch distances from cache {path} ({len(images)} images)")
    else:
      if 4 * recipe.patches * (len(row) + len(missing)) ** 2 > MAX_TABLE_BYTES:
        log(f"patch distance cache {path}: {len(row)} cached and {len(missing)} new images would exceed "
            f"{MAX_TABLE_BYTES / 2**30:.0f} GiB; starting it again from this run's images")
        keep = np.asarray(sorted({row[d] for d in digests if d in row}), np.int64)
        store = {"digests": store["digests"][keep], "feats": store["feats"][keep],
                 "dist": store["dist"][keep][:, :, keep]}
      log(f"patch features and distances: {len(missing)} of {len(images)} images not in the cache; computing them")
      where = {d: i for i, d in enumerate(digests)}
      new = extract(backbone, bparams, images[np.asarray([where[d] for d in missing])], spec["dtype"], recipe)
      store = {"digests": np.concatenate([store["digests"],
                                          np.frombuffer(b"".join(missing), np.uint8).reshape(-1, 20)]),
               "feats": np.concatenate([store["feats"], new]), "dist": _grow(store["feats"], store["dist"], new)}
      write_atomic(path, lambda f: np.savez(f, settings=np.asarray(json.dumps(spec, sort_keys=True)), **store))
  row = {d.tobytes(): r for r, d in enumerate(store["digests"])}
  rows = np.asarray([row[d] for d in digests], np.int64)
  return store["dist"][rows][:, :, rows], store["feats"][rows]


def cached_tables(config, backbone, bparams, train_images: np.ndarray, val_images: np.ndarray,
                  name: str, groups=None) -> dict[str, np.ndarray]:
  """`distance_tables` of the training and validation images, with the config's recipe, through the cache
  (`cached_distances`); `groups` as `split_tables`'."""
  r = recipe(config)
  table_problem_or_raise(len(train_images), len(val_images), r)
  dist, _ = cached_distances(config, backbone, bparams, np.concatenate([train_images, val_images]), name, r)
  return split_tables(dist, len(train_images), groups)


def image_scores(d: np.ndarray, k: int = K, top: int = TOP) -> np.ndarray:
  """d (n, P, m): distances to the m memory images -> (n,): the mean of each image's `top` highest patch
  scores, a patch's score being its distance to the k-th nearest memory image."""
  patch = np.partition(d, k - 1, axis=-1)[..., k - 1]
  return np.sort(patch, -1)[:, -top:].mean(-1)
