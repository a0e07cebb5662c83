import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs.base import base
from maml_iqr import detector
from maml_iqr import features as features_lib
from maml_iqr.models import backbones


def _cfg(hidden=16, n_blocks=2):
  c = base()
  c.flow.hidden, c.flow.n_blocks = hidden, n_blocks
  return c


def test_cached_and_recomputed_features_give_the_same_loss():
  """The cache is an optimisation only: the same views give the same training loss either way."""
  bb = backbones.get_backbone("efficientnet_lite0")
  bparams = bb.load()
  rng = np.random.default_rng(0)
  images = rng.integers(0, 255, (2, 224, 224, 3), dtype=np.uint8)
  views = features_lib.random_view_params(rng, 2, 2, 180.0, 0.1, 0.1, 0.1)
  cache = jnp.asarray(features_lib.extract(bb, bparams, images, views))
  c = _cfg()
  flow = detector.make_flow(c, bb.feature_dim)
  opt = detector.make_optimizer(c.train)
  ix = jnp.asarray([[0, 1], [1, 0], [1, 1], [0, 0]], jnp.int32)  # one step, 4 rows
  losses = []
  for data, batch_fn in ((cache, detector.gather_cached),
                         ((bparams, jnp.asarray(images), jnp.asarray(views)), detector.recompute_features(bb.features))):
    params = detector.init_params(flow, 0)
    step = detector.make_train_step(flow, opt, batch_fn)
    _, _, loss = step(params, opt.init(params), data, ix)
    losses.append(float(loss))
  assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_optimizer_is_torch_adam_with_l2_added_to_the_gradient():
  t = ml_collections.ConfigDict(dict(lr=0.1, b1=0.8, b2=0.8, eps=1e-4, weight_decay=0.5))
  opt = detector.make_optimizer(t)
  p = {"w": jnp.asarray([2.0])}
  g = {"w": jnp.asarray([1.0])}
  updates, _ = opt.update(g, opt.init(p), p)
  g_l2 = 1.0 + 0.5 * 2.0  # torch.optim.Adam(weight_decay): grad + wd * param, then Adam
  assert float(updates["w"][0]) == pytest.approx(-0.1 * g_l2 / (g_l2 + 1e-4), rel=1e-5)


def test_scores_on_identity_flow():
  """A zero-initialised flow is a permutation: z2 = mean x^2 and nll = 0.5 * mean x^2 (log-det 0)."""
  c = _cfg()
  flow = detector.make_flow(c, 6)
  params = detector.init_params(flow, 0)
  feats = np.random.default_rng(1).normal(size=(5, 3, 6)).astype(np.float32)
  z2 = detector.score(flow, params, feats, "z2", batch_size=4)
  nll = detector.score(flow, params, feats, "nll", batch_size=4)
  np.testing.assert_allclose(z2, (feats ** 2).mean(-1).mean(-1), rtol=1e-5)
  np.testing.assert_allclose(nll, 0.5 * z2, rtol=1e-5)


def test_epoch_indices_cover_kept_images_once_with_distinct_views():
  kept = np.array([0, 2, 3, 5, 7, 8, 9])
  idx = detector.epoch_indices(np.random.default_rng(0), kept, batch_size=3, n_views=2, n_cached=4)
  assert idx.shape == (3, 6, 2)
  per_image = idx.reshape(3, 3, 2, 2)
  images = per_image[..., 0, 0].ravel()
  assert set(images[:len(kept)]) == set(kept) and set(images) <= set(kept)
  assert (per_image[..., 0, 1] != per_image[..., 1, 1]).all()  # two different views of each image


def test_training_lowers_the_loss_and_runs_exactly_the_epochs_steps():
  c = _cfg()
  flow = detector.make_flow(c, 8)
  feats = jnp.asarray(np.random.default_rng(0).normal(size=(30, 4, 8)).astype(np.float32) * 3 + 1)
  params = detector.init_params(flow, 0)
  params, _, losses = detector.train(flow, params, detector.make_optimizer(c.train), feats, np.arange(30), 20,
                                     np.random.default_rng(0), c.train)
  assert len(losses) == 20 * 2  # 30 images / 24 per batch -> 2 steps per epoch, 40 steps: not a multiple of 16
  assert losses[-5:].mean() < losses[:5].mean()


def test_bfloat16_backbone_features_are_close_to_float32():
  bb = backbones.get_backbone("efficientnet_lite0")
  bparams = bb.load()
  images = np.random.default_rng(0).integers(0, 255, (2, 224, 224, 3), dtype=np.uint8)
  views = features_lib.fixed_view_params(2, 2, 0.0)
  f32 = features_lib.extract(bb, bparams, images, views)
  bf16 = features_lib.extract(bb, bparams, images, views, dtype="bfloat16")
  assert bf16.dtype == np.float32
  corr = np.corrcoef(f32.ravel(), bf16.ravel())[0, 1]
  assert corr > 0.99 and np.abs(bf16 - f32).max() < 0.25 * np.abs(f32).max()
