"""The DifferNet-style detector: a flow trained by NLL on cached view features, scored over fixed views.

Training runs fixed-shape jitted chunks of `lax.scan` steps (and single steps for the remainder) over an index
array built on the host, so the kept set can shrink between refinement iterations without a recompile: only
indices change, never shapes.
"""
from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from maml_iqr.common import log
from maml_iqr.models import flow as flow_lib
from maml_iqr.workdir import raise_if_stopped

STEPS_PER_CALL = 16  # training steps per jitted chunk: one host round trip per chunk
# Features are clipped to +-FEATURE_BOUND before the flow. Real backbone features are far inside it
# (EfficientNet-Lite0 ends in ReLU6: [0, 6]; AlexNet's pooled ReLU features are O(10)), so it changes nothing
# for them; it keeps z and the scores finite in float32 on absurd inputs (measured: an 8-block flow with
# PyTorch init scores a 1e10 feature vector as inf, a 1e4 one as ~4e26). NaN stays NaN, so it is still caught.
FEATURE_BOUND = 1e4


def bound_features(x: jax.Array) -> jax.Array:
  return jnp.clip(x, -FEATURE_BOUND, FEATURE_BOUND)


def make_flow(config, dim: int) -> flow_lib.Flow:
  f = config.flow
  return flow_lib.Flow(dim, n_blocks=f.n_blocks, hidden=f.hidden, clamp=f.clamp, permutation_seed=config.seed,
                       zero_init=f.zero_init)


def init_params(flow: flow_lib.Flow, seed: int):
  return flow.init(jax.random.key(seed), jnp.zeros((1, flow.dim), jnp.float32))


def optimizer_key(t) -> tuple:
  """The optimiser's settings as a hashable key (so jitted steps can be cached per setting)."""
  return (t.lr, t.b1, t.b2, t.eps, t.weight_decay)


@functools.lru_cache(maxsize=None)
def _optimizer(lr, b1, b2, eps, weight_decay) -> optax.GradientTransformation:
  return optax.chain(optax.add_decayed_weights(weight_decay), optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
                     optax.scale(-lr))


def make_optimizer(t) -> optax.GradientTransformation:
  """DifferNet's torch.optim.Adam(lr, betas, eps, weight_decay): L2 is added to the gradient, not AdamW.

  The same settings give the same object, so the jitted steps built on it are reused, never recompiled.
  """
  return _optimizer(*optimizer_key(t))


def loss_fn(flow: flow_lib.Flow, params, x: jax.Array) -> jax.Array:
  """DifferNet's training loss: the batch mean of the per-dimension NLL under the flow's distrax density
  (`Flow.nll`: -log p(x) / D without the constant 0.5 log(2 pi))."""
  return jnp.mean(flow.apply(params, bound_features(x), method=flow_lib.Flow.nll))


def gather_cached(feats: jax.Array, ix: jax.Array) -> jax.Array:
  """Training rows from the feature cache: feats (N, K, D), ix (R, 2) [image, view] -> (R, D)."""
  return feats[ix[:, 0], ix[:, 1]]


@functools.lru_cache(maxsize=None)
def recompute_features(features_fn):
  """Training rows computed from the images every step, as the reference does (the backbone is frozen, so
  this gives the cached path's numbers at many times its cost). data = (backbone params, images (N, H, W, 3)
  uint8, view params (N, K, 4))."""
  from maml_iqr import features as features_lib

  def batch(data, ix):
    bparams, images, views = data
    return features_lib.view_features(features_fn, bparams, images[ix[:, 0]],
                                      views[ix[:, 0], ix[:, 1]][:, None])[:, 0]

  return batch


def _adam_step(flow: flow_lib.Flow, optimizer: optax.GradientTransformation, batch_fn):
  """(params, opt_state, data, ix (R, 2)) -> params, opt_state, loss. Row r trains on view ix[r, 1] of image
  ix[r, 0], taken from `data` by `batch_fn` (the feature cache by default)."""
  grad_fn = jax.value_and_grad(functools.partial(loss_fn, flow))

  def step(params, opt_state, data, ix):
    loss, grads = grad_fn(params, batch_fn(data, ix))
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


@functools.lru_cache(maxsize=None)
def make_train_chunk(flow: flow_lib.Flow, optimizer: optax.GradientTransformation, batch_fn=gather_cached):
  """chunk(params, opt_state, data, idx (S, R, 2)) -> params, opt_state, losses (S,): S Adam steps in one
  jitted `lax.scan` (one call, one host round trip). params and opt_state are donated.

  `train` calls it with S = STEPS_PER_CALL only and runs the remainder with `make_train_step`, so there are two
  compiled shapes and no padding. An earlier design padded the last chunk with steps made no-ops by
  `jnp.where(valid, new, old)`; with that select XLA:CPU copied every weight and Adam moment once per step
  (0.50-0.53 against 0.40-0.42 s per step at DifferNet's size, benchmarks/bench_core.py section `train`).
  """
  step = _adam_step(flow, optimizer, batch_fn)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def chunk(params, opt_state, data, idx):
    def body(carry, ix):
      params, opt_state, loss = step(*carry, ix)
      return (params, opt_state, data), loss
    (params, opt_state, _), losses = jax.lax.scan(body, (params, opt_state, data), idx)
    return params, opt_state, losses

  return chunk


@functools.lru_cache(maxsize=None)
def make_train_step(flow: flow_lib.Flow, optimizer: optax.GradientTransformation, batch_fn=gather_cached):
  """step(params, opt_state, data, ix (R, 2)) -> params, opt_state, loss: one jitted Adam step, for the steps
  of a `train` call that do not fill a chunk. params and opt_state are donated."""
  return jax.jit(_adam_step(flow, optimizer, batch_fn), donate_argnums=(0, 1))


def epoch_indices(rng: np.random.Generator, kept: np.ndarray, batch_size: int, n_views: int,
                  n_cached: int) -> np.ndarray:
  """One epoch over the kept images: (steps, batch_size * n_views, 2) [image, cached view] pairs.

  Each image appears once per epoch with `n_views` distinct random cached views; the last batch is filled
  with random kept images so that every step has the same shape.
  """
  order = rng.permutation(kept)
  n_steps = -(-len(order) // batch_size)
  fill = rng.choice(kept, size=n_steps * batch_size - len(order), replace=True)
  images = np.concatenate([order, fill]).reshape(n_steps, batch_size)
  views = np.argsort(rng.random((n_steps, batch_size, n_cached)), axis=-1)[..., :n_views]
  pairs = np.stack([np.repeat(images[..., None], n_views, -1), views], -1)
  return pairs.reshape(n_steps, batch_size * n_views, 2)


def train(flow, params, optimizer, data, kept: np.ndarray, epochs: int, rng: np.random.Generator, t,
          n_cached: int | None = None, batch_fn=gather_cached, opt_state=None, label: str = "",
          log_every: float = 20.0):
  """Trains `params` for `epochs` epochs over the kept images' views. Returns params, opt_state, losses.

  `data` is the feature cache (N, K, D) by default, or whatever `batch_fn` reads (see `recompute_features`);
  `n_cached` is K, the number of views per image to draw from.
  """
  chunk, step = make_train_chunk(flow, optimizer, batch_fn), make_train_step(flow, optimizer, batch_fn)
  n_cached = data.shape[1] if n_cached is None else n_cached
  if opt_state is None:
    opt_state = optimizer.init(params)
  idx = np.concatenate([epoch_indices(rng, kept, t.batch_size, t.n_views, n_cached) for _ in range(epochs)])
  n = len(idx)
  losses, start, last, i = [], time.time(), time.time(), 0
  while i < n:
    raise_if_stopped()
    if n - i >= STEPS_PER_CALL:
      params, opt_state, l = chunk(params, opt_state, data, jnp.asarray(idx[i:i + STEPS_PER_CALL]))
    else:  # the remainder, one step per call (dispatched asynchronously; read once below)
      ls = []
      for ix in idx[i:]:
        params, opt_state, loss = step(params, opt_state, data, jnp.asarray(ix))
        ls.append(loss)
      l = jnp.stack(ls)
    losses.append(np.asarray(l))
    i += len(losses[-1])
    if not np.all(np.isfinite(losses[-1])):
      j = int(np.argmin(np.isfinite(losses[-1])))
      raise FloatingPointError(f"flow training {label}: the loss became non-finite ({losses[-1][j]}) at step "
                               f"{i - len(losses[-1]) + j} of {n}; lower --config.train.lr or check the "
                               "features for NaN")
    if time.time() - last > log_every:
      last = time.time()
      log(f"train {label}: step {i}/{n}, loss {losses[-1].mean():.4f}, "
          f"{(time.time() - start) / i * (n - i):.0f} s left")
  return params, opt_state, np.concatenate(losses) if losses else np.zeros(0)


@functools.lru_cache(maxsize=None)
def make_scorer(flow: flow_lib.Flow, kind: str):
  """score(params, feats (B, V, D)) -> (B,): the per-view score averaged over the V views."""

  def one_view(params, x):
    if kind == "z2":  # DifferNet's test score: z only, no log-det term
      return flow_lib.z2_score(flow.apply(params, bound_features(x))[0])
    return flow.apply(params, bound_features(x), method=flow_lib.Flow.nll)

  @jax.jit
  def score(params, feats):
    per_view = jax.vmap(functools.partial(one_view, params), in_axes=1, out_axes=1)(feats)
    return per_view.mean(axis=1)

  return score


def score(flow, params, feats: np.ndarray | jax.Array, kind: str, batch_size: int = 64) -> np.ndarray:
  """Scores every image (rows of feats (N, V, D)) in fixed-size padded batches."""
  scorer = make_scorer(flow, kind)
  n = feats.shape[0]
  out = np.zeros(n, np.float32)
  for i in range(0, n, batch_size):
    idx = np.arange(i, i + batch_size) % n
    s = np.asarray(scorer(params, jnp.asarray(feats[idx])))
    out[i:i + min(batch_size, n - i)] = s[:min(batch_size, n - i)]
  return out
