"""Shared test helpers: where ../shared is, and skips that say why when it is absent."""
import atexit
import os
import shutil
import tempfile

import pytest

from maml_iqr import xla_flags

xla_flags.tune_cpu()  # the tests run on the XLA flags the entry points use (before JAX starts a backend)
# ... and with a compilation cache as the entry points have, but one of this session's own (never a stale one from
# elsewhere), shared with the tests' subprocesses: a program compiled by one test is read back by the next.
_COMPILE_CACHE = tempfile.mkdtemp(prefix="maml_iqr_test_jax_")
atexit.register(shutil.rmtree, _COMPILE_CACHE, ignore_errors=True)
os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
os.environ[xla_flags.COMPILE_CACHE_ENV] = _COMPILE_CACHE
xla_flags.compile_cache()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("MAML_IQR_SHARED", os.path.join(os.path.dirname(REPO), "shared"))
DATA = os.path.join(SHARED, "data")


def shared_data(name: str) -> str:
  """Path of a real dataset in ../shared/data, or a skip naming what is missing."""
  path = os.path.join(DATA, name)
  if not os.path.isdir(path):
    pytest.skip(f"real data {path} is absent (set MAML_IQR_SHARED to the shared/ folder to run this test)")
  return path


def write_synthetic_folders(root, n_good: int = 24, n_bad: int = 10, size: int = 48):
  """Grey noise textures, the defective ones with a bright square: for tests of mechanics only."""
  import numpy as np
  from PIL import Image
  rng = np.random.default_rng(0)
  for kind, n in (("good", n_good), ("bad", n_bad)):
    os.makedirs(root / kind, exist_ok=True)
    for i in range(n):
      a = rng.normal(128, 20, (size, size)).clip(0, 255)
      if kind == "bad":
        y, x = rng.integers(size // 6, size - size // 3, 2)
        a[y:y + size // 4, x:x + size // 4] = 255
      Image.fromarray(a.astype(np.uint8)).save(root / kind / f"{i:02d}.png")
  return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  """A synthetic folder dataset: <tmp>/good (24) and <tmp>/bad (10)."""
  return write_synthetic_folders(tmp_path_factory.mktemp("synthetic"))
