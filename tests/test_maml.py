"""Tests for maml_iqr.maml: closed-form MAML gradients, task batching, sampling, devices, recompiles."""
import json
import os
import subprocess
import sys
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from maml_iqr import maml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quadratic_loss(theta, batch):
  """0.5 * mean_i ||theta - x_i||^2: gradient theta - mean(x), so MAML has a closed form."""
  return 0.5 * jnp.mean(jnp.sum((theta - batch) ** 2, axis=-1))


def affine_nll(params, batch):
  """Diagonal affine flow z = (x - mu) exp(-log_sigma); weighted mean NLL, rows with weight 0 do not count."""
  z = (batch['x'] - params['mu']) * jnp.exp(-params['log_sigma'])
  nll = jnp.sum(0.5 * z ** 2 + params['log_sigma'], axis=-1)
  return jnp.sum(batch['w'] * nll) / jnp.maximum(jnp.sum(batch['w']), 1.0)


def affine_params(d=3):
  # Explicit dtypes: weak-typed params (jnp.full(.., 0.2)) come back strong from optax and retrace once.
  return {'mu': jnp.linspace(-0.5, 0.5, d, dtype=jnp.float32), 'log_sigma': jnp.full((d,), 0.2, jnp.float32)}


def affine_tasks(seed, n_tasks, n_support=4, n_query=2, d=3):
  """Stacked random tasks; the last support row of each task is padding (weight 0, huge values)."""
  rng = np.random.default_rng(seed)
  def batch(n):
    x = rng.normal(1.0, 2.0, (n_tasks, n, d)).astype(np.float32)
    return {'x': x, 'w': np.ones((n_tasks, n), np.float32)}
  tasks = {'support': batch(n_support), 'query': batch(n_query)}
  tasks['support']['x'][:, -1] = 1e3
  tasks['support']['w'][:, -1] = 0.0
  return tasks


def quadratic_task(seed=0, d=2):
  rng = np.random.default_rng(seed)
  return {'support': jnp.asarray(rng.normal(size=(3, d)), jnp.float32),
          'query': jnp.asarray(rng.normal(size=(2, d)), jnp.float32)}


@pytest.mark.parametrize('k', [0, 1, 5])
def test_adapt_quadratic_closed_form(k):
  theta, alpha = jnp.array([1.0, -2.0]), 0.1
  support = quadratic_task()['support']
  s = support.mean(0)
  adapted = maml.adapt(quadratic_loss, theta, support, alpha, k)
  # theta_k - s = (1 - alpha)^k (theta - s)
  np.testing.assert_allclose(adapted, s + (1 - alpha) ** k * (theta - s), rtol=1e-6)


@pytest.mark.parametrize('first_order', [True, False])
def test_outer_gradient_closed_form(first_order):
  theta, alpha, k = jnp.array([1.0, -2.0]), 0.3, 3
  task = quadratic_task(1)
  s, q = task['support'].mean(0), task['query'].mean(0)
  cfg = maml.MamlConfig(inner_lr=alpha, inner_steps=k, first_order=first_order)
  grad = jax.grad(lambda t: maml.maml_objective(quadratic_loss, t, task, cfg))(theta)
  theta_k = s + (1 - alpha) ** k * (theta - s)
  # First order: query gradient at theta_k. Second order: times d theta_k / d theta = (1 - alpha)^k.
  expected = (theta_k - q) * (1.0 if first_order else (1 - alpha) ** k)
  np.testing.assert_allclose(grad, expected, rtol=1e-5)


def test_first_and_second_order_differ_only_with_inner_steps():
  task, theta = quadratic_task(2), jnp.array([0.5, 0.5])
  def grad(k, first_order):
    cfg = maml.MamlConfig(inner_lr=0.3, inner_steps=k, first_order=first_order)
    return jax.grad(lambda t: maml.maml_objective(quadratic_loss, t, task, cfg))(theta)
  np.testing.assert_allclose(grad(0, True), grad(0, False))
  assert np.abs(grad(2, True) - grad(2, False)).max() > 1e-2


@pytest.mark.parametrize('first_order', [True, False])
def test_affine_flow_gradient_matches_unrolled_loop(first_order):
  """On a non-quadratic density loss, FOMAML = query grad at the adapted params; MAML = grad of the loop."""
  params, cfg = affine_params(), maml.MamlConfig(inner_lr=0.05, inner_steps=3, first_order=first_order)
  task = jax.tree.map(lambda x: x[0], affine_tasks(0, 1))
  grad = jax.grad(lambda p: maml.maml_objective(affine_nll, p, task, cfg))(params)

  def unrolled(p):
    for _ in range(cfg.inner_steps):
      p = jax.tree.map(lambda w, g: w - cfg.inner_lr * g, p, jax.grad(affine_nll)(p, task['support']))
    return p
  if first_order:
    expected = jax.grad(affine_nll)(unrolled(params), task['query'])
  else:
    expected = jax.grad(lambda p: affine_nll(unrolled(p), task['query']))(params)
  chex.assert_trees_all_close(grad, expected, rtol=1e-5, atol=1e-6)


def test_padded_support_rows_count_zero():
  task = jax.tree.map(lambda x: x[0], affine_tasks(0, 1))
  trimmed = jax.tree.map(lambda x: x[:-1], task['support'])
  params = affine_params()
  chex.assert_trees_all_close(maml.adapt(affine_nll, params, task['support'], 0.1, 2),
                              maml.adapt(affine_nll, params, trimmed, 0.1, 2), rtol=1e-6)


def test_batched_meta_loss_is_mean_over_tasks():
  cfg = maml.MamlConfig(inner_lr=0.05, inner_steps=2, first_order=False)
  params, tasks = affine_params(), affine_tasks(3, 5)
  loop = np.mean([maml.maml_objective(affine_nll, params, jax.tree.map(lambda x: x[i], tasks), cfg)
                  for i in range(5)])
  np.testing.assert_allclose(maml.batched_meta_loss(affine_nll, params, tasks, cfg), loop, rtol=1e-5)



def test_second_order_batched_meta_gradient_is_the_mean_of_the_task_gradients():
  """Second order runs the tasks one at a time (lax.map of a rematerialised task): same gradient as a loop."""
  cfg = maml.MamlConfig(inner_lr=0.05, inner_steps=3, first_order=False)
  params, tasks = affine_params(), affine_tasks(4, 3)
  per_task = [jax.grad(lambda p, i=i: maml.maml_objective(affine_nll, p, jax.tree.map(lambda x: x[i], tasks), cfg))(
      params) for i in range(3)]
  expected = jax.tree.map(lambda *g: sum(g) / 3, *per_task)
  got = jax.grad(lambda p: maml.batched_meta_loss(affine_nll, p, tasks, cfg))(params)
  chex.assert_trees_all_close(got, expected, rtol=1e-5, atol=1e-6)


def mlp_loss(params, batch):
  h = jnp.tanh(batch @ params['w1'])
  return jnp.mean((h @ params['w2']) ** 2)


def test_second_order_memory_does_not_grow_with_tasks():
  """Second order keeps one task's inner loop in memory: DifferNet's flow needed 50 GB at 4 tasks with the tasks
  vmapped (BENCHMARKS.md). XLA's own buffer plan for 1 and 8 tasks; vmapped, 8 tasks take about 8x."""
  rng = np.random.default_rng(0)
  params = {'w1': jnp.asarray(rng.normal(size=(256, 256)) / 16, jnp.float32),
            'w2': jnp.asarray(rng.normal(size=(256, 256)) / 16, jnp.float32)}
  cfg = maml.MamlConfig(inner_lr=0.01, inner_steps=4, first_order=False)

  def temp_bytes(n_tasks):
    tasks = {'support': jnp.ones((n_tasks, 64, 256)), 'query': jnp.ones((n_tasks, 16, 256))}
    grad = jax.jit(jax.grad(lambda p: maml.batched_meta_loss(mlp_loss, p, tasks, cfg)))
    return grad.lower(params).compile().memory_analysis().temp_size_in_bytes

  one, eight = temp_bytes(1), temp_bytes(8)
  assert eight < 2 * one, (one, eight)

def test_custom_meta_objective_is_used():
  def pull_to_zero(loss_fn, params, task, cfg):
    del loss_fn, task, cfg
    return jnp.sum(params['mu'] ** 2)  # gradient 2 mu, whatever the task
  cfg, params = maml.MamlConfig(), affine_params()
  step = jax.jit(maml.make_meta_step(affine_nll, optax.sgd(0.25), cfg, axis_name=None,
                                     meta_objective=pull_to_zero))
  new, _, metrics = step(params, optax.sgd(0.25).init(params), affine_tasks(0, 4))
  np.testing.assert_allclose(new['mu'], 0.5 * params['mu'], rtol=1e-6)
  np.testing.assert_allclose(new['log_sigma'], params['log_sigma'])
  np.testing.assert_allclose(metrics['loss'], jnp.sum(params['mu'] ** 2), rtol=1e-6)


def test_objectives_by_name_closed_form():
  """On the quadratic loss: `none` is the plain gradient on support + query rows, `reptile` is theta - theta_k
  with theta_k the inner loop run on the whole task, and `maml` first order is the query gradient at theta_k."""
  theta, alpha, k = jnp.array([1.0, -2.0]), 0.3, 3
  task = quadratic_task(4)
  union = jnp.concatenate([task['support'], task['query']])
  u, s, q = union.mean(0), task['support'].mean(0), task['query'].mean(0)
  def grad(name):
    cfg = maml.MamlConfig(inner_lr=alpha, inner_steps=k, objective=name)
    return jax.grad(lambda t: maml.batched_meta_loss(quadratic_loss, t, jax.tree.map(lambda x: x[None], task),
                                                     cfg))(theta)
  np.testing.assert_allclose(grad('none'), theta - u, rtol=1e-5)
  np.testing.assert_allclose(grad('reptile'), (1 - (1 - alpha) ** k) * (theta - u), rtol=1e-5)
  np.testing.assert_allclose(grad('maml'), s + (1 - alpha) ** k * (theta - s) - q, rtol=1e-5)
  with pytest.raises(ValueError, match='registered'):
    maml.get_objective('nonsense')


def test_a_registered_objective_is_picked_by_name():
  @maml.register_objective('test_pull_to_zero')
  def pull_to_zero(loss_fn, params, task, cfg):
    del loss_fn, task, cfg
    return jnp.sum(params['mu'] ** 2)
  try:
    cfg, params = maml.MamlConfig(objective='test_pull_to_zero'), affine_params()
    step = jax.jit(maml.make_meta_step(affine_nll, optax.sgd(0.25), cfg, axis_name=None))
    new, _, _ = step(params, optax.sgd(0.25).init(params), affine_tasks(0, 4))
    np.testing.assert_allclose(new['mu'], 0.5 * params['mu'], rtol=1e-6)
  finally:
    del maml.OBJECTIVES['test_pull_to_zero']


def test_diagnostics_measure_the_inner_loop():
  """Closed form on the quadratic loss: the drops are the loss at theta minus at theta_k; no inner step gives
  cosine 1 and zero drops (meta-training is then plain query training), a real inner step gives less."""
  theta, alpha, k = jnp.array([1.0, -2.0]), 0.3, 3
  task = quadratic_task(5)
  tasks = jax.tree.map(lambda x: x[None], task)
  s = task['support'].mean(0)
  theta_k = s + (1 - alpha) ** k * (theta - s)
  d = maml.diagnostics(quadratic_loss, theta, tasks, maml.MamlConfig(inner_lr=alpha, inner_steps=k))
  for name, rows in (('support_drop', task['support']), ('query_drop', task['query'])):
    np.testing.assert_allclose(d[name], quadratic_loss(theta, rows) - quadratic_loss(theta_k, rows), rtol=1e-5)
  assert float(d['support_drop']) > 0
  assert float(d['grad_cosine']) < 0.99
  none = maml.diagnostics(quadratic_loss, theta, tasks, maml.MamlConfig(inner_lr=alpha, inner_steps=0))
  np.testing.assert_allclose([none['support_drop'], none['query_drop']], [0.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(none['grad_cosine'], 1.0, rtol=1e-6)


def test_sample_tasks_draws_kept_items_with_fixed_shapes():
  kept = np.zeros(50, bool)
  kept[[3, 7, 8, 20, 21, 30, 44]] = True
  support, query = maml.sample_tasks(np.random.default_rng(0), kept, 6, 5, 0.3)
  assert support.shape == (6, 4) and query.shape == (6, 1)
  both = np.concatenate([support, query], axis=1)
  assert set(both.ravel()) <= set(np.flatnonzero(kept))
  assert all(len(set(row)) == 5 for row in both)  # without replacement within a task
  # Same shapes whatever is kept; index lists, counts and JAX keys work as well.
  s2, q2 = maml.sample_tasks(1, 50, 6, 5, 0.3)
  assert s2.shape == support.shape and q2.shape == query.shape
  s3, _ = maml.sample_tasks(jax.random.key(0), np.flatnonzero(kept), 6, 5, 0.3)
  s4, _ = maml.sample_tasks(jax.random.key(0), np.flatnonzero(kept), 6, 5, 0.3)
  np.testing.assert_array_equal(s3, s4)
  with pytest.raises(ValueError):
    maml.sample_tasks(0, kept[:8], 6, 5, 0.3)  # only 3 kept


def test_support_size_rounds_half_up():
  assert maml.support_size(5, 0.3) == 4
  assert maml.support_size(10, 0.3) == 7
  assert maml.support_size(4, 0.5) == 2
  with pytest.raises(ValueError):
    maml.support_size(5, 0.0)


def test_gather_tasks_shapes():
  data = {'x': np.arange(40, dtype=np.float32).reshape(10, 4), 'w': np.ones(10, np.float32)}
  s, q = maml.sample_tasks(0, 10, 3, 5, 0.3)
  tasks = maml.gather_tasks(data, s, q)
  assert tasks['support']['x'].shape == (3, 4, 4) and tasks['query']['w'].shape == (3, 1)
  np.testing.assert_array_equal(tasks['query']['x'][:, 0, 0], 4 * q[:, 0])


@pytest.mark.parametrize('parallel', ['shard_map', 'pmap'])
def test_step_one_device_no_retrace(parallel):
  """Wrapped step on the single CPU device: equals the collective-free step and traces once."""
  chex.clear_trace_counter()  # chex counts per function code, shared by every `step` closure
  cfg = maml.MamlConfig(inner_lr=0.05, inner_steps=2, first_order=False)
  opt = optax.adam(0.01)
  plain = jax.jit(maml.make_meta_step(affine_nll, opt, cfg, axis_name=None))
  step = maml.parallel_meta_step(
      chex.assert_max_traces(maml.make_meta_step(affine_nll, opt, cfg), n=1), parallel)
  params, ref = affine_params(), affine_params()  # separate buffers: `step` donates its inputs
  state, ref_state = opt.init(params), opt.init(ref)
  with warnings.catch_warnings():
    warnings.filterwarnings('ignore', message='.*donated buffers.*')
    for seed in range(3):
      tasks = affine_tasks(seed, 4)
      params, state, metrics = step(params, state, tasks)
      ref, ref_state, ref_metrics = plain(ref, ref_state, tasks)
      chex.assert_trees_all_close(params, ref, rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(metrics['loss'], ref_metrics['loss'], rtol=1e-5)


_MULTI_DEVICE = r'''
import json, os, warnings
os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=4'
import jax, numpy as np, optax
import test_maml as t
from maml_iqr import maml
assert jax.device_count() == 4, jax.devices()
warnings.filterwarnings('ignore', message='.*donated buffers.*')
out = {}
for first_order in (True, False):
  cfg = maml.MamlConfig(inner_lr=0.05, inner_steps=3, first_order=first_order)
  opt = optax.sgd(0.1)  # not Adam: its update hides a gradient off by a constant factor
  tasks = t.affine_tasks(7, 8)
  params = t.affine_params()
  ref, _, ref_m = jax.jit(maml.make_meta_step(t.affine_nll, opt, cfg, axis_name=None))(
      params, opt.init(params), tasks)
  for parallel in ('shard_map', 'pmap'):
    traces = []
    inner = maml.make_meta_step(t.affine_nll, opt, cfg)
    step = maml.parallel_meta_step(lambda *a: traces.append(1) or inner(*a), parallel)
    new, _, m = step(t.affine_params(), opt.init(params), tasks)
    p2, s2, _ = step(t.affine_params(), opt.init(params), t.affine_tasks(8, 8))
    step(p2, s2, t.affine_tasks(9, 8))
    diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
               for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(ref)))
    moved = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(params)))
    out[f'{parallel}/{first_order}'] = [diff, moved, abs(float(m['loss']) - float(ref_m['loss'])), len(traces)]
print(json.dumps(out))
'''


def test_four_devices_match_one_device():
  """8 tasks over 4 forced CPU devices (fresh process): shard_map and pmap update params like one device
  (vmap over all 8 tasks), and trace once."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, 'tests')]),
             JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-c', _MULTI_DEVICE], env=env, capture_output=True, text=True,
                        timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads(proc.stdout.strip().splitlines()[-1])
  assert len(results) == 4
  for name, (diff, moved, loss_diff, traces) in results.items():
    assert traces == 1, (name, traces)  # three calls, fresh and returned params: one trace
    assert moved > 1e-3, name  # the step did something
    assert diff < 1e-5, (name, diff)
    assert loss_diff < 1e-5, (name, loss_diff)


def test_normalized_inner_step_moves_exactly_inner_lr():
  """Each normalised step has L2 length inner_lr, whatever the gradient's size (here x1e4 apart)."""
  theta = jnp.array([1.0, -2.0])
  for scale in (1.0, 1e4):
    task = jax.tree.map(lambda x: x * scale, quadratic_task(6))
    one = maml.adapt(quadratic_loss, theta, task['support'], 0.05, 1, normalized=True)
    np.testing.assert_allclose(jnp.linalg.norm(one - theta), 0.05, rtol=1e-5)
    three = maml.adapt(quadratic_loss, theta, task['support'], 0.05, 3, normalized=True)
    assert float(jnp.linalg.norm(three - theta)) > 0.1  # three steps of 0.05 along a consistent direction


def _flow_task_loss(n_blocks=2, hidden=32, dim=10):
  from maml_iqr import detector  # noqa: PLC0415
  from maml_iqr.models import flow as flow_lib  # noqa: PLC0415
  flow = flow_lib.Flow(dim=dim, n_blocks=n_blocks, hidden=hidden, zero_init=False)
  params = flow.init(jax.random.PRNGKey(0), jnp.zeros((1, dim)))
  return (lambda p, x: detector.loss_fn(flow, p, x.reshape(-1, x.shape[-1]))), params


@pytest.mark.parametrize('normalized', [True, False])
def test_low_rank_inner_loop_gives_the_dense_inner_loops_meta_loss_and_gradient(normalized, monkeypatch):
  """The flow's first-order inner loop runs without adapted weights (`lowrank`); its meta-loss, meta-gradient and
  inner-loop drops must be those of the dense loop (`adapt`), so a wrong outer product, a missed bias step or a
  wrong step scale fails here."""
  loss_fn, params = _flow_task_loss(n_blocks=1)  # one coupling block: every kind of layer, half the compile
  low_rank_loss = maml.lowrank.adapted_loss
  rng = np.random.default_rng(1)
  tasks = {'support': jnp.asarray(rng.normal(size=(3, 2, 4, 10)), jnp.float32),
           'query': jnp.asarray(rng.normal(size=(3, 1, 4, 10)), jnp.float32)}
  cfg = maml.MamlConfig(inner_lr=0.5, inner_steps=3, normalized=normalized)
  used = []
  monkeypatch.setattr(maml.lowrank, 'adapted_loss', lambda *a: used.append(1) or low_rank_loss(*a))

  def dense_objective(loss_fn, p, task, cfg):
    adapted = maml.adapt(loss_fn, p, task['support'], cfg.inner_lr, cfg.inner_steps, True, cfg.normalized)
    return loss_fn(adapted, task['query'])

  # jitted: op by op, the two inner loops and their gradients took a minute to dispatch
  fast, fast_grad = jax.jit(jax.value_and_grad(lambda p: maml.batched_meta_loss(loss_fn, p, tasks, cfg)))(params)
  dense, dense_grad = jax.jit(jax.value_and_grad(
      lambda p: maml.batched_meta_loss(loss_fn, p, tasks, cfg, dense_objective)))(params)
  plain_grad = jax.jit(jax.grad(lambda p: jnp.mean(jax.vmap(lambda t: loss_fn(p, t['query']))(tasks))))(params)
  moved = optax.tree.norm(jax.tree.map(jnp.subtract, dense_grad, plain_grad)) / optax.tree.norm(plain_grad)
  assert moved > 0.05  # the inner loop changes the gradient: the comparison below means something
  assert used  # the fast path was taken
  np.testing.assert_allclose(float(fast), float(dense), rtol=1e-5)
  chex.assert_trees_all_close(fast_grad, dense_grad, rtol=1e-4, atol=1e-6)

  drops = jax.jit(lambda p: maml.diagnostics(loss_fn, p, tasks, cfg))(params)
  support_drop = jax.jit(lambda p: jnp.mean(jax.vmap(lambda t: loss_fn(p, t['support']) - loss_fn(
      maml.adapt(loss_fn, p, t['support'], cfg.inner_lr, cfg.inner_steps, True, normalized), t['support']))(tasks)))(
          params)
  np.testing.assert_allclose(float(drops['support_drop']), float(support_drop), rtol=1e-4)


def test_models_with_parameters_outside_dense_layers_use_the_dense_inner_loop():
  assert maml.lowrank.dense_rows(affine_nll, affine_params(), affine_tasks(0, 1)['support']) is None
