"""Transforms against known values: np.rot90, hand-computed pixels, and loop/jit equivalence."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maml_iqr.data import transforms as T

ATOL = 1e-5
SQRT2 = np.sqrt(2.0)


def _image(h=5, w=5, c=3, seed=0):
  return np.random.default_rng(seed).random((h, w, c)).astype(np.float32)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rotate_multiples_of_90_equal_rot90(k):
  image = _image()
  np.testing.assert_allclose(T.rotate(image, 90.0 * k), np.rot90(image, k), atol=ATOL)


def test_rotate_positive_is_counter_clockwise():
  image = np.zeros((3, 3, 1), np.float32)
  image[0, 2] = 1.0  # top-right corner
  out = np.asarray(T.rotate(image, 90.0))[..., 0]
  assert out[0, 0] == pytest.approx(1.0, abs=ATOL)  # moved to top-left
  assert out.sum() == pytest.approx(1.0, abs=ATOL)


def test_rotate_180_non_square():
  image = _image(4, 6)
  np.testing.assert_allclose(T.rotate(image, 180.0), image[::-1, ::-1], atol=ATOL)


@pytest.mark.parametrize("angle", [0.0, 360.0, -360.0])
def test_rotate_full_turn_is_identity(angle):
  image = _image()
  np.testing.assert_allclose(T.rotate(image, angle), image, atol=ATOL)


def test_rotate_45_square_becomes_diamond():
  image = np.zeros((7, 7, 1), np.float32)
  image[2:5, 2:5] = 1.0  # 3x3 square about the centre (3, 3)
  out = np.asarray(T.rotate(image, 45.0))[..., 0]
  # Pixel (1, 3) samples the input at row 3 - sqrt2, col 3 + sqrt2: bilinear weight (2 - sqrt2)^2 on (2, 4).
  tip = (2 - SQRT2) ** 2
  # Pixel (2, 2) samples row 3 - sqrt2, col 3: weight 2 - sqrt2 on row 2.
  edge = 2 - SQRT2
  assert out[3, 3] == pytest.approx(1.0, abs=ATOL)
  assert out[2, 3] == pytest.approx(1.0, abs=ATOL)
  for r, c in [(1, 3), (3, 1), (5, 3), (3, 5)]:
    assert out[r, c] == pytest.approx(tip, abs=ATOL)
  for r, c in [(2, 2), (2, 4), (4, 2), (4, 4)]:
    assert out[r, c] == pytest.approx(edge, abs=ATOL)
  for r, c in [(0, 3), (1, 1), (1, 2), (0, 0), (6, 6)]:
    assert out[r, c] == pytest.approx(0.0, abs=ATOL)


def test_rotate_fill_value():
  out = np.asarray(T.rotate(np.zeros((7, 7, 1), np.float32), 45.0, fill=1.0))[..., 0]
  assert out[0, 0] == pytest.approx(1.0)  # samples row 3 - 3 sqrt2 < -1: wholly outside the image
  assert out[3, 3] == pytest.approx(0.0)


# Two pixels (0.2, 0.4, 0.6), (0.8, 0.6, 0.4): greys 0.363 and 0.637, mean grey 0.5.
_PIXELS = np.array([[[0.2, 0.4, 0.6], [0.8, 0.6, 0.4]]], np.float32)


@pytest.mark.parametrize("fn", [T.adjust_brightness, T.adjust_contrast, T.adjust_saturation])
def test_colour_factor_one_is_identity(fn):
  image = _image()
  np.testing.assert_allclose(fn(image, 1.0), image, atol=ATOL)


@pytest.mark.parametrize("fn, factor, expected", [
    (T.adjust_brightness, 0.5, [[0.1, 0.2, 0.3], [0.4, 0.3, 0.2]]),
    (T.adjust_brightness, 2.0, [[0.4, 0.8, 1.0], [1.0, 1.0, 0.8]]),
    (T.adjust_contrast, 0.5, [[0.35, 0.45, 0.55], [0.65, 0.55, 0.45]]),
    (T.adjust_contrast, 2.0, [[0.0, 0.3, 0.7], [1.0, 0.7, 0.3]]),
    (T.adjust_saturation, 0.5, [[0.2815, 0.3815, 0.4815], [0.7185, 0.6185, 0.5185]]),
    (T.adjust_saturation, 2.0, [[0.037, 0.437, 0.837], [0.963, 0.563, 0.163]]),
])
def test_colour_hand_computed(fn, factor, expected):
  np.testing.assert_allclose(fn(_PIXELS, factor)[0], expected, atol=ATOL)


def test_saturation_of_grey_image_is_identity():
  grey = _image(c=1)
  np.testing.assert_allclose(T.adjust_saturation(grey, 0.3), grey, atol=ATOL)


def test_imagenet_normalize_known_pixel():
  out = T.imagenet_normalize(np.full((1, 1, 1, 3), 0.5, np.float32))
  np.testing.assert_allclose(out[0, 0, 0], [0.015 / 0.229, 0.044 / 0.224, 0.094 / 0.225], atol=ATOL)


def test_grey_to_rgb():
  grey = _image(c=1)[None]
  rgb = T.grey_to_rgb(grey)
  assert rgb.shape == (1, 5, 5, 3)
  for ch in range(3):
    np.testing.assert_array_equal(rgb[..., ch], grey[..., 0])
  np.testing.assert_array_equal(T.grey_to_rgb(rgb), rgb)
  with pytest.raises(ValueError):
    T.grey_to_rgb(np.zeros((2, 2, 2), np.float32))


@pytest.mark.parametrize("method", ["bilinear", "nearest"])
@pytest.mark.parametrize("size", [3, (8, 5)])
def test_resize_constant_stays_constant(method, size):
  out = T.resize(np.full((2, 6, 6, 3), 0.3, np.float32), size, method)
  h, w = (size, size) if isinstance(size, int) else size
  assert out.shape == (2, h, w, 3)
  np.testing.assert_allclose(out, 0.3, atol=ATOL)


def test_resize_nearest_picks_pixels():
  image = (np.arange(16, dtype=np.float32) / 16).reshape(4, 4, 1)
  # Half-pixel centres: halving picks rows/columns 1 and 3.
  np.testing.assert_allclose(T.resize(image, 2, "nearest")[..., 0], np.array([[5, 7], [13, 15]]) / 16)
  small = (np.arange(4, dtype=np.float32) / 4).reshape(2, 2, 1)
  np.testing.assert_allclose(T.resize(small, 4, "nearest")[..., 0],
                             np.repeat(np.repeat(small[..., 0], 2, 0), 2, 1))


def test_random_view_deterministic_and_key_dependent():
  image = _image(8, 8)
  kwargs = dict(brightness=0.3, contrast=0.3, saturation=0.3)
  a = T.random_view(jax.random.key(0), image, **kwargs)
  b = T.random_view(jax.random.key(0), image, **kwargs)
  c = T.random_view(jax.random.key(1), image, **kwargs)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  assert a.shape == image.shape and float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_random_view_without_randomness_is_identity():
  image = _image()
  np.testing.assert_allclose(T.random_view(jax.random.key(3), image, max_angle=0.0), image, atol=ATOL)


def test_fixed_rotations():
  image = _image()
  out = T.fixed_rotations(image, 4)
  assert out.shape == (4, 5, 5, 3)
  for k in range(4):
    np.testing.assert_allclose(out[k], np.rot90(image, k), atol=ATOL)


def test_views_equal_loop_and_jit():
  images = np.stack([_image(6, 6, seed=s) for s in range(3)])
  key = jax.random.key(7)
  kwargs = dict(max_angle=30.0, brightness=0.2, contrast=0.1, saturation=0.2)
  out = T.views(key, images, 2, **kwargs)
  assert out.shape == (3, 2, 6, 6, 3)
  keys = jax.random.split(key, (3, 2))
  for b in range(3):
    for v in range(2):
      np.testing.assert_allclose(out[b, v], T.random_view(keys[b, v], images[b], **kwargs), atol=ATOL)
  jitted = jax.jit(T.views, static_argnums=2)(key, images, 2, **kwargs)
  np.testing.assert_allclose(jitted, out, atol=ATOL)


def test_traced_angles_and_factors_under_vmap_and_jit():
  images = np.stack([_image(5, 5, seed=s) for s in range(3)])
  angles = jnp.array([90.0, 180.0, 270.0])
  rotated = jax.jit(jax.vmap(T.rotate))(images, angles)
  for i in range(3):
    np.testing.assert_allclose(rotated[i], np.rot90(images[i], i + 1), atol=ATOL)
  factors = jnp.array([0.5, 1.0, 1.5])
  for fn in (T.adjust_brightness, T.adjust_contrast, T.adjust_saturation):
    batched = jax.jit(jax.vmap(fn))(images, factors)
    for i in range(3):
      np.testing.assert_allclose(batched[i], fn(images[i], factors[i]), atol=ATOL)
  jitted = jax.jit(T.random_view)(jax.random.key(0), images[0], 90.0, 0.2, 0.2, 0.2)
  np.testing.assert_allclose(jitted, T.random_view(jax.random.key(0), images[0], 90.0, 0.2, 0.2, 0.2), atol=ATOL)
