"""Atomic writes by one process: a kill never leaves a half-written file that a later step trusts, and in a
multi-process run (`jax.distributed`) only process 0 writes, so processes never race on a shared workdir."""
from __future__ import annotations

import json
import os
import sys
import tempfile


def is_writer() -> bool:
  """Whether this process writes files: always in a single-process run; only process 0 of a multi-process one.

  Asks JAX only once it has a backend (or `jax.distributed` is up), so that calling this never starts a backend
  (a launcher that starts per-GPU workers must not take device memory from them).
  """
  jax = sys.modules.get("jax")
  if jax is None:
    return True
  from jax._src import xla_bridge  # noqa: PLC0415 - the one way to ask without starting a backend
  if not (jax.distributed.is_initialized() or xla_bridge.backends_are_initialized()):
    return True
  return jax.process_index() == 0


def write_atomic(path: str, data) -> None:
  """Writes `data` (bytes, str, or a function that writes to an open binary file: no copy of a large array in
  memory) to a temporary file in the same folder, fsyncs it, then renames it over `path` (process 0 only)."""
  if not is_writer():
    return
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".")
  try:
    with os.fdopen(fd, "wb") as f:
      if callable(data):
        data(f)
      else:
        f.write(data.encode() if isinstance(data, str) else data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, obj) -> None:
  write_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
