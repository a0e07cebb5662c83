"""Registry of frozen feature extractors: `features(params, images) -> (B, D)`.

Images are NHWC float32 in [0, 1] at the backbone's `input_size`; each
backbone applies its own normalisation.
"""

import dataclasses
import functools
from typing import Any, Callable

import jax

from maml_iqr.models import alexnet
from maml_iqr.models import efficientnet_lite
from maml_iqr.models import torch_weights

ALEXNET_URL = 'https://download.pytorch.org/models/alexnet-owt-7be5be79.pth'
NAMES = ('efficientnet_lite0', 'alexnet')


@dataclasses.dataclass(frozen=True)
class Backbone:
  """A frozen extractor: `features(load(), images)` gives (B, feature_dim)."""
  name: str
  input_size: int
  feature_dim: int
  load: Callable[[], Any]
  features: Callable[[Any, jax.Array], jax.Array]


def _load_alexnet(weights_path):
  if weights_path == 'random':
    return alexnet.init_params(jax.random.key(0))
  state = torch_weights.load_state_dict(weights_path)
  try:
    return alexnet.params_from_state_dict(state)
  except ValueError as e:
    raise torch_weights.WeightsError(
        f'{weights_path}: not torchvision AlexNet weights ({e}); pass the '
        f'file from {ALEXNET_URL} as --config.backbone.weights_path') from None


def from_config(b):
  """The backbone a config's `backbone` section names (stages are EfficientNet-Lite0's; AlexNet has none)."""
  return get_backbone(b.name, b.weights_path or None, tuple(b.stages) if b.name != 'alexnet' else None)


def get_backbone(name='efficientnet_lite0', weights_path=None, stages=None):
  """Returns the named backbone; weights are read only when `load()` is called.

  Args:
    name: 'efficientnet_lite0' (real ImageNet weights from its pip package) or
      'alexnet' (DifferNet's extractor, 768-d).
    weights_path: for 'alexnet', a torchvision AlexNet `.pth` (zip or legacy),
      or 'random' for untrained weights (tests and benchmarks only). For
      'efficientnet_lite0', an optional override of the packaged file.
    stages: for 'efficientnet_lite0', the stage names to concatenate (see
      `efficientnet_lite`); default stride 8, 16 and 32 blocks (472-d).
  """
  if name == 'efficientnet_lite0':
    stages = tuple(stages or efficientnet_lite.DEFAULT_STAGES)
    efficientnet_lite.feature_dim(stages)  # Fails early on unknown names.
    return Backbone(
        name=name, input_size=efficientnet_lite.INPUT_SIZE,
        feature_dim=efficientnet_lite.feature_dim(stages),
        load=functools.partial(efficientnet_lite.load_params, weights_path),
        features=functools.partial(efficientnet_lite.features, stages=stages))
  if name == 'alexnet':
    if stages is not None:
      raise ValueError('alexnet has no selectable stages')
    if weights_path is None:
      raise ValueError(
          'alexnet needs weights_path: download the torchvision ImageNet '
          f'weights from {ALEXNET_URL} and pass the file (or pass '
          "weights_path='random' for untrained weights, tests only)")
    return Backbone(
        name=name, input_size=alexnet.INPUT_SIZE,
        feature_dim=alexnet.FEATURE_DIM,
        load=functools.partial(_load_alexnet, weights_path),
        features=alexnet.features)
  raise ValueError(f'unknown backbone {name!r}; known: {NAMES}')
