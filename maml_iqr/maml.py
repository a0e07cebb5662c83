"""MAML over tasks drawn from the (shrinking) training set, generic over the model.

The model enters only as `loss_fn(params, batch) -> scalar`, where `batch` is any pytree of arrays; in this
project it is the cached backbone features of a task's images (plus an optional weight vector so that padded
rows count zero) and the flow's NLL. The inner loop is SGD (plain or normalised) in a `lax.scan`; first-order on
a model made of `nn.Dense` layers it runs without forming adapted weights (`lowrank`). The outer (meta) gradient
is averaged over a batch of tasks with `vmap` and over devices with `pmean`, then applied by an optax
transformation that the caller builds (the method's meta lr goes there).

A task is `task_size` images drawn without replacement from the images still kept; the first
`support_size(task_size, query_fraction)` are the support set (inner loop), the rest the query set (outer
loss). The paper publishes none of its MAML settings; the defaults below are those of the same group's later
public code (CoMet): inner lr 1e-4, meta lr 2e-4, 5 inner steps, 4 tasks per meta-batch, 5-image tasks with
30 % held out as the query, first-order updates.

Tasks are a pytree `{'support': batch, 'query': batch}`; a batch of tasks stacks them on a leading axis.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from maml_iqr import lowrank

Params = Any
Batch = Any  # pytree of arrays with a leading example axis
Task = dict  # {'support': Batch, 'query': Batch}
LossFn = Callable[[Params, Batch], jax.Array]
# meta_objective(loss_fn, params, task, cfg) -> scalar, for ONE task (not batched); see `maml_objective`.
MetaObjective = Callable[[LossFn, Params, Task, Any], jax.Array]


@dataclasses.dataclass(frozen=True)
class MamlConfig:
  """MAML settings. Any object with these attributes works too (an ml_collections ConfigDict does).

  `meta_lr` is not read here: it is the default for the optax optimiser that the caller builds. `objective`
  names an entry of `OBJECTIVES`.
  """
  inner_lr: float = 1e-4
  inner_steps: int = 5
  first_order: bool = True
  meta_lr: float = 2e-4
  tasks_per_step: int = 4
  task_size: int = 5
  query_fraction: float = 0.3
  objective: str = 'maml'
  normalized: bool = False


def adapt(loss_fn: LossFn, params: Params, support: Batch, inner_lr: float, inner_steps: int,
          first_order: bool = True, normalized: bool = False) -> Params:
  """Inner loop: `inner_steps` gradient steps on the support set.

  Plain SGD moves by `inner_lr` times the gradient, whose size changes by orders of magnitude as a flow trains
  (a fixed lr that does measurable work early diverges late). With `normalized` every step moves the
  parameters by exactly `inner_lr` in L2 norm, along the gradient. With `first_order` the inner gradient is a
  constant for the outer derivative (FOMAML): the outer gradient is then the query gradient at the adapted
  parameters, and no second derivatives are formed.
  """
  def sgd_step(p, _):
    g = jax.grad(loss_fn)(p, support)
    if first_order:
      g = jax.lax.stop_gradient(g)
    scale = inner_lr / (optax.tree.norm(g) + 1e-12) if normalized else inner_lr
    return jax.tree.map(lambda w, gw: w - scale * gw, p, g), None

  if not first_order:  # keep each step's parameters only, recompute its backward pass (the memory is the model's)
    sgd_step = jax.checkpoint(sgd_step)
  params, _ = jax.lax.scan(sgd_step, params, None, length=inner_steps)
  return params


def adapted_loss(loss_fn: LossFn, params: Params, support: Batch, inner_lr: float, inner_steps: int,
                 first_order: bool = True, normalized: bool = False) -> Callable[[Batch], jax.Array]:
  """`batch -> loss_fn(adapt(params, support), batch)`: the loss at the parameters the inner loop reaches.

  First-order, on a model made of `nn.Dense` layers (the flow), the adapted weights are never formed
  (`lowrank`: the same numbers without writing every task's copy of every weight at every step); otherwise
  `adapt`'s adapted parameters.
  """
  if first_order:
    layers = lowrank.dense_rows(loss_fn, params, support)
    if layers is not None:
      return lowrank.adapted_loss(loss_fn, params, support, inner_lr, inner_steps, normalized, layers)
  adapted = adapt(loss_fn, params, support, inner_lr, inner_steps, first_order, normalized)
  return lambda batch: loss_fn(adapted, batch)


OBJECTIVES: dict[str, MetaObjective] = {}


def register_objective(name: str):
  """Decorator: makes a meta-objective `(loss_fn, params, task, cfg) -> scalar` selectable by name
  (`--config.maml.objective=name`). The meta-step differentiates its mean over tasks w.r.t. `params`."""
  def add(fn: MetaObjective) -> MetaObjective:
    OBJECTIVES[name] = fn
    return fn
  return add


def get_objective(name: str) -> MetaObjective:
  if name not in OBJECTIVES:
    raise ValueError(f'unknown meta-objective {name!r}; registered: {sorted(OBJECTIVES)}')
  return OBJECTIVES[name]


def _union(task: Task) -> Batch:
  """Support and query rows of one task as one batch."""
  return jax.tree.map(lambda s, q: jnp.concatenate([s, q]), task['support'], task['query'])


@register_objective('maml')
def maml_objective(loss_fn: LossFn, params: Params, task: Task, cfg) -> jax.Array:
  """MAML: query loss of the parameters adapted on the support set (first or second order by
  `cfg.first_order`)."""
  return adapted_loss(loss_fn, params, task['support'], cfg.inner_lr, cfg.inner_steps, cfg.first_order,
                      cfg.normalized)(task['query'])


@register_objective('reptile')
def reptile_objective(loss_fn: LossFn, params: Params, task: Task, cfg) -> jax.Array:
  """Reptile (the first-order update of CoMet): adapt on the whole task; the gradient of
  0.5 ||params - stop_gradient(adapted)||^2 is params - adapted, Reptile's direction."""
  adapted = jax.lax.stop_gradient(adapt(loss_fn, params, _union(task), cfg.inner_lr, cfg.inner_steps, True,
                                        cfg.normalized))
  return 0.5 * sum(jnp.sum((p - a) ** 2) for p, a in zip(jax.tree.leaves(params), jax.tree.leaves(adapted)))


@register_objective('none')
def no_meta_objective(loss_fn: LossFn, params: Params, task: Task, cfg) -> jax.Array:
  """The equal-budget control: the plain loss on the union of the task's support and query rows, so each
  meta-step becomes an ordinary optimiser step on the same rows, at the same lr, as often."""
  del cfg
  return loss_fn(params, _union(task))


def batched_meta_loss(loss_fn: LossFn, params: Params, tasks: Task, cfg,
                      meta_objective: MetaObjective | None = None) -> jax.Array:
  """Mean meta-objective over tasks stacked along the leading axis of every leaf of `tasks`
  (`meta_objective` defaults to the one `cfg.objective` names)."""
  meta_objective = meta_objective or get_objective(cfg.objective)
  one_task = lambda task: meta_objective(loss_fn, params, task, cfg)
  if cfg.first_order:
    return jnp.mean(jax.vmap(one_task)(tasks))
  # Second order differentiates through every inner step of every task. One task at a time, its forward pass
  # recomputed for the backward one, keeps a single task's inner loop in memory: XLA's buffers for DifferNet's
  # flow at 4 tasks 50 GB -> 6.2 GB (BENCHMARKS.md, "Second-order MAML at DifferNet's width").
  return jnp.mean(jax.lax.map(jax.checkpoint(one_task), tasks))


def diagnostics(loss_fn: LossFn, params: Params, tasks: Task, cfg,
                meta_objective: MetaObjective | None = None) -> dict[str, jax.Array]:
  """Whether the inner loop does work, at `params`, over a batch of tasks, in the loss's own units.

  support_drop, query_drop: the loss at params minus at the adapted params (adapted on the support set),
  mean over tasks; grad_cosine: the cosine between the meta-gradient and the plain query-loss gradient at
  params. A cosine near 1 with drops near 0 means meta-training is ordinary training on the query rows.
  """
  def drops(task):
    at_adapted = adapted_loss(loss_fn, params, task['support'], cfg.inner_lr, cfg.inner_steps, True,
                              cfg.normalized)
    return (loss_fn(params, task['support']) - at_adapted(task['support']),
            loss_fn(params, task['query']) - at_adapted(task['query']))
  support_drop, query_drop = jax.vmap(drops)(tasks)
  meta_grad = jax.grad(lambda p: batched_meta_loss(loss_fn, p, tasks, cfg, meta_objective))(params)
  query_grad = jax.grad(lambda p: jnp.mean(jax.vmap(lambda t: loss_fn(p, t['query']))(tasks)))(params)
  dot = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(meta_grad), jax.tree.leaves(query_grad)))
  cosine = dot / (optax.tree.norm(meta_grad) * optax.tree.norm(query_grad) + 1e-30)
  return {'support_drop': jnp.mean(support_drop), 'query_drop': jnp.mean(query_drop), 'grad_cosine': cosine}


def make_meta_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, cfg,
                   axis_name: str | None = 'tasks', meta_objective: MetaObjective | None = None):
  """Per-device meta step `step(params, opt_state, tasks) -> (params, opt_state, metrics)`.

  `tasks` is this device's share of the meta-batch; the loss and the outer gradient are `pmean`ed over
  `axis_name`, so the step must run under `jax.shard_map` or `jax.pmap` binding that name (see
  `sharded_meta_step`, `pmapped_meta_step`). With `axis_name=None` there are no collectives and the step can
  be jitted directly (one device, all tasks). `meta_objective` defaults to the one `cfg.objective` names.
  """
  meta_objective = meta_objective or get_objective(cfg.objective)
  def step(params, opt_state, tasks):
    local = params
    if axis_name is not None:
      # Under shard_map (check_vma) the gradient w.r.t. replicated params would already be psummed over
      # devices; marking them device-varying keeps it per-device, as under pmap, so the pmean is right.
      local = jax.lax.pcast(params, axis_name, to='varying')
    loss, grads = jax.value_and_grad(
        lambda p: batched_meta_loss(loss_fn, p, tasks, cfg, meta_objective))(local)
    if axis_name is not None:
      loss, grads = jax.lax.pmean((loss, grads), axis_name)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, {'loss': loss, 'grad_norm': optax.tree.norm(grads)}

  return step


def task_mesh(axis_name: str = 'tasks', devices=None) -> jax.sharding.Mesh:
  """1-D mesh over all (or the given) devices, of every process in a multi-process run; Auto axes so jit moves
  host inputs onto it by itself."""
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), (axis_name,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def _global(x, sharding: jax.sharding.Sharding):
  """`x` placed on a sharding that spans several processes, built from this process's copy of the whole value:
  each of its devices takes its slice (`jax.make_array_from_callback`). Every process must pass the same value;
  nothing checks it, since an all-gather per step would cost more than the step."""
  if isinstance(x, jax.Array) and x.sharding == sharding:
    return x
  host = np.asarray(x)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def place(tree, sharding: jax.sharding.Sharding):
  """`jax.device_put(tree, sharding)` within one process; across processes (a sharding whose devices are not
  all this process's), the same placement built from each process's copy (`_global`)."""
  if sharding.is_fully_addressable:
    return jax.device_put(tree, sharding)
  return jax.tree.map(lambda x: _global(x, sharding), tree)


def sharded_meta_step(step, mesh: jax.sharding.Mesh | None = None, axis_name: str = 'tasks'):
  """jit(shard_map(step)): tasks split along their leading axis, params and opt_state replicated.

  The number of tasks must be a multiple of the number of devices. params and opt_state are donated: use
  the returned ones. In a multi-process run (`jax.distributed`) the default mesh spans the devices of every
  process: each process passes the same params and the same host tasks (drawn from the same seeded host RNG),
  each device takes its slice of the tasks, and the outer gradient is averaged over all devices.
  """
  mesh = task_mesh(axis_name) if mesh is None else mesh
  mapped = jax.shard_map(step, mesh=mesh, in_specs=(P(), P(), P(axis_name)), out_specs=P())
  jitted = jax.jit(mapped, donate_argnums=(0, 1))
  replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P(axis_name))

  def call(params, opt_state, tasks):
    # Inputs placed as the outputs come back: jit's cache key then never changes (one trace, one compile).
    params, opt_state = place((params, opt_state), replicated)
    return jitted(params, opt_state, place(tasks, split))

  return call


def pmapped_meta_step(step, axis_name: str = 'tasks', devices=None):
  """pmap(step) with the same call signature as `sharded_meta_step`: tasks (n_tasks, ...) are reshaped to
  (n_devices, n_tasks // n_devices, ...); params and opt_state go in and come out unreplicated (donated).

  The devices default to those of every process; in a multi-process run each process passes the same host
  tasks and feeds its own devices their rows, as pmap wants."""
  devices = jax.devices() if devices is None else devices
  n = len(devices)
  mine = np.asarray([i for i, d in enumerate(devices) if d.process_index == jax.process_index()])
  mapped = jax.pmap(step, axis_name, in_axes=(None, None, 0), out_axes=None, devices=devices,
                    donate_argnums=(0, 1))
  # Where pmap (built on shard_map in JAX >= 0.8) leaves unmapped outputs; placing the inputs there too
  # avoids a second trace on the second call. A mismatch costs one extra trace, never a wrong result.
  replicated = NamedSharding(jax.sharding.Mesh(np.array(devices), (axis_name,)), P())

  def call(params, opt_state, tasks):
    def split(x):
      if x.shape[0] % n:
        raise ValueError(f'{x.shape[0]} tasks do not split over {n} devices')
      rows = x.reshape(n, x.shape[0] // n, *x.shape[1:])
      return rows if len(mine) == n else rows[mine]
    params, opt_state = place((params, opt_state), replicated)
    return mapped(params, opt_state, jax.tree.map(split, tasks))

  return call


def parallel_meta_step(step, parallel: str = 'shard_map', axis_name: str = 'tasks'):
  """`sharded_meta_step` (default) or `pmapped_meta_step` by name, e.g. from a config string; both span the
  devices of every process."""
  if parallel == 'shard_map':
    return sharded_meta_step(step, axis_name=axis_name)
  if parallel == 'pmap':
    return pmapped_meta_step(step, axis_name=axis_name)
  raise ValueError(f"parallel must be 'shard_map' or 'pmap', got {parallel!r}")


def support_size(task_size: int, query_fraction: float) -> int:
  """round(task_size * (1 - query_fraction)), halves rounded up (5 images, 30 % query -> 4 + 1)."""
  n_support = int(np.floor(task_size * (1 - query_fraction) + 0.5))
  if not 1 <= n_support < task_size:
    raise ValueError(f'task_size={task_size}, query_fraction={query_fraction} leaves an empty support or query')
  return n_support


def sample_tasks(rng, kept, n_tasks: int, task_size: int, query_fraction: float):
  """Index arrays (n_tasks, n_support), (n_tasks, n_query) into the full training set.

  `kept` is a boolean mask over the training set, an index array of the kept images, or their count (all
  kept). Each task draws `task_size` kept images without replacement (tasks may share images); the shapes
  depend only on the arguments, never on how many images are kept, so removing images recompiles nothing.
  `rng` is a `np.random.Generator`, a seed, or a JAX key; sampling happens on the host.
  """
  kept = np.asarray(kept)
  if kept.dtype == bool:
    kept = np.flatnonzero(kept)
  elif kept.ndim == 0:
    kept = np.arange(int(kept))
  if len(kept) < task_size:
    raise ValueError(f'only {len(kept)} images kept, a task needs {task_size}')
  if isinstance(rng, jax.Array):
    rng = jax.random.key_data(rng) if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng
    rng = np.asarray(rng)
  rng = np.random.default_rng(rng)
  n_support = support_size(task_size, query_fraction)
  idx = np.stack([rng.choice(kept, task_size, replace=False) for _ in range(n_tasks)]).astype(np.int32)
  return idx[:, :n_support], idx[:, n_support:]


def gather_tasks(data: Batch, support_idx, query_idx) -> Task:
  """Stacked tasks {'support': data[support_idx], 'query': data[query_idx]} from per-image data."""
  return {'support': jax.tree.map(lambda x: x[support_idx], data),
          'query': jax.tree.map(lambda x: x[query_idx], data)}
