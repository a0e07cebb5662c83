"""Reads PyTorch `.pth` state dicts into numpy without importing torch.

Both formats written by `torch.save` are supported:

* zip (torch >= 1.6): `<root>/data.pkl` holds the object pickle, whose
  persistent ids `('storage', StorageType, key, location, numel)` name the raw
  little-endian storages stored as `<root>/data/<key>`.
* legacy (torch < 1.6): a sequence of pickles: magic number, protocol version,
  system info, the object pickle (persistent ids `('storage', StorageType,
  root_key, location, numel, view_metadata)`), the sorted list of storage keys,
  then each storage in that order as an 8-byte little-endian element count
  followed by its raw bytes.

The pickle runs under an allow-list: only the globals that rebuild tensors and
an OrderedDict can be resolved, so a crafted file cannot run code. Sizes are
bounded by the bytes really in the file: a storage can hold no more than the
file gives it, and a tensor no more elements than its storage (a few hundred
bytes with zero strides can no longer ask for terabytes).
"""

import collections
import io
import math
import os
import pickle
import struct
import zipfile

import ml_dtypes
import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    'FloatStorage': np.float32,
    'HalfStorage': np.float16,
    'DoubleStorage': np.float64,
    'BFloat16Storage': ml_dtypes.bfloat16,
    'LongStorage': np.int64,
    'IntStorage': np.int32,
    'ShortStorage': np.int16,
    'CharStorage': np.int8,
    'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}


class WeightsError(ValueError):
  """A weights file that cannot be used: the message names the file and says what is wrong with it."""


class RefusedGlobalError(pickle.UnpicklingError, WeightsError):
  """A pickle asked for a global outside the allow-list."""


class _StorageType:
  """Stand-in for `torch.<X>Storage`: only carries the dtype."""

  def __init__(self, name):
    self.name = name
    self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
  """A flat storage whose bytes may arrive after the object pickle (legacy)."""

  def __init__(self, dtype, numel, data=None):
    self.dtype, self.numel, self.data = dtype, numel, data

  def array(self):
    if self.data is None:
      raise ValueError('storage data missing')
    return self.data


class _StorageView:
  """A legacy storage view: a slice `[offset, offset + numel)` of a root."""

  def __init__(self, root, offset, numel):
    self.root, self.offset, self.numel = root, offset, numel
    self.dtype = root.dtype

  def array(self):
    return self.root.array()[self.offset:self.offset + self.numel]


class _TensorRef:
  """A tensor to build once all storages are read."""

  def __init__(self, storage, offset, size, stride):
    self.storage, self.offset = storage, int(offset)
    self.size = tuple(int(s) for s in size)
    self.stride = tuple(int(s) for s in stride)

  def materialise(self):
    flat = self.storage.array()
    if len(self.size) != len(self.stride):
      raise ValueError('tensor size and stride differ in length')
    if any(s < 0 for s in self.size + self.stride) or self.offset < 0:
      raise ValueError('negative tensor size, stride or offset')
    numel = math.prod(self.size)
    if numel > flat.size:  # only zero or overlapping strides get here
      raise ValueError(
          f'a tensor of shape {self.size} (strides {self.stride}) has {numel} '
          f'elements but its storage holds {flat.size}: refused, a weights '
          'tensor never repeats its storage (crafted or corrupt file)')
    if 0 not in self.size:
      last = self.offset + sum((n - 1) * s for n, s in zip(self.size,
                                                           self.stride))
      if last >= flat.size:  # as_strided would read outside the storage.
        raise ValueError('tensor extends past its storage (truncated file?)')
    base = flat[self.offset:] if self.offset < flat.size else flat[:0]
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(
        base, shape=self.size, strides=[s * item for s in self.stride],
        writeable=False)
    return view.astype(view.dtype.newbyteorder('='), copy=True)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused_args):
  """Stand-in for `torch._utils._rebuild_tensor{,_v2}`."""
  if not isinstance(storage, (_Storage, _StorageView)):
    raise ValueError('tensor rebuilt from something that is not a storage')
  return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused_args):
  """Stand-in for `torch._utils._rebuild_parameter`: a parameter is its data."""
  return data


_ALLOWED = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
}


def _decode(value):
  return value.decode('ascii') if isinstance(value, bytes) else value


class _Unpickler(pickle.Unpickler):
  """Resolves only the allow-listed globals and torch storage ids."""

  def __init__(self, file, storage_loader=None):
    super().__init__(file, encoding='utf-8')
    self._storage_loader = storage_loader

  def find_class(self, module, name):
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _StorageType(name)
    raise RefusedGlobalError(
        f'refused global {module}.{name}: only tensor-rebuild globals are '
        'allowed in a state dict')

  def persistent_load(self, pid):
    if (self._storage_loader is None or not isinstance(pid, tuple) or
        not pid or _decode(pid[0]) != 'storage'):
      raise pickle.UnpicklingError(f'unsupported persistent id {pid!r:.80}')
    if not isinstance(pid[1], _StorageType):
      raise pickle.UnpicklingError('persistent id without a storage type')
    return self._storage_loader(*pid[1:])


def _load_zip(file):
  """Loads the object of a torch >= 1.6 zip checkpoint."""
  with zipfile.ZipFile(file) as archive:
    pickles = [n for n in archive.namelist()
               if n.endswith('/data.pkl') and n.count('/') == 1]
    if len(pickles) != 1:
      raise ValueError('zip file without a single <root>/data.pkl: not torch')
    root = pickles[0][:-len('data.pkl')]
    names = set(archive.namelist())
    order = '<'
    if root + 'byteorder' in names:
      order = '>' if archive.read(root + 'byteorder').strip() == b'big' else '<'
    storages = {}

    def load_storage(storage_type, key, unused_location, numel):
      key = _decode(key)
      _check_numel(numel, key)
      if key not in storages:
        dtype = storage_type.dtype.newbyteorder(order)
        raw = archive.read(f'{root}data/{key}')
        if len(raw) < numel * dtype.itemsize:
          raise ValueError(f'storage {key} is truncated')
        storages[key] = _Storage(
            dtype, numel, np.frombuffer(raw, dtype, count=numel))
      return storages[key]

    with archive.open(pickles[0]) as data_pkl:
      return _Unpickler(io.BytesIO(data_pkl.read()), load_storage).load()


def _load_legacy(file):
  """Loads the object of a pre-1.6 sequential-pickle checkpoint."""
  if _Unpickler(file).load() != _LEGACY_MAGIC:
    raise ValueError('bad magic number: not a torch file')
  if _Unpickler(file).load() != _LEGACY_PROTOCOL:
    raise ValueError('unsupported legacy protocol version')
  sys_info = _Unpickler(file).load()
  order = '<' if sys_info.get('little_endian', True) else '>'
  storages = {}

  def load_storage(storage_type, root_key, unused_location, numel,
                   view_metadata):
    root_key = _decode(root_key)
    _check_numel(numel, root_key)
    if root_key not in storages:
      storages[root_key] = _Storage(storage_type.dtype.newbyteorder(order),
                                    numel)
    root = storages[root_key]
    if view_metadata is None:
      return root
    unused_view_key, offset, view_numel = view_metadata
    return _StorageView(root, offset, view_numel)

  obj = _Unpickler(file, load_storage).load()
  keys = _Unpickler(file).load()
  for key in keys:
    storage = storages[_decode(key)]
    (numel,) = struct.unpack('<q', _read_exactly(file, 8))
    if numel != storage.numel:
      raise ValueError(f'storage {key}: {numel} elements, expected '
                       f'{storage.numel}')
    raw = _read_exactly(file, numel * storage.dtype.itemsize)  # bounded
    storage.data = np.frombuffer(raw, storage.dtype)
  return obj


def _check_numel(numel, key):
  if not isinstance(numel, int) or numel < 0:
    raise ValueError(f'storage {key!r}: bad element count {numel!r}')


def _read_exactly(file, n):
  """n bytes, or an error; never asks for more than the file still holds
  (`read(n)` would allocate n bytes first, however large n is)."""
  here = file.tell()
  left = os.fstat(file.fileno()).st_size - here
  if n > left:
    raise ValueError(f'file is truncated: {n} bytes expected, {left} left')
  data = file.read(n)
  if len(data) != n:
    raise ValueError('file is truncated')
  return data


def _materialise(obj):
  """Replaces every `_TensorRef` in nested containers by a numpy array."""
  if isinstance(obj, _TensorRef):
    return obj.materialise()
  if isinstance(obj, dict):
    return type(obj)((k, _materialise(v)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialise(v) for v in obj)
  return obj


def load_state_dict(path):
  """Reads a torch state dict as `{name: np.ndarray}` without torch.

  Args:
    path: a `.pth`/`.pt` file written by `torch.save(model.state_dict())`, in
      the zip or the legacy format.

  Returns:
    An ordered dict from parameter/buffer name to a numpy array (a copy, in
    native byte order). Non-tensor entries are dropped.

  Raises:
    RefusedGlobalError: (a `pickle.UnpicklingError` and a `WeightsError`) the
      pickle references a global outside the allow-list; nothing is executed.
    WeightsError: (a `ValueError`) the file is missing, not a torch file,
      truncated, or asks for more data than it holds.
  """
  path = os.fspath(path)
  try:
    with open(path, 'rb') as f:
      if zipfile.is_zipfile(f):
        f.seek(0)
        obj = _load_zip(f)
      else:
        f.seek(0)
        obj = _load_legacy(f)
    obj = _materialise(obj)
  except RefusedGlobalError as e:
    raise RefusedGlobalError(f'{path}: {e}') from None
  except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError,
          KeyError, AttributeError, IndexError, struct.error,
          zipfile.BadZipFile) as e:
    raise WeightsError(f'{path}: cannot read as a torch state dict: '
                       f'{type(e).__name__}: {e}') from e
  if not isinstance(obj, dict):
    raise WeightsError(
        f'{path}: holds a {type(obj).__name__}, not a state dict')
  state = collections.OrderedDict(
      (k, v) for k, v in obj.items() if isinstance(v, np.ndarray))
  if not state:
    raise WeightsError(f'{path}: no tensors found')
  return state
