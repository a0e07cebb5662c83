"""Atomic writes: a kill never leaves a half-written file that a later step trusts."""
from __future__ import annotations

import json
import os
import tempfile


def write_atomic(path: str, data: bytes | str) -> None:
  """Writes to a temporary file in the same folder, fsyncs it, then renames it over `path`."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".")
  try:
    with os.fdopen(fd, "wb") as f:
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
