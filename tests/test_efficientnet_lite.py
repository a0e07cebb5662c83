"""EfficientNet-Lite0 with the packaged ImageNet weights, and the registry."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import skimage.transform

from maml_iqr.models import backbones
from maml_iqr.models import efficientnet_lite as enet

ALL_STAGES = (('stem',) + tuple(f'block{i}' for i in range(16)) +
              ('head', 'stride4', 'stride8', 'stride16', 'stride32'))


@pytest.fixture(scope='module')
def params():
  return enet.load_params()


@pytest.fixture(scope='module')
def chelsea():
  image = skimage.transform.resize(skimage.data.chelsea(), (224, 224),
                                   anti_aliasing=True)
  return jnp.asarray(image, jnp.float32)[None]


def test_chelsea_is_a_cat(params, chelsea):
  probs = jax.nn.softmax(jax.jit(enet.logits)(params, chelsea))[0]
  top5 = np.argsort(-np.asarray(probs))[:5]
  # ImageNet 281-285: tabby, tiger cat, Persian, Siamese, Egyptian cat.
  assert set(top5) & set(range(281, 286)), top5
  assert 281 <= top5[0] <= 285 and probs[top5[0]] > 0.5, (top5, probs[top5])


def test_all_stage_dims_and_default_is_472(params, chelsea):
  images = jnp.concatenate([chelsea, chelsea[:, ::-1]], axis=0)
  every = jax.jit(functools.partial(enet.features, stages=ALL_STAGES))(
      params, images)
  dims = [enet.stage_dim(s) for s in ALL_STAGES]
  assert every.shape == (2, sum(dims))
  assert dims[:2] == [32, 16] and dims[-6:] == [320, 1280, 24, 40, 112, 320]
  assert enet.feature_dim() == 472
  offsets = dict(zip(ALL_STAGES, np.cumsum([0] + dims)))
  expected = np.concatenate(
      [every[:, offsets[s]:offsets[s] + enet.stage_dim(s)]
       for s in enet.DEFAULT_STAGES], axis=-1)
  default = jax.jit(enet.features)(params, images)
  assert default.shape == (2, 472)
  np.testing.assert_allclose(default, expected, rtol=1e-5, atol=1e-5)
  assert np.all(np.isfinite(every))


def test_unknown_stage_is_refused(params, chelsea):
  with pytest.raises(ValueError, match='unknown stage'):
    enet.features(params, chelsea, stages=('stride64',))


@pytest.mark.parametrize('size,kernel,stride,pads', [
    (224, 3, 2, (0, 1)), (112, 5, 2, (1, 2)), (7, 3, 1, (1, 1)),
    (14, 5, 1, (2, 2)), (225, 3, 2, (1, 1))])
def test_same_padding_is_tf_style(size, kernel, stride, pads):
  assert enet._same_pads(size, kernel, stride) == pads


def test_registry_shapes_without_running():
  image = jax.ShapeDtypeStruct((3, 224, 224, 3), jnp.float32)
  backbone = backbones.get_backbone()
  assert (backbone.name, backbone.input_size, backbone.feature_dim) == (
      'efficientnet_lite0', 224, 472)
  out = jax.eval_shape(backbone.features, backbone.load(), image)
  assert out.shape == (3, 472)
  picked = backbones.get_backbone(stages=('block10', 'head'))
  assert picked.feature_dim == 112 + 1280
  with pytest.raises(ValueError, match='unknown stage'):
    backbones.get_backbone(stages=('nope',))


def test_registry_alexnet():
  with pytest.raises(ValueError, match='alexnet-owt-7be5be79.pth'):
    backbones.get_backbone('alexnet')
  backbone = backbones.get_backbone('alexnet', weights_path='random')
  assert (backbone.input_size, backbone.feature_dim) == (448, 768)
  image = jax.ShapeDtypeStruct((2, 448, 448, 3), jnp.float32)
  assert jax.eval_shape(backbone.features, backbone.load(), image).shape == (
      2, 768)
  with pytest.raises(ValueError, match='unknown backbone'):
    backbones.get_backbone('resnet')


def test_fast_depthwise_matches_grouped_conv(params, chelsea):
  # Small odd-sized input: every stride-2 SAME padding is uneven somewhere.
  images = jnp.concatenate(
      [chelsea[:, :99, :101], chelsea[:, 50:149, 60:161] ** 2], axis=0)
  fast = jax.jit(functools.partial(enet.features, stages=ALL_STAGES))(
      params, images)
  reference = jax.jit(functools.partial(
      enet._features_reference, stages=ALL_STAGES))(params, images)
  np.testing.assert_allclose(fast, reference, rtol=1e-4, atol=1e-5)


def test_micro_batches_match_one_batch(params, chelsea):
  images = jnp.concatenate(
      [chelsea, chelsea[:, ::-1], chelsea[:, :, ::-1]], axis=0)[:, :64, :64]
  whole = jax.jit(lambda p, x: enet._features(p, x, enet.DEFAULT_STAGES, micro_batch=0))(params, images)
  split = jax.jit(lambda p, x: enet._features(p, x, enet.DEFAULT_STAGES, micro_batch=2))(params, images)
  assert split.shape == (3, 472)
  np.testing.assert_allclose(split, whole, rtol=1e-4, atol=1e-4)


def test_poolings_pool_the_stage_maps_pooling_major(params, chelsea):
  images = jnp.concatenate([chelsea, chelsea[:, ::-1]], axis=0)[:, :64, :64]
  stages = ('stride8', 'stride16')
  got = np.asarray(jax.jit(lambda p, x: enet.features(p, x, stages, poolings=('max', 'gem', 'std', 'mean')))(
      params, images))
  maps = jax.jit(lambda p, x: enet._stage_maps(p, x, {'block4', 'block10'}))(params, images)
  m8, m16 = (np.asarray(maps[n], np.float64) for n in ('block4', 'block10'))
  pos = lambda m: np.maximum(m, 0)
  want = np.concatenate([m8.max((1, 2)), m16.max((1, 2)),
                         ((pos(m8) ** 3).mean((1, 2))) ** (1 / 3), ((pos(m16) ** 3).mean((1, 2))) ** (1 / 3),
                         m8.std((1, 2)), m16.std((1, 2)), m8.mean((1, 2)), m16.mean((1, 2))], -1)
  assert got.shape == (2, 4 * enet.feature_dim(stages))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(got[:, -enet.feature_dim(stages):], enet.features(params, images, stages),
                             rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match='unknown pooling'):
    enet.features(params, images, stages, poolings=('median',))
