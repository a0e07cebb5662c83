"""DifferNet's normalizing flow: permutations and two-sided GLOW affine couplings.

Follows the reference code (marco-rudolph/differnet, `freia_funcs.py`): block k
permutes the D feature dims with `np.random.seed(permutation_seed + k)`, then a
GLOW coupling transforms the halves x1 (D // 2 dims) and x2 (D - D // 2 dims):

  y1 = exp(s2(x2)) * x1 + t2(x2);  y2 = exp(s1(y1)) * x2 + t1(y1)

with soft-clamped log-scales `clamp * 0.636 * atan(s / clamp)`. Each subnet is
an MLP `half_in -> hidden (x subnet_depth, ReLU) -> 2 * half_out`, whose output
is split into (s, t) in that order. The blocks are distrax bijectors chained
with `distrax.Chain`, so `Flow.__call__` is `forward_and_log_det`.

The density the detector trains on is distrax's: `Flow.distribution()` is `distrax.Transformed(N(0, I),
distrax.Inverse(bijector))`, the law of x = f^-1(z) for z ~ N(0, I). Its `log_prob(x)` runs the flow forward
once (distrax inverts the Inverse): log p(x) = log N(f(x); 0, I) + log|det df/dx|. DifferNet's loss is that
NLL divided by D, without the constant 0.5 log(2 pi) per dimension: `nll_per_dim`.
"""

from typing import Sequence

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# DifferNet's constant (about 2 / pi): log-scales stay within about +-clamp.
_ATAN_SCALE = 0.636


def soft_clamp(s, clamp):
  """Bounds log-scales smoothly so exp(s) cannot overflow early in training."""
  return clamp * _ATAN_SCALE * jnp.arctan(s / clamp)


def permutations(dim, n_blocks, seed=0):
  """Fixed per-block permutations; seed + k reproduces DifferNet's `np.random.seed(k)`."""
  return [np.random.RandomState(seed + k).permutation(dim) for k in range(n_blocks)]


def num_params(dim, n_blocks=8, hidden=2048, subnet_depth=3):
  """Parameter count of `Flow`, so configs can check size without building it."""
  d1, d2 = dim // 2, dim - dim // 2

  def mlp(n_in, n_out):
    return (n_in * hidden + hidden + (subnet_depth - 1) * (hidden * hidden + hidden)
            + hidden * n_out + n_out)

  return n_blocks * (mlp(d1, 2 * d2) + mlp(d2, 2 * d1))


def _torch_uniform(fan_in):
  """PyTorch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as in FrEIA."""
  bound = 1.0 / np.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class Subnet(nn.Module):
  """MLP predicting (s, t) for one half from the other half; DifferNet's F_fully_connected."""
  features: int
  hidden: int = 2048
  depth: int = 3
  zero_init: bool = True

  @nn.compact
  def __call__(self, x):
    n_in = x.shape[-1]
    for i in range(self.depth):
      x = nn.Dense(self.hidden, kernel_init=_torch_uniform(n_in),
                   bias_init=_torch_uniform(n_in), name=f'fc{i}')(x)
      x = nn.relu(x)
      n_in = self.hidden
    last = nn.initializers.zeros if self.zero_init else _torch_uniform(n_in)
    return nn.Dense(self.features, kernel_init=last, bias_init=last,
                    name=f'fc{self.depth}')(x)


class Permute(distrax.Bijector):
  """Fixed permutation of the last axis; distrax has no such bijector."""

  def __init__(self, perm):
    super().__init__(event_ndims_in=1, is_constant_jacobian=True)
    self.perm = np.asarray(perm)
    self.inv_perm = np.argsort(self.perm)

  def forward_and_log_det(self, x):
    return x[..., self.perm], jnp.zeros(x.shape[:-1], x.dtype)

  def inverse_and_log_det(self, y):
    return y[..., self.inv_perm], jnp.zeros(y.shape[:-1], y.dtype)


class GlowCoupling(distrax.Bijector):
  """Two-sided affine coupling; `s1` reads half 1 (D // 2), `s2` reads half 2."""

  def __init__(self, s1, s2, split, clamp):
    super().__init__(event_ndims_in=1)
    self.s1, self.s2, self.split, self.clamp = s1, s2, split, clamp

  def _scale_shift(self, net, h, n):
    r = net(h)
    return soft_clamp(r[..., :n], self.clamp), r[..., n:]

  def forward_and_log_det(self, x):
    x1, x2 = x[..., :self.split], x[..., self.split:]
    s2, t2 = self._scale_shift(self.s2, x2, x1.shape[-1])
    y1 = jnp.exp(s2) * x1 + t2
    s1, t1 = self._scale_shift(self.s1, y1, x2.shape[-1])
    y2 = jnp.exp(s1) * x2 + t1
    return jnp.concatenate([y1, y2], -1), s1.sum(-1) + s2.sum(-1)

  def inverse_and_log_det(self, y):
    y1, y2 = y[..., :self.split], y[..., self.split:]
    s1, t1 = self._scale_shift(self.s1, y1, y2.shape[-1])
    x2 = (y2 - t1) * jnp.exp(-s1)
    s2, t2 = self._scale_shift(self.s2, x2, y1.shape[-1])
    x1 = (y1 - t2) * jnp.exp(-s2)
    return jnp.concatenate([x1, x2], -1), -(s1.sum(-1) + s2.sum(-1))


class Flow(nn.Module):
  """DifferNet's flow: x (B, D) -> (z (B, D), logdet (B,)).

  Init: `zero_init=True` (default) zeroes the last layer of every subnet, so the
  couplings start at the identity and z is a fixed permutation of x with
  logdet 0 (the loss then equals that of the raw features). This makes a fresh
  flow a sane MAML starting point and keeps exp(s) at 1 early on. DifferNet and
  FrEIA use PyTorch's default init everywhere; `zero_init=False` reproduces that
  (all layers U(+-1/sqrt(fan_in))). The hidden layers use it in both modes.
  """
  dim: int
  n_blocks: int = 8
  hidden: int = 2048
  clamp: float = 3.0
  permutation_seed: int = 0
  zero_init: bool = True
  subnet_depth: int = 3

  def setup(self):
    d1, d2 = self.dim // 2, self.dim - self.dim // 2
    net = lambda n: Subnet(n, self.hidden, self.subnet_depth, self.zero_init)
    self.s1 = [net(2 * d2) for _ in range(self.n_blocks)]
    self.s2 = [net(2 * d1) for _ in range(self.n_blocks)]
    self.perms = permutations(self.dim, self.n_blocks, self.permutation_seed)

  def blocks(self) -> Sequence[distrax.Bijector]:
    """Bijectors in the order they are applied to x."""
    out = []
    for k in range(self.n_blocks):
      out.append(Permute(self.perms[k]))
      out.append(GlowCoupling(self.s1[k], self.s2[k], self.dim // 2, self.clamp))
    return out

  def bijector(self) -> distrax.Bijector:
    # distrax.Chain applies its list last-to-first, hence the reversal.
    return distrax.Chain(self.blocks()[::-1])

  def _check(self, x):
    if x.shape[-1] != self.dim:
      raise ValueError(f'expected last dim {self.dim}, got {x.shape}')

  def __call__(self, x):
    self._check(x)
    return self.bijector().forward_and_log_det(x)

  def distribution(self) -> distrax.Transformed:
    """The flow's density on x: a standard normal on z = f(x). distrax.Transformed(base, b) is the law of
    b(z), so b is the flow's inverse; its log_prob(x) calls b.inverse_and_log_det(x), i.e. f's forward pass."""
    base = distrax.Independent(distrax.Normal(jnp.zeros(self.dim), 1.0), reinterpreted_batch_ndims=1)
    return distrax.Transformed(base, distrax.Inverse(self.bijector()))

  def log_prob(self, x):
    """log p(x) (B,) in nats, constants included; use `flow.apply(params, x, method=Flow.log_prob)`."""
    self._check(x)
    return self.distribution().log_prob(x)

  def nll(self, x):
    """DifferNet's per-row loss (B,): `nll_per_dim` of `log_prob`."""
    return nll_per_dim(self.log_prob(x), self.dim)

  def inverse(self, z):
    return self.bijector().inverse(z)


def init_flow(key, dim, **kwargs):
  """Returns (module, variables); use `module.apply(variables, x)`."""
  flow = Flow(dim, **kwargs)
  return flow, flow.init(key, jnp.zeros((1, dim), jnp.float32))


# log N(z; 0, I) = -0.5 |z|^2 - D * HALF_LOG_2PI; DifferNet's loss leaves the constant out.
HALF_LOG_2PI = 0.5 * float(np.log(2 * np.pi))


def nll_per_dim(log_prob, dim):
  """DifferNet's per-sample loss from the density: -log p(x) / D - 0.5 log(2 pi), i.e. the negative
  log-likelihood per feature dimension without its constant (the same number as `nll_score`)."""
  return -log_prob / dim - HALF_LOG_2PI


def nll_score(z, logdet):
  """The same per-sample NLL per dim written out from (z, logdet), as DifferNet's code does (kept as the
  reference `nll_per_dim` is tested against)."""
  return (0.5 * jnp.sum(z ** 2, -1) - logdet) / z.shape[-1]


def nll_loss(z, logdet):
  """DifferNet's training loss: batch mean of `nll_score`."""
  return jnp.mean(nll_score(z, logdet))


def z2_score(z):
  """DifferNet's test score: mean of z^2 over dims (no log-det term)."""
  return jnp.mean(z ** 2, -1)
