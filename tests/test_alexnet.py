"""AlexNet parity with PyTorch on seeded weights (fixture made by torch)."""

import importlib.util
import os

import jax
import numpy as np
import pytest

from maml_iqr.models import alexnet

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures')


def _reference_module():
  """The fixture script, for its numpy weight generator (it imports no torch)."""
  path = os.path.join(FIXTURES, 'make_alexnet_reference.py')
  spec = importlib.util.spec_from_file_location('make_alexnet_reference', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope='module')
def reference():
  ref = np.load(os.path.join(FIXTURES, 'alexnet_reference.npz'))
  state = _reference_module().seeded_state_dict(int(ref['seed']))
  sums = [v.astype(np.float64).sum() for v in state.values()]
  # Guards against a numpy RNG change silently giving other weights.
  np.testing.assert_allclose(sums, ref['weight_checksums'], rtol=1e-9)
  return ref, alexnet.params_from_state_dict(state)


def test_features_stack_matches_torch(reference):
  ref, params = reference
  x = ref['small_input_nchw'].transpose(0, 2, 3, 1)
  out = jax.jit(alexnet.features_stack)(params, x)
  expected = ref['small_output_nchw'].transpose(0, 2, 3, 1)
  assert out.shape == expected.shape == (2, 2, 2, 256)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_three_scale_features_match_torch(reference):
  ref, params = reference
  images = ref['image_uint8_nhwc'].astype(np.float32) / 255.0
  out = jax.jit(alexnet.features)(params, images)
  assert out.shape == (1, alexnet.FEATURE_DIM)
  np.testing.assert_allclose(out, ref['features_768'], rtol=1e-4, atol=1e-4)


def test_init_params_shapes_match_state_dict_layout():
  state = _reference_module().seeded_state_dict()
  converted = alexnet.params_from_state_dict(state)
  random = alexnet.init_params(jax.random.key(0))
  assert (jax.tree.map(np.shape, converted) ==
          jax.tree.map(np.shape, random))
