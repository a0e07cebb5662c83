"""Anomaly maps: the gradient of the multi-view score with respect to the image (checked against finite
differences of the score the run computes), maps aligned with the image (higher on a synthetic defect patch than
around it), and pixel AUROC.

What the defect test does not show: that training on good images is what puts the map on the defect. Gradient
maps follow the backbone's sensitivity to local contrast. Measured on 10 rough-patch images, a flow trained on
images that all carry such patches (to which the patch is normal: image AUROC 0.34) gives maps as concentrated on
the patch (pixel AUROC 0.81 at sigma 8) as one trained on clean images (0.82). On the bright flat squares of
`tests.conftest.write_synthetic_folders` they fail the other way: the backbone barely responds inside a
saturated flat patch, only at its edges, so at sigma 8 the map is higher inside the square than outside for only
3 to 7 of the 10 defective images, pixel AUROC 0.45, 0.55, 0.59 and 0.47 for four training settings of the
quick config (2 and 64 epochs, 4 and 8 views, 2 and 4 blocks). So this test checks the geometry of the maps
(pull-back, smoothing axes, alignment), with an untrained random flow; the finite-difference test checks the
gradient itself.

Checked against broken code: with the views' gradients summed in view coordinates instead of being pulled back
through the rotations (grad taken w.r.t. the stacked views, then summed over views), the finite-difference test
fails (measured: the directional derivative has the wrong sign at one bump and is 28 % off at the other,
against 1.5 % and 3 % when correct); with the mean over views dropped (the sum not divided by n_views) it is 3x
off. With the maps transposed (H and W swapped) the defect test fails (pixel AUROC 0.53 against 0.78).
"""
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs.base import base
from maml_iqr import anomaly_maps, detector, metrics, saved_model
from maml_iqr import features as features_lib
from maml_iqr.models import backbones


def test_pixel_auroc_pools_every_pixel():
  masks = np.zeros((2, 4, 4), bool)
  masks[0, :2, :2] = True
  maps = np.where(masks, 2.0, 1.0)
  assert metrics.pixel_auroc(masks, maps) == 1.0
  assert metrics.pixel_auroc(masks, -maps) == 0.0
  maps[1, 0, 0] = 3.0  # one defect-free pixel above all 4 defect pixels: 4 of 4 * 28 pairs lost
  assert metrics.pixel_auroc(masks, maps) == pytest.approx(1 - 4 / (4 * 28))
  with pytest.raises(ValueError, match="one shape"):
    metrics.pixel_auroc(masks, maps[:, :3])


@pytest.fixture(scope="module")
def random_detector():
  """An untrained (random, not identity) flow on real EfficientNet-Lite0 features, with 3 evaluation views:
  rotations by 0, 120 and 240 degrees, which interpolate (unlike multiples of 90) and fill the corners."""
  c = base()
  c.flow.hidden, c.flow.n_blocks, c.flow.zero_init = 32, 2, False
  c.score.n_views, c.score.view_offset = 3, 0.0
  bb = backbones.get_backbone("efficientnet_lite0")
  flow = detector.make_flow(c, bb.feature_dim)
  spec = saved_model.describe(c, bb, {"value": 0.0, "rule": "test"})
  return saved_model.Detector("", spec, flow, detector.init_params(flow, 1), bb, bb.load())


def _multi_view_score(det, x):
  """The run's score of a float [0, 1] image: backbone features of the evaluation views, then the flow."""
  feats = features_lib.view_features(det.backbone.features, det.backbone_params, jnp.asarray(x * 255.0)[None],
                                     jnp.asarray(det.view_params(1)))
  return float(detector.score(det.flow, det.params, np.asarray(feats), det.score_kind)[0])


@pytest.mark.parametrize("centre", [(50, 160), (170, 60)])
def test_gradient_matches_finite_differences_of_the_score(random_detector, centre):
  det = random_detector
  rng = np.random.default_rng(0)
  image = rng.integers(40, 216, (224, 224, 3), dtype=np.uint8)  # away from 0 and 255: no clip at its bound
  gradient = anomaly_maps.score_gradients(det, image[None], shrink=0.0)[0]
  rows, cols = np.mgrid[:224, :224]
  bump = np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * 12.0 ** 2))
  direction = (bump[..., None] * np.array([1.0, -0.6, 0.8])).astype(np.float32)
  x, h = image.astype(np.float32) / 255.0, 0.02
  finite = (_multi_view_score(det, x + h * direction) - _multi_view_score(det, x - h * direction)) / (2 * h)
  analytic = float((gradient * direction).sum())
  assert abs(finite) > 1e-3  # the bump moves the score well above float32 noise
  assert analytic == pytest.approx(finite, rel=0.08)  # measured: within 1.5 % and 3 %


def _rough_patch_images():
  """Smooth grey noise (as write_synthetic_folders draws it) with a 12 x 12 patch of rough noise (std 70) at
  four places, mostly off the diagonal; 48 pixels upscaled to 224 as the folder reader does. (images, masks)"""
  rng = np.random.default_rng(0)
  images, masks = [], []
  for y, x in ((8, 28), (30, 6), (26, 30), (6, 8)):
    a = rng.normal(128, 20, (48, 48))
    a[y:y + 12, x:x + 12] = rng.normal(128, 70, (12, 12))
    image = Image.fromarray(a.clip(0, 255).astype(np.uint8)).convert("RGB").resize((224, 224), Image.BILINEAR)
    m = np.zeros((48, 48), np.uint8)
    m[y:y + 12, x:x + 12] = 255
    images.append(np.asarray(image))
    masks.append(np.asarray(Image.fromarray(m).resize((224, 224), Image.NEAREST)) > 0)
  return np.stack(images), np.stack(masks)


def test_maps_are_higher_on_a_defect_patch_than_around_it(random_detector):
  images, masks = _rough_patch_images()
  maps = anomaly_maps.maps(random_detector, images, sigma=8.0)
  assert maps.shape == (4, 224, 224) and maps.dtype == np.float32
  inside = np.array([m[k].mean() for m, k in zip(maps, masks)])
  outside = np.array([m[~k].mean() for m, k in zip(maps, masks)])
  assert np.all(inside > 1.2 * outside), inside / outside  # measured 1.45-2.54
  assert metrics.pixel_auroc(masks, maps) > 0.7  # measured 0.78; chance is 0.5
