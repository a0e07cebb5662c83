"""Image transforms as pure JAX functions, so views can be made inside jitted, vmapped scoring code.

Images are float32 in [0, 1], channels last: `(..., H, W, C)` for the colour/normalise/resize functions
(a single HWC image or an NHWC batch), HWC for `rotate` and `random_view` (vmap them for batches; `views`
does this for you). Angles and factors may be traced values: nothing branches on them in Python.

Conventions follow torchvision, which DifferNet's reference code uses:
- `rotate`: a positive angle turns the content counter-clockwise as displayed (row 0 at the top), about the
  image centre ((H - 1) / 2, (W - 1) / 2) in pixel indices; the output keeps the input size, and points that
  come from outside the image get `fill`. Multiples of 90 degrees on a square image equal `np.rot90`.
- `adjust_*`: torchvision's blends; greyscale is 0.299 R + 0.587 G + 0.114 B.
- `random_view`: rotation first, then brightness, contrast, saturation in that fixed order (torchvision's
  ColorJitter shuffles the order; a fixed order keeps a view a plain function of its key).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy import ndimage

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_GREY_WEIGHTS = (0.299, 0.587, 0.114)


def _clip(x):
  return jnp.clip(x, 0.0, 1.0)


def resize(images, size, method: str = "bilinear", antialias: bool = True):
  """Resizes the H, W axes of `(..., H, W, C)` to `size` (int for square, or (h, w)).

  `method` is "bilinear" or "nearest" (half-pixel centres: halving picks odd rows/columns, as PIL does).
  Bilinear down-sampling is antialiased by default, which is closer to PIL's resize than plain sampling.
  """
  if method not in ("bilinear", "nearest"):
    raise ValueError(f"resize method must be 'bilinear' or 'nearest', got {method!r}")
  h, w = (size, size) if isinstance(size, int) else tuple(size)
  images = jnp.asarray(images, jnp.float32)
  shape = images.shape[:-3] + (h, w, images.shape[-1])
  return _clip(jax.image.resize(images, shape, method=method, antialias=antialias))


def grey_to_rgb(images):
  """Repeats a single channel three times, for backbones that want RGB; RGB input passes through."""
  images = jnp.asarray(images, jnp.float32)
  if images.shape[-1] == 3:
    return images
  if images.shape[-1] != 1:
    raise ValueError(f"grey_to_rgb expects 1 or 3 channels, got {images.shape[-1]}")
  return jnp.repeat(images, 3, axis=-1)


def imagenet_normalize(images):
  """Standardises RGB with ImageNet's mean and std, as the pretrained backbones expect (not clipped)."""
  images = jnp.asarray(images, jnp.float32)
  mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
  std = jnp.asarray(IMAGENET_STD, jnp.float32)
  return (images - mean) / std


def _greyscale(images):
  """Luma (..., H, W, 1); a single-channel image is its own greyscale."""
  if images.shape[-1] == 1:
    return images
  return jnp.tensordot(images, jnp.asarray(_GREY_WEIGHTS, images.dtype), axes=([-1], [0]))[..., None]


def _blend(image, other, factor):
  return _clip(factor * image + (1.0 - factor) * other)


def adjust_brightness(image, factor):
  """Scales intensities by `factor` (blend with black)."""
  image = jnp.asarray(image, jnp.float32)
  return _blend(image, jnp.zeros_like(image), factor)


def adjust_contrast(image, factor):
  """Blends with the mean of the greyscale image (one mean per image over its H, W)."""
  image = jnp.asarray(image, jnp.float32)
  mean = jnp.mean(_greyscale(image), axis=(-3, -2, -1), keepdims=True)
  return _blend(image, mean, factor)


def adjust_saturation(image, factor):
  """Blends with the per-pixel greyscale; a single-channel image is unchanged."""
  image = jnp.asarray(image, jnp.float32)
  return _blend(image, _greyscale(image), factor)


def rotate(image, angle_degrees, fill: float = 0.0):
  """Rotates an HWC image counter-clockwise (as displayed) by any angle about its centre, bilinearly."""
  image = jnp.asarray(image, jnp.float32)
  h, w, _ = image.shape
  theta = jnp.deg2rad(jnp.asarray(angle_degrees, jnp.float32))
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
  rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
  # Output point (x, y) with y pointing up; sample the input at its rotation by -theta.
  x, y = cols - cx, cy - rows
  x_in = cos * x + sin * y
  y_in = -sin * x + cos * y
  src_rows, src_cols = cy - y_in, x_in + cx

  def sample(channel):
    return ndimage.map_coordinates(channel, [src_rows, src_cols], order=1, mode="constant", cval=fill)

  return _clip(jax.vmap(sample, in_axes=-1, out_axes=-1)(image))


def _factor(key, strength):
  """A jitter factor uniform in [max(0, 1 - strength), 1 + strength]; exactly 1 when strength is 0."""
  strength = jnp.asarray(strength, jnp.float32)
  return jax.random.uniform(key, (), jnp.float32, jnp.maximum(0.0, 1.0 - strength), 1.0 + strength)


def random_view(key, image, max_angle=180.0, brightness=0.0, contrast=0.0, saturation=0.0, fill: float = 0.0):
  """One random view of an HWC image: rotation uniform in [-max_angle, max_angle], then colour jitter."""
  k_angle, k_bright, k_contrast, k_sat = jax.random.split(key, 4)
  max_angle = jnp.asarray(max_angle, jnp.float32)
  angle = jax.random.uniform(k_angle, (), jnp.float32, -max_angle, max_angle)
  view = rotate(image, angle, fill)
  view = adjust_brightness(view, _factor(k_bright, brightness))
  view = adjust_contrast(view, _factor(k_contrast, contrast))
  return adjust_saturation(view, _factor(k_sat, saturation))


def fixed_rotations(image, n: int, fill: float = 0.0):
  """The n views rotated by k * 360 / n, k = 0..n-1, (n, H, W, C): DifferNet's evaluation views."""
  angles = jnp.arange(n, dtype=jnp.float32) * (360.0 / n)
  return jax.vmap(lambda a: rotate(image, a, fill))(angles)


def views(key, images, n: int, max_angle=180.0, brightness=0.0, contrast=0.0, saturation=0.0, fill: float = 0.0):
  """n random views of each image of an NHWC batch, (B, n, H, W, C); each view has its own key."""
  keys = jax.random.split(key, (images.shape[0], n))

  def one(k, image):
    return random_view(k, image, max_angle, brightness, contrast, saturation, fill)

  return jax.vmap(lambda ks, image: jax.vmap(lambda k: one(k, image))(ks))(keys, images)
