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
# Every program goes into it, not only those that took JAX's default 1 s to compile: a test's subprocess (a resumed
# run, a sweep worker) otherwise compiles again the many small steps the process before it compiled (measured: the
# first refinement iteration of a resumed `launch.main` run 27 s -> 19 s on a loaded 2-core machine).
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # read by the subprocesses' JAX at import
xla_flags.compile_cache()
import jax  # noqa: E402  (compile_cache imported it already)

jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

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


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory) -> str:
  """A feature cache folder (config.cache_dir) shared by the whole session, for runs whose subject is not the
  extraction itself: the cache is keyed by pixel content and settings, never by path (maml_iqr/feature_cache.py),
  and cache_dir cannot change a result, so a run reading features another test computed gets the numbers it would
  have computed (the synthetic folders of every module have the same pixels)."""
  return str(tmp_path_factory.mktemp("feature_cache"))


def fill_feature_cache(config) -> None:
  """Computes, in this process, the features of every image of `config.data` into `config.cache_dir` (training views
  of all of them, so any split's training images find theirs); what is there already is not computed again."""
  import numpy as np  # noqa: PLC0415
  from maml_iqr import feature_cache as feature_cache_lib  # noqa: PLC0415
  from maml_iqr.data import readers  # noqa: PLC0415
  from maml_iqr.models import backbones  # noqa: PLC0415
  b = config.backbone
  backbone = backbones.get_backbone(b.name, b.weights_path or None, tuple(b.stages) if b.name != "alexnet" else None)
  dataset = readers.read(config.data, backbone.input_size)
  images = np.concatenate([dataset.train.images, dataset.test.images])
  feature_cache_lib.features(config, backbone, backbone.load(), images, dataset.name)


@pytest.fixture(scope="module")
def synthetic_feature_cache(folders, feature_cache) -> str:
  """`feature_cache` holding the features a `configs/folder.py:quick` run on `folders` reads (computed once a session:
  every module's `folders` has the same pixels). For tests of what a run does with its features, not of their
  extraction: a run given it as --config.cache_dir starts refining seconds sooner."""
  from configs import folder as folder_config  # noqa: PLC0415
  c = folder_config.get_config("quick")
  c.data.root, c.data.defective_root, c.cache_dir = str(folders / "good"), str(folders / "bad"), feature_cache
  fill_feature_cache(c)
  return feature_cache


@pytest.fixture(scope="session")
def session_folders(tmp_path_factory):
  """`folders`, made once a session: for modules that share `resumable_reference` (its config names the folders)."""
  return write_synthetic_folders(tmp_path_factory.mktemp("synthetic_session"))


# The maml_iqr run that test_reliability.py's and test_preemption.py's interrupted runs must resume to: 3 refinement
# iterations (removing 2, 2, 0 images), several checkpoints.
RESUMABLE_RUN = {"method": "maml_iqr", "refine.folds": 2,  # configs/folder.py's default is gaussian_iqr
                 "noise.ratio": 0.5, "refine.k": 0.1, "refine.max_iterations": 3, "refine.patience": 3,
                 "refine.min_kept": 4, "maml.meta_epochs": 1,
                 "refine.warm_start": True,  # checkpoints then carry the fold fits, whose restore must work too
                 "train.meta_epochs": 40}  # a final training of seconds, so a kill can land inside it


def resumable_config(folders, **overrides):
  """configs/folder.py:quick on `folders` with RESUMABLE_RUN (and `overrides`)."""
  from configs import folder as folder_config  # noqa: PLC0415
  c = folder_config.get_config("quick")
  c.data.root = str(folders / "good")
  c.data.defective_root = str(folders / "bad")
  for k, v in {**RESUMABLE_RUN, **overrides}.items():
    section, name = k.split(".") if "." in k else (None, k)
    (c[section] if section else c)[name] = v
  return c


def resumable_args(folders) -> list[str]:
  """The same run as `launch.main` flags (after --config and --workdir)."""
  return [f"--config.data.root={folders / 'good'}", f"--config.data.defective_root={folders / 'bad'}"] + \
      [f"--config.{k}={v}" for k, v in RESUMABLE_RUN.items()]


@pytest.fixture(scope="session")
def resumable_reference(session_folders, tmp_path_factory):
  """The uninterrupted run of `resumable_config(session_folders)`, once a session, in this process (which runs on
  the entry points' XLA flags, above: a `launch.main` process gives the same numbers, test_reliability.py checks
  it), extracting its own features into <workdir>/cache: (results, workdir)."""
  from maml_iqr import run  # noqa: PLC0415
  workdir = tmp_path_factory.mktemp("resumable_reference")
  results = run.train_and_evaluate(resumable_config(session_folders), str(workdir))
  assert len(results["refinement"]) >= 3, "the shared run needs several refinement iterations"
  return results, workdir
