"""The first-order inner loop without adapted weights, for models whose parameters all sit in `nn.Dense` layers.

One inner gradient step changes a Dense kernel by `-s * X^T D`, where X (n, in) holds the layer's inputs on the
n support rows and D (n, out) the loss's gradient w.r.t. its outputs: a sum of n outer products. After k steps
the adapted layer computes `x W' + b' = x W + b - sum_j (x X_j^T) (s_j D_j) - sum_j s_j 1^T D_j`, which costs
two thin matmuls per step and never writes W'. The plain inner loop (`maml.adapt`) writes every task's adapted
copy of every weight at every step: on a CPU that memory traffic, not arithmetic, bounds a meta-step
(BENCHMARKS.md, "One refinement iteration, profiled").

X and D come from one backward pass per step: a zero added to every Dense output (`eps`) has the gradient D,
and the inputs are recorded on the way forward. With first-order MAML they are constants for the outer
derivative, so the query loss at the adapted layers differentiates to the query gradient at the adapted
parameters, exactly as `maml.adapt(first_order=True)` gives (tests/test_maml.py compares the two).

Models are intercepted at a distance (`nn.intercept_methods`), so `loss_fn(params, batch)` stays the only
interface; `dense_rows` says whether a loss qualifies (every parameter a Dense kernel or bias, each layer called
once per evaluation), and `maml` falls back to `adapt` when it does not.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Path = tuple


def _is_dense_call(context) -> bool:
  return isinstance(context.module, nn.Dense) and context.method_name == "__call__"


def _leaf_paths(params) -> set[Path]:
  return {tuple(getattr(k, "key", getattr(k, "name", k)) for k in path)
          for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]}


def dense_rows(loss_fn: Callable, params, batch) -> dict[Path, tuple[int, bool]] | None:
  """{Dense module path: (rows it sees, whether it has a bias)} when `loss_fn(params, batch)` qualifies for the
  low-rank inner loop; None when a parameter is not a Dense kernel or bias of a Flax model's `params`
  collection, or a layer is called twice. Shapes only: nothing is computed."""
  rows: dict[Path, int] = {}
  repeated = []

  def record(next_fun, args, kwargs, context):
    if _is_dense_call(context):
      path = tuple(context.module.path)
      if path in rows:
        repeated.append(path)
      rows[path] = int(np.prod(args[0].shape[:-1]))
    return next_fun(*args, **kwargs)

  shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), (params, batch))
  with nn.intercept_methods(record):
    jax.eval_shape(lambda *args: loss_fn(*args), *shapes)  # a new function: a cached trace would record nothing
  covered = {("params",) + p + (leaf,) for p in rows for leaf in ("kernel", "bias")}
  leaves = _leaf_paths(params)
  if repeated or not rows or not leaves <= covered:
    return None
  return {p: (n, ("params",) + p + ("bias",) in leaves) for p, n in rows.items()}


def _kernel(params, path: Path):
  node = params["params"]
  for key in path:
    node = node[key]
  return node["kernel"]


def adapted_loss(loss_fn: Callable, params, support, inner_lr: float, inner_steps: int, normalized: bool,
                 layers: dict[Path, tuple[int, bool]]) -> Callable:
  """`batch -> loss_fn(adapted, batch)` for the parameters `inner_steps` first-order steps on `support` reach
  (plain SGD at `inner_lr`, or steps of L2 length `inner_lr` with `normalized`), as `maml.adapt` would give
  them; differentiable w.r.t. `params` as first-order MAML's outer loss. `layers` is `dense_rows`'s answer."""
  frozen = jax.lax.stop_gradient(params)
  n_step = {p: n for p, (n, _) in layers.items()}
  bias = {p: float(has_bias) for p, (_, has_bias) in layers.items()}  # a layer without one gets no bias step
  shapes = {p: _kernel(params, p).shape for p in layers}
  paths = list(layers)
  # Per layer: inputs A (steps * n, in), scaled output gradients B (steps * n, out), bias shift (out,); the
  # rows of steps not yet taken are zero and add nothing. The zeros vary as the support rows and the parameters
  # do: under shard_map a scan's carry must vary over the task axis from the start, as its body's output does.
  zero = sum(jnp.zeros_like(jax.tree.leaves(tree)[0], jnp.float32, shape=()) for tree in (support, params))
  empty = {p: {"A": jnp.broadcast_to(zero, (inner_steps * n_step[p], shapes[p][0])),
               "B": jnp.broadcast_to(zero, (inner_steps * n_step[p], shapes[p][1])),
               "db": jnp.broadcast_to(zero, (shapes[p][1],))} for p in paths}

  def intercepted(factors, eps=None, inputs=None):
    def interceptor(next_fun, args, kwargs, context):
      if not _is_dense_call(context):
        return next_fun(*args, **kwargs)
      path, x = tuple(context.module.path), args[0]
      f = factors[path]
      flat = x.reshape(-1, x.shape[-1])
      y = next_fun(*args, **kwargs) - ((flat @ f["A"].T) @ f["B"]).reshape(x.shape[:-1] + (-1,)) - f["db"]
      if inputs is not None:
        inputs[path] = flat
      if eps is not None:
        y = y + eps[path].reshape(y.shape)
      return y
    return nn.intercept_methods(interceptor)

  def step(factors, k):
    def support_loss(eps):
      inputs = {}
      with intercepted(factors, eps, inputs):
        loss = loss_fn(frozen, support)
      return loss, inputs
    eps = {p: jnp.zeros((n_step[p], shapes[p][1]), jnp.float32) for p in paths}
    (_, xs), ds = jax.value_and_grad(support_loss, has_aux=True)(eps)
    # ||grad||^2 over every kernel (||X^T D||_F^2 = sum((X X^T) * (D D^T))) and bias (||1^T D||^2)
    sq = sum(jnp.sum((xs[p] @ xs[p].T) * (ds[p] @ ds[p].T)) + bias[p] * jnp.sum(jnp.sum(ds[p], 0) ** 2)
             for p in paths)
    scale = inner_lr / (jnp.sqrt(sq) + 1e-12) if normalized else inner_lr
    return {p: {"A": jax.lax.dynamic_update_slice_in_dim(factors[p]["A"], xs[p], k * n_step[p], 0),
                "B": jax.lax.dynamic_update_slice_in_dim(factors[p]["B"], scale * ds[p], k * n_step[p], 0),
                "db": factors[p]["db"] + bias[p] * scale * jnp.sum(ds[p], 0)} for p in paths}, None

  factors, _ = jax.lax.scan(step, empty, jnp.arange(inner_steps))
  factors = jax.lax.stop_gradient(factors)

  def loss_at_adapted(batch):
    with intercepted(factors):
      return loss_fn(params, batch)

  return loss_at_adapted
