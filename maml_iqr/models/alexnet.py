"""AlexNet `features` (torchvision layout) as DifferNet uses it, in pure JAX.

Images are NHWC float32 in [0, 1]. Parameters are a dict of HWIO kernels:
`{'conv0': {'kernel', 'bias'}, ..., 'conv4': {...}}`, where `convI` is
torchvision's `features.{0,3,6,8,10}`.
"""

import jax
import jax.numpy as jnp
import numpy as np

INPUT_SIZE = 448
FEATURE_DIM = 768  # 256 channels x 3 scales.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (torchvision index, in, out, kernel, stride, padding, max-pool after).
_CONVS = (
    (0, 3, 64, 11, 4, 2, True),
    (3, 64, 192, 5, 1, 2, True),
    (6, 192, 384, 3, 1, 1, False),
    (8, 384, 256, 3, 1, 1, False),
    (10, 256, 256, 3, 1, 1, True),
)


def check_state_dict(state_dict):
  """Raises ValueError naming the first missing or misshapen tensor of torchvision's AlexNet `features`."""
  for index, c_in, c_out, k, *_ in _CONVS:
    for name, shape in ((f'features.{index}.weight', (c_out, c_in, k, k)),
                        (f'features.{index}.bias', (c_out,))):
      if name not in state_dict:
        raise ValueError(f'{name} is missing')
      got = tuple(np.shape(state_dict[name]))
      if got != shape:
        raise ValueError(f'{name} has shape {got}, expected {shape}')


def params_from_state_dict(state_dict):
  """Converts torchvision AlexNet weights (OIHW) to HWIO parameters."""
  check_state_dict(state_dict)
  params = {}
  for i, (index, *_) in enumerate(_CONVS):
    weight = np.asarray(state_dict[f'features.{index}.weight'], np.float32)
    bias = np.asarray(state_dict[f'features.{index}.bias'], np.float32)
    params[f'conv{i}'] = {'kernel': jnp.asarray(weight.transpose(2, 3, 1, 0)),
                          'bias': jnp.asarray(bias)}
  return params


def init_params(key):
  """Random He-normal weights: for tests and benchmarks only."""
  params = {}
  for i, (_, c_in, c_out, k, *_) in enumerate(_CONVS):
    key, sub = jax.random.split(key)
    std = np.sqrt(2.0 / (c_in * k * k))
    params[f'conv{i}'] = {
        'kernel': std * jax.random.normal(sub, (k, k, c_in, c_out)),
        'bias': jnp.zeros((c_out,)),
    }
  return params


def _max_pool(x):
  # torch MaxPool2d(3, 2) has no padding and floors: VALID.
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1),
                               (1, 2, 2, 1), 'VALID')


def features_stack(params, x):
  """torchvision `alexnet().features` on normalised NHWC input -> NHWC map."""
  for i, (_, _, _, _, stride, pad, pool) in enumerate(_CONVS):
    p = params[f'conv{i}']
    x = jax.lax.conv_general_dilated(
        x, p['kernel'], (stride, stride), ((pad, pad), (pad, pad)),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    x = jax.nn.relu(x + p['bias'])
    if pool:
      x = _max_pool(x)
  return x


def normalise(images):
  """ImageNet mean/std normalisation of [0, 1] images, as DifferNet does."""
  return (images - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


def features(params, images):
  """DifferNet's 3-scale AlexNet features: (B, 448, 448, 3) -> (B, 768).

  Scales 448, 224 and 112 come from nearest-neighbour down-sampling (what
  `F.interpolate(x, size=s)` does for exact factors); each scale's map is
  global-average-pooled to 256 and the three are concatenated.
  """
  x = normalise(images)
  pooled = [features_stack(params, x[:, ::step, ::step]).mean(axis=(1, 2))
            for step in (1, 2, 4)]
  return jnp.concatenate(pooled, axis=-1)
