"""Tests for the DifferNet flow: invertibility, log-det, init, permutations, derivatives, the distrax density."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maml_iqr.models import flow as flow_lib
from maml_iqr.models.flow import Flow

SMALL = dict(hidden=16, n_blocks=3)


def _setup(dim, zero_init, perturb=0.1, seed=0):
  """Small flow; zero-init params get noise so the couplings are not the identity."""
  flow, params = flow_lib.init_flow(
      jax.random.key(seed), dim, zero_init=zero_init, **SMALL)
  if perturb:
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [p + perturb * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
    params = jax.tree.unflatten(tree, leaves)
  x = jax.random.normal(jax.random.key(seed + 2), (5, dim))
  return flow, params, x


def _reference_forward(params, x, dim, n_blocks, clamp=3.0, seed=0):
  """Plain re-statement of DifferNet's forward pass (permute_layer, glow_coupling_layer)."""
  p = params['params']
  d1, d2 = dim // 2, dim - dim // 2

  def mlp(q, h):
    n = len(q)
    for i in range(n):
      h = h @ q[f'fc{i}']['kernel'] + q[f'fc{i}']['bias']
      h = jax.nn.relu(h) if i < n - 1 else h
    return h

  log_e = lambda s: clamp * 0.636 * jnp.arctan(s / clamp)
  jac = jnp.zeros(x.shape[0])
  for k in range(n_blocks):
    np.random.seed(seed + k)
    x = x[:, np.random.permutation(dim)]
    x1, x2 = x[:, :d1], x[:, d1:]
    r2 = mlp(p[f's2_{k}'], x2)
    s2, t2 = r2[:, :d1], r2[:, d1:]
    y1 = jnp.exp(log_e(s2)) * x1 + t2
    r1 = mlp(p[f's1_{k}'], y1)
    s1, t1 = r1[:, :d2], r1[:, d2:]
    y2 = jnp.exp(log_e(s1)) * x2 + t1
    x = jnp.concatenate([y1, y2], 1)
    jac = jac + log_e(s1).sum(1) + log_e(s2).sum(1)
  return x, jac


@pytest.mark.parametrize('zero_init', [True, False])
@pytest.mark.parametrize('dim', [6, 7])
def test_matches_reference_and_inverts(dim, zero_init):
  flow, params, x = _setup(dim, zero_init)
  z, logdet = flow.apply(params, x)
  assert z.shape == x.shape and logdet.shape == (x.shape[0],)
  z_ref, logdet_ref = _reference_forward(params, x, dim, SMALL['n_blocks'])
  np.testing.assert_allclose(z, z_ref, atol=1e-5)
  np.testing.assert_allclose(logdet, logdet_ref, atol=1e-5)
  assert float(jnp.abs(logdet).min()) > 1e-2  # the couplings really scale
  x_back = flow.apply(params, z, method=Flow.inverse)
  np.testing.assert_allclose(x_back, x, atol=1e-5)


@pytest.mark.parametrize('zero_init', [True, False])
def test_logdet_is_log_abs_det_jacobian(zero_init):
  dim = 7
  flow, params, x = _setup(dim, zero_init)
  _, logdet = flow.apply(params, x)
  one = lambda v: flow.apply(params, v[None])[0][0]
  for i in range(x.shape[0]):
    jac = jax.jacfwd(one)(x[i])
    _, expected = jnp.linalg.slogdet(jac)
    np.testing.assert_allclose(logdet[i], expected, atol=1e-4)


def test_zero_init_starts_at_identity_up_to_permutation():
  dim = 7
  flow, params, x = _setup(dim, zero_init=True, perturb=False)
  z, logdet = flow.apply(params, x)
  perm = np.arange(dim)
  for p in flow_lib.permutations(dim, SMALL['n_blocks']):
    perm = perm[p]  # x -> x[p0] -> x[p0][p1]: also checks the chain order
  np.testing.assert_array_equal(z, x[:, perm])
  np.testing.assert_array_equal(logdet, 0.0)
  np.testing.assert_allclose(flow_lib.nll_loss(z, logdet),
                             flow_lib.nll_loss(x, jnp.zeros(5)), rtol=1e-6)


def test_reference_init_is_not_identity():
  flow, params, x = _setup(6, zero_init=False, perturb=False)
  _, logdet = flow.apply(params, x)
  assert float(jnp.abs(logdet).max()) > 0


def test_permutations_fixed_seeded_and_distinct():
  a = flow_lib.permutations(768, 8, seed=0)
  np.testing.assert_array_equal(a[3], flow_lib.permutations(768, 8, seed=0)[3])
  np.testing.assert_array_equal(a[3], np.random.RandomState(3).permutation(768))
  assert len({tuple(p) for p in a}) == 8
  assert not np.array_equal(a[0], flow_lib.permutations(768, 8, seed=1)[0])
  np.testing.assert_array_equal(a[1], flow_lib.permutations(768, 8, seed=1)[0])
  # Permutations are constants, not parameters.
  flow, params, _ = _setup(6, zero_init=True, perturb=False)
  assert set(params['params']) == {f's{h}_{k}' for h in (1, 2) for k in range(3)}


def test_scores():
  z = jnp.array([[1.0, 2.0], [0.0, 3.0]])
  logdet = jnp.array([0.5, -1.0])
  np.testing.assert_allclose(flow_lib.z2_score(z), [2.5, 4.5])
  np.testing.assert_allclose(flow_lib.nll_score(z, logdet), [1.0, 2.75])
  np.testing.assert_allclose(flow_lib.nll_loss(z, logdet), 1.875)


def test_second_order_through_sgd_step():
  # Default init: only the last layers get a gradient in the inner step.
  flow, params, x = _setup(7, zero_init=True, perturb=False)
  support, query = x[:3], x[3:]
  loss = lambda p, b: flow_lib.nll_loss(*flow.apply(p, b))

  def outer(p, lr):
    g = jax.grad(loss)(p, support)
    adapted = jax.tree.map(lambda w, d: w - lr * d, p, g)
    return loss(adapted, query)

  def first_order(p, lr):
    g = jax.lax.stop_gradient(jax.grad(loss)(p, support))
    return loss(jax.tree.map(lambda w, d: w - lr * d, p, g), query)

  assert np.isfinite(jax.jit(outer)(params, 0.1))
  meta_grad = jax.jit(jax.grad(outer))(params, 0.1)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(meta_grad))
  # The second-order term is really there: it differs from first order.
  first = jax.jit(jax.grad(first_order))(params, 0.1)
  diff = jax.tree.map(lambda a, b: jnp.abs(a - b).max(), meta_grad, first)
  assert max(jax.tree.leaves(diff)) > 0


def test_vmap_over_parameter_trees():
  flow, p0, x = _setup(6, zero_init=False, seed=0)
  _, p1, _ = _setup(6, zero_init=False, seed=10)
  stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), p0, p1)
  z, logdet = jax.vmap(lambda p: flow.apply(p, x))(stacked)
  for i, p in enumerate([p0, p1]):
    z_i, logdet_i = flow.apply(p, x)
    np.testing.assert_allclose(z[i], z_i, atol=1e-6)
    np.testing.assert_allclose(logdet[i], logdet_i, atol=1e-5)


def test_wrong_dim_raises():
  flow, params, _ = _setup(6, zero_init=True, perturb=False)
  with pytest.raises(ValueError):
    flow.apply(params, jnp.zeros((2, 7)))


@pytest.mark.parametrize('dim', [768, 472, 7])
def test_parameter_count(dim):
  flow = Flow(dim)  # DifferNet defaults: 8 blocks, hidden 2048, 3 hidden layers
  shapes = jax.eval_shape(flow.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, dim), jnp.float32))
  count = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
  assert count == flow_lib.num_params(dim)
  if dim == 768:
    # Per block: 2 x (384*2048 + 2*2048*2048 + 2048*768 + 3*2048 + 768).
    assert count == 8 * 2 * (384 * 2048 + 2 * 2048 * 2048 + 2048 * 768 + 3 * 2048 + 768)
    assert count == 172_077_056


# The density through distrax. Checked to fail when broken: with `distrax.Inverse` left out of
# Flow.distribution (log_prob then runs the flow backwards), all three tests below fail; with HALF_LOG_2PI
# dropped from nll_per_dim, the last two fail (by 0.919 per row). On the old code Flow.log_prob did not exist.
@pytest.mark.parametrize('zero_init', [True, False])
def test_distrax_log_prob_is_the_change_of_variables(zero_init):
  """log p(x) = log N(f(x); 0, I) + log|det df/dx|, every constant included, against jax.scipy and slogdet."""
  dim = 7
  flow, params, x = _setup(dim, zero_init)
  log_prob = jax.jit(functools.partial(flow.apply, method=Flow.log_prob))(params, x)

  @jax.jit
  @jax.vmap
  def change_of_variables(v):
    one = lambda u: flow.apply(params, u[None])[0][0]
    return jax.scipy.stats.norm.logpdf(one(v)).sum() + jnp.linalg.slogdet(jax.jacfwd(one)(v))[1]

  np.testing.assert_allclose(log_prob, change_of_variables(x), rtol=1e-5, atol=1e-4)


def test_distrax_nll_equals_the_hand_written_nll():
  """At the detector's size (472-d), the training loss and its gradient through distrax are DifferNet's
  hand-written NLL per dim, constant 0.5 log(2 pi) dropped, within float32 tolerance."""
  from maml_iqr import detector
  flow, params, _ = _setup(472, zero_init=False, perturb=0.02)
  x = jax.random.uniform(jax.random.key(3), (96, 472), maxval=6.0)  # EfficientNet-Lite0 features lie in [0, 6]
  z, logdet = jax.jit(flow.apply)(params, x)
  per_row = jax.jit(functools.partial(flow.apply, method=Flow.nll))(params, x)
  np.testing.assert_allclose(per_row, flow_lib.nll_score(z, logdet), rtol=1e-5, atol=1e-5)
  hand = jax.value_and_grad(lambda p: flow_lib.nll_loss(*flow.apply(p, x)))
  via_distrax = jax.value_and_grad(lambda p: detector.loss_fn(flow, p, x))
  (l_distrax, g_distrax), (l_hand, g_hand) = jax.jit(via_distrax)(params), jax.jit(hand)(params)
  np.testing.assert_allclose(l_distrax, l_hand, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g_distrax), jax.tree.leaves(g_hand)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_nll_score_kind_uses_the_distrax_density():
  from maml_iqr import detector
  flow, params, _ = _setup(6, zero_init=False)
  feats = jax.random.normal(jax.random.key(4), (3, 2, 6))  # (images, views, D)
  apply = jax.jit(flow.apply)
  want = np.mean([flow_lib.nll_score(*apply(params, feats[:, v])) for v in range(2)], axis=0)
  np.testing.assert_allclose(detector.make_scorer(flow, 'nll')(params, feats), want, rtol=1e-5, atol=1e-6)
  want_z2 = np.mean([flow_lib.z2_score(apply(params, feats[:, v])[0]) for v in range(2)], axis=0)
  np.testing.assert_allclose(detector.make_scorer(flow, 'z2')(params, feats), want_z2, rtol=1e-6)
