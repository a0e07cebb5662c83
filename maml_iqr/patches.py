"""Patch-level nearest-neighbour cleaning scores (`patch_iqr`): a small defect moves an image's pooled vector
little, but one of its patches stands far from every patch of the good images.

Patch features: EfficientNet-Lite0's stride-8 and stride-16 maps of one unrotated view, each averaged over 3x3
neighbourhoods (PatchCore's local aggregation), the stride-8 map pooled 2x2 to the 14x14 grid: 196 patches of
40 + 112 dimensions per image. A patch scores its distance to the nearest patch of the K-th nearest memory image
(K = 3: a defect that one or two other injected images share still stands out), an image the mean of its 5
highest patch scores. Chosen among 14 variants on Magnetic Tile and elpv mono, confirmed on elpv poly
(benchmarks/patch_scores.py; README, "Patch-level scores").

The distance from every patch of image i to its nearest patch of image j, `D[i, p, j]`, is computed once per run
for the training set and for the validation images against it; a refinement iteration then only reduces D over
the columns of the images kept (the memory), and an image never counts as its own neighbour (D[i, :, i] = inf).
"""
from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from maml_iqr import features as features_lib
from maml_iqr.common import log
from maml_iqr.models import efficientnet_lite as enet
from maml_iqr.workdir import raise_if_stopped

GRID = 14
STAGE_BLOCKS = ("block4", "block10")  # stride8, stride16
PATCH_DIM = enet.stage_dim("stride8") + enet.stage_dim("stride16")
K, TOP = 3, 5
MAX_TABLE_BYTES = 8 << 30  # the distance tables live in host memory: refuse what does not fit a small host


def table_problem(n_train: int, n_val: int) -> str:
  """Why the run's distance tables (N x 196 x (N + M) float32) would not fit in host memory, or ''."""
  need = 4 * GRID * GRID * n_train * (n_train + n_val)
  if need <= MAX_TABLE_BYTES:
    return ""
  return (f"method=patch_iqr: {n_train} training and {n_val} validation images need {need / 2**30:.1f} GiB of patch "
          f"distance tables (at most {MAX_TABLE_BYTES / 2**30:.0f} GiB); clean at most about "
          f"{int(np.sqrt(MAX_TABLE_BYTES / (4 * GRID * GRID)))} images at a time, or use method=gaussian_iqr")


def _local_mean(m):
  return jax.lax.reduce_window(m, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), "SAME") / 9.0


def patch_features(params, images):
  """(B, H, W, 3) -> (B, 196 * 152): stride-8 and stride-16 maps on the 14x14 grid, locally averaged."""
  maps = enet._stage_maps(params, images, set(STAGE_BLOCKS))
  s8 = _local_mean(maps[STAGE_BLOCKS[0]])
  b, h, w, c = s8.shape
  s8 = s8.reshape(b, GRID, h // GRID, GRID, w // GRID, c).mean((2, 4))
  return jnp.concatenate([s8, _local_mean(maps[STAGE_BLOCKS[1]])], -1).reshape(b, -1)


def extract(backbone, bparams, images: np.ndarray, dtype: str = "float32") -> np.ndarray:
  """(N, S, S, 3) uint8 -> (N, 196, 152) patch features of each image's unrotated view."""
  patchy = dataclasses.replace(backbone, feature_dim=GRID * GRID * PATCH_DIM, features=patch_features)
  views = features_lib.fixed_view_params(len(images), 1, 0.0)
  feats = features_lib.extract(patchy, bparams, images, views, label="patches", dtype=dtype)
  return feats[:, 0].reshape(len(images), GRID * GRID, PATCH_DIM)


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


def nearest_patch_distances(queries: np.ndarray, memory: np.ndarray | None, label: str,
                            tile: int = 16) -> np.ndarray:
  """(Q, P, C) queries against (N, P, C) memory images -> (Q, P, N) float32: D[i, p, j], patch p of query i to its
  nearest patch of memory image j. `memory=None`: the queries against themselves, where one matrix of patch
  distances gives both D[i, :, j] and D[j, :, i], so only half the image pairs are computed. Fixed tile shapes
  (the arrays padded), so one compile serves a run."""
  same = memory is None
  memory = queries if same else memory
  pad = lambda a: jnp.asarray(np.concatenate([a, np.zeros((-len(a) % tile,) + a.shape[1:], a.dtype)]))
  q_dev, m_dev = pad(queries), (None if same else pad(memory))
  m_dev = q_dev if same else m_dev
  nq, nm = len(queries), len(memory)
  out = np.empty((q_dev.shape[0], queries.shape[1], m_dev.shape[0]), np.float32)
  blocks = [(i, j) for i in range(0, len(q_dev), tile) for j in range(i if same else 0, len(m_dev), tile)]
  start = last = time.time()
  for n_done, (i, j) in enumerate(blocks, 1):
    raise_if_stopped()
    rows, cols = _tile(q_dev, m_dev, i, j, tile)
    out[i:i + tile, :, j:j + tile] = np.asarray(rows)
    if same and j != i:
      out[j:j + tile, :, i:i + tile] = np.asarray(cols)
    if time.time() - last > 30:
      last = time.time()
      log(f"patch distances {label}: {n_done}/{len(blocks)} blocks, "
          f"{(last - start) / n_done * (len(blocks) - n_done):.0f} s left")
  return out[:nq, :, :nm]


def distance_tables(train: np.ndarray, val: np.ndarray) -> dict[str, np.ndarray]:
  """Patch features (N, P, C) of the training and (M, P, C) of the validation images -> the scorer inputs
  {'train_patch_d' (N, P, N) with D[i, :, i] = inf, 'val_patch_d' (M, P, N)}."""
  problem = table_problem(len(train), len(val))
  if problem:  # config_check.check_feasible refuses such a run before any backbone runs
    raise MemoryError(problem)
  d = nearest_patch_distances(train, None, "training images")
  d[np.arange(len(d)), :, np.arange(len(d))] = np.inf  # an image is never its own neighbour
  return {"train_patch_d": d, "val_patch_d": nearest_patch_distances(val, train, "validation images")}


def image_scores(d: np.ndarray, k: int = K, top: int = TOP) -> np.ndarray:
  """d (n, P, m): distances to the m memory images -> (n,): the mean of each image's `top` highest patch
  scores, a patch's score being its distance to the k-th nearest memory image."""
  patch = np.partition(d, k - 1, axis=-1)[..., k - 1]
  return np.sort(patch, -1)[:, -top:].mean(-1)
