"""Backbone features of transformed views, computed once and cached: the extractor is frozen.

A view is described by 4 numbers (rotation in degrees, brightness, contrast, saturation factors), so the
cached path and the recompute-every-step path can be fed the very same views.
"""
from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from maml_iqr.common import log
from maml_iqr.data import transforms
from maml_iqr.workdir import raise_if_stopped



def random_view_params(rng: np.random.Generator, n_images: int, n_views: int, max_angle: float,
                       brightness: float, contrast: float, saturation: float) -> np.ndarray:
  """(n_images, n_views, 4) random views: angle uniform in [-max_angle, max_angle], factors in [1-s, 1+s]."""
  shape = (n_images, n_views)
  return np.stack([rng.uniform(-max_angle, max_angle, shape),
                   rng.uniform(1 - brightness, 1 + brightness, shape),
                   rng.uniform(1 - contrast, 1 + contrast, shape),
                   rng.uniform(1 - saturation, 1 + saturation, shape)], -1).astype(np.float32)


def fixed_view_params(n_images: int, n_views: int, offset: float, brightness: float = 0.0, contrast: float = 0.0,
                      saturation: float = 0.0) -> np.ndarray:
  """The evaluation views: rotations by (k + offset) * 360 / n_views (DifferNet's grid at offset 0; the default
  0.5 turns it by half a step, so that no view is axis-aligned: `score.view_offset` in configs/base.py says why).
  With colour strengths > 0, view k also takes brightness, contrast and saturation factors from
  {1, 1 + s, 1 - s} in a fixed pattern, so the score averages over the same transformation set as training."""
  k = np.arange(n_views)
  step = np.array([0.0, 1.0, -1.0])  # view 0 keeps the colours
  p = np.stack([(k + offset) * 360.0 / n_views, 1 + brightness * step[k % 3], 1 + contrast * step[k // 3 % 3],
                1 + saturation * step[k // 9 % 3]], -1).astype(np.float32)
  return np.broadcast_to(p, (n_images, n_views, 4)).copy()


def apply_view(image: jax.Array, p: jax.Array) -> jax.Array:
  """One view of one float [0, 1] HWC image: rotate, then colour."""
  x = transforms.rotate(image, p[0])
  x = transforms.adjust_brightness(x, p[1])
  x = transforms.adjust_contrast(x, p[2])
  return transforms.adjust_saturation(x, p[3])


def view_features(features_fn, params, images: jax.Array, view_params: jax.Array,
                  dtype=jnp.float32) -> jax.Array:
  """(B, H, W, 3) uint8 images and (B, V, 4) views -> (B, V, D) float32 features.

  `dtype=jnp.bfloat16` runs the backbone in bf16 (params and activations), for accelerators with fast bf16
  matrix units; the views are made in float32 and the features returned in float32.
  """
  x = images.astype(jnp.float32) / 255.0
  views = jax.vmap(lambda im, ps: jax.vmap(lambda p: apply_view(im, p))(ps))(x, view_params)
  b, v = views.shape[:2]
  params = jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, params)
  feats = features_fn(params, views.reshape((b * v,) + views.shape[2:]).astype(dtype))
  return feats.astype(jnp.float32).reshape(b, v, -1)


@functools.lru_cache(maxsize=None)
def _jitted(features_fn, dtype: str):
  return jax.jit(functools.partial(view_features, features_fn, dtype=jnp.dtype(dtype)))


def extract(backbone, params, images: np.ndarray, view_params: np.ndarray, batch_images: int = 8,
            log_every: float = 30.0, label: str = "", dtype: str = "float32") -> np.ndarray:
  """Features of every view of every image, in fixed-size batches (padded) so one compile serves all."""
  n, v = view_params.shape[:2]
  out = np.zeros((n, v, backbone.feature_dim), np.float32)
  fn = _jitted(backbone.features, dtype)
  last = start = time.time()
  for i in range(0, n, batch_images):
    raise_if_stopped()
    idx = np.arange(i, i + batch_images) % n  # pad the last batch by wrapping
    feats = np.asarray(fn(params, jnp.asarray(images[idx]), jnp.asarray(view_params[idx])))
    k = min(batch_images, n - i)
    out[i:i + k] = feats[:k]
    if time.time() - last > log_every:
      last = time.time()
      rate = (i + k) * v / (last - start)
      log(f"features {label}: {i + k}/{n} images ({rate:.0f} views/s, "
          f"{(n - i - k) * v / max(rate, 1e-9):.0f} s left)")
  return out
