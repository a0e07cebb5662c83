"""Backbone features of every image, cached on disk and keyed by what they depend on, never by position.

A cache file holds two tables keyed by the digest of an image's decoded pixels (after the resize to the
backbone's input): every image's `score.n_views` fixed evaluation rotations, and the `train.n_cached_views`
random training views of the images some run trained on (computed when a split first puts an image in
training). The file name carries a key of the settings (backbone, the digest of its weights file, stages, dtype,
view settings); rows are looked up by pixel digest. So an image replaced under the same name, a deleted
image or a new one can never be matched to another image's features: what is not in the cache (new or changed
content) is computed, said in the log, and added to the file. A path spelled differently (a trailing slash, a
moved folder) reuses the cache, since content, not paths, is the key.

Each image's training views are drawn from a generator seeded by (`train.view_seed`, its digest), so an image
gets the same views whatever else is in the dataset.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import io
import json
import os

import numpy as np

from maml_iqr import features as features_lib
from maml_iqr.common import log
from maml_iqr.io import is_writer, write_atomic

FORMAT = 2  # bump when the view scheme changes: older files are then not read (the split into two tables
            # kept 2: `_read` serves the one-table files written before it as they are)


def image_digest(image: np.ndarray) -> bytes:
  """SHA-1 of a decoded image's shape, dtype and pixels (20 bytes; stored as uint8 rows, since numpy's bytes
  type drops trailing zero bytes)."""
  h = hashlib.sha1(f"{image.shape}{image.dtype}".encode())
  h.update(np.ascontiguousarray(image).tobytes())
  return h.digest()


@functools.lru_cache(maxsize=None)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      h.update(block)
  return h.hexdigest()[:16]


def file_digest(path: str) -> str:
  """SHA-256 (16 hex digits) of a file's bytes, memoised per (path, size, mtime) within a process."""
  st = os.stat(path)
  return _file_digest(os.path.abspath(path), st.st_size, st.st_mtime_ns)


def weights_identity(backbone_name: str, weights_path: str) -> str:
  """What identifies a backbone's weights: the digest of the weights file ('random' for untrained AlexNet)."""
  if backbone_name == "alexnet" and weights_path == "random":
    return "random"
  if backbone_name == "efficientnet_lite0" and not weights_path:
    from maml_iqr.models import efficientnet_lite  # noqa: PLC0415
    weights_path = efficientnet_lite.weights_path()
  return file_digest(weights_path)


def settings(config, backbone) -> dict:
  """Everything a cached feature depends on besides the image itself."""
  t, b = config.train, config.backbone
  return {"format": FORMAT, "backbone": b.name, "weights": weights_identity(b.name, b.weights_path),
          "stages": list(b.stages) if b.name != "alexnet" else None, "dtype": b.dtype,
          "input_size": backbone.input_size, "feature_dim": backbone.feature_dim,
          "n_cached_views": t.n_cached_views, "view_seed": t.view_seed, "max_angle": t.max_angle,
          "brightness": t.brightness, "contrast": t.contrast, "saturation": t.saturation,
          "n_eval_views": config.score.n_views, "eval_view_offset": config.score.view_offset}


def settings_key(spec: dict) -> str:
  """16 hex digits naming a cache file's settings: other settings, another file."""
  return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def cache_path(cache_dir: str, dataset_name: str, spec: dict) -> str:
  return os.path.join(cache_dir, f"features_{dataset_name}_{settings_key(spec)}.npz")


def view_params(spec: dict, digests: list[bytes]) -> np.ndarray:
  """(N, n_cached_views, 4) training views, each image's drawn from its own (view_seed, digest) generator."""
  return np.concatenate([
      features_lib.random_view_params(np.random.default_rng([spec["view_seed"], int.from_bytes(d[:8], "little")]),
                                      1, spec["n_cached_views"], spec["max_angle"], spec["brightness"],
                                      spec["contrast"], spec["saturation"])
      for d in digests]) if digests else np.zeros((0, spec["n_cached_views"], 4), np.float32)


# Two tables, each keyed by pixel digest: every image's evaluation views, and the training views of the images
# that some run trained on (a validation or test image never needs them: 41 % fewer views on elpv mono at 20 %).
TABLES = {"eval": ("digests", ("eval",)), "train": ("train_digests", ("train_views", "train"))}


def _empty(spec: dict) -> dict:
  d, k = spec["feature_dim"], spec["n_cached_views"]
  return {"digests": np.zeros((0, 20), np.uint8), "eval": np.zeros((0, spec["n_eval_views"], d), np.float32),
          "train_digests": np.zeros((0, 20), np.uint8), "train_views": np.zeros((0, k, 4), np.float32),
          "train": np.zeros((0, k, d), np.float32)}


def _read(path: str, spec: dict) -> dict | None:
  if not os.path.exists(path):
    return None
  try:
    with np.load(path) as f:
      store = {k: f[k] for k in f.files}
    stored = json.loads(str(store.pop("settings")))
    if stored != spec:
      raise ValueError(f"its settings {stored} are not this run's {spec}")
    store.setdefault("train_digests", store["digests"])  # files written before the tables were split: one row each
    for key, columns in TABLES.values():
      if not all(len(store[c]) == len(store[key]) for c in columns):
        raise ValueError("its arrays have different lengths")
    return store
  except Exception as e:  # noqa: BLE001 - a damaged cache is recomputed, never trusted
    log(f"WARNING: feature cache {path} is unusable ({type(e).__name__}: {e}); recomputing it")
    return None


def _write(path: str, spec: dict, store: dict) -> dict:
  """Writes `store` with the rows other processes added to the file since this one read it (a sweep's workers and
  concurrent runs share one cache: without the merge the last writer dropped the others' new rows), under an
  exclusive lock on `<path>.lock`. Returns the merged store. Only the writing process writes (`io.is_writer`)."""
  if not is_writer():
    return store
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path + ".lock", "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also when the process dies
    on_disk = _read(path, spec)
    for table, (key, _) in TABLES.items() if on_disk is not None else ():
      have = {d.tobytes() for d in store[key]}
      store, _ = _take_rows(store, table, on_disk, {d.tobytes() for d in on_disk[key]} - have)
    buf = io.BytesIO()
    np.savez(buf, settings=np.asarray(json.dumps(spec, sort_keys=True)), **store)
    write_atomic(path, buf.getvalue())
  return store


@contextlib.contextmanager
def _computing(path: str):
  """One process at a time computes features for a cache file (an exclusive lock on `<path>.computing`, released
  when the process dies): a sweep's workers starting together otherwise each computed the same images' features,
  the first cells of a `--parallel=2` Magnetic Tile sweep two copies of 1344 images x 8 views. A process that does
  not write (`io.is_writer`) touches no file and computes what it lacks, as it must anyway."""
  if not is_writer():
    yield
    return
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path + ".computing", "a") as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      log(f"feature cache {path}: another process is computing features for it; waiting to read them")
      fcntl.flock(lock, fcntl.LOCK_EX)
    yield


def _stamp(path: str) -> tuple | None:
  """What changes when the file is written again (`write_atomic` replaces it): a read can be skipped if it holds."""
  try:
    st = os.stat(path)
  except FileNotFoundError:
    return None
  return st.st_ino, st.st_mtime_ns, st.st_size


def _append(store: dict, table: str, new: dict) -> dict:
  key, columns = TABLES[table]
  return dict(store, **{c: np.concatenate([store[c], new[c]]) for c in (key,) + columns})


def _take_rows(store: dict, table: str, theirs: dict, wanted: set[bytes]) -> tuple[dict, set[bytes]]:
  """`store` with the rows of another store's `table` whose digests are `wanted` appended, and those digests."""
  key, columns = TABLES[table]
  rows = [r for r, d in enumerate(theirs[key]) if d.tobytes() in wanted]
  if rows:
    store = _append(store, table, {c: theirs[c][rows] for c in (key,) + columns})
  return store, {theirs[key][r].tobytes() for r in rows}


def _borrow(path: str, spec: dict, store: dict, table: str, wanted: set[bytes]) -> tuple[dict, set[bytes]]:
  """Rows of `table` for the `wanted` digests from the other cache files of the same settings key in the folder
  (e.g. a user's folder made of a benchmark's images); returns the store with them appended and the digests
  found."""
  key_suffix = path[path.rindex("_"):]
  folder = os.path.dirname(path)
  found = set()
  for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
    other = os.path.join(folder, name)
    if other == path or not name.endswith(key_suffix) or not name.startswith("features_"):
      continue
    theirs = _read(other, spec)
    if theirs is None:
      continue
    store, got = _take_rows(store, table, theirs, wanted - found)
    found |= got
  return store, found


def _compute(table: str, spec: dict, backbone, bparams, images: np.ndarray, digests: list[bytes]) -> dict:
  """Features of `images` (whose digests are `digests`) for one table."""
  new = {TABLES[table][0]: np.frombuffer(b"".join(digests), np.uint8).reshape(-1, 20)}
  if table == "train":
    new["train_views"] = view_params(spec, digests)
    new["train"] = features_lib.extract(backbone, bparams, images, new["train_views"], label="train views",
                                        dtype=spec["dtype"])
  else:
    new["eval"] = features_lib.extract(
        backbone, bparams, images,
        features_lib.fixed_view_params(len(images), spec["n_eval_views"], spec["eval_view_offset"],
                                       spec["brightness"], spec["contrast"], spec["saturation"]),
        label="evaluation views", dtype=spec["dtype"])
  return new


def features(config, backbone, bparams, images: np.ndarray, dataset_name: str,
             train_rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """Features of `images` (N, S, S, 3) uint8: {'eval' (N, V, D), row i for image i; 'train' (M, K, D) and
  'train_views' (M, K, 4), row j for image `train_rows[j]` (every image when None)}. Read from the cache where
  the pixels match; computed, and added to it, where not."""
  spec = settings(config, backbone)
  path = cache_path(config.cache_dir, dataset_name, spec)
  digests = [image_digest(im) for im in images]
  train_rows = np.arange(len(images)) if train_rows is None else np.asarray(train_rows, np.int64)
  wanted = {"eval": np.arange(len(images)), "train": train_rows}
  seen = _stamp(path)
  store = _read(path, spec) or _empty(spec)
  unsaved = touched = False
  for table, (key, _) in TABLES.items():
    have = {d.tobytes() for d in store[key]}
    missing = sorted({digests[i] for i in wanted[table]} - have)
    if not missing:
      continue
    store, found = _borrow(path, spec, store, table, set(missing))
    if found:
      log(f"feature cache {path}: {len(found)} images' {table} features taken from other datasets' caches of "
          "the same settings (same pixels)")
    missing = [d for d in missing if d not in found]
    unsaved = touched = True
    if not missing:
      continue
    with _computing(path):
      # what another process wrote since this one read the file (it waited for it, or it finished just before)
      on_disk = _read(path, spec) if _stamp(path) != seen else None
      if on_disk is not None:
        store, found = _take_rows(store, table, on_disk, set(missing))
        missing = [d for d in missing if d not in found]
      if not missing:
        continue
      if len(store[key]):
        log(f"feature cache {path}: {len(missing)} of {len(wanted[table])} images have no {table} features yet "
            "(new, changed, or not needed before); computing them")
      n_views = spec["n_cached_views"] if table == "train" else spec["n_eval_views"]
      log(f"computing features of {len(missing)} images x {n_views} {table} views with {backbone.name}")
      where = {d: i for i, d in enumerate(digests)}
      store = _append(store, table, _compute(table, spec, backbone, bparams,
                                             images[np.asarray([where[d] for d in missing])], missing))
      store = _write(path, spec, store)  # each table as soon as it is done: a killed run keeps it
      seen = _stamp(path)  # what is on disk is now in `store` (`_write` merged it)
      unsaved = False
  if unsaved:
    store = _write(path, spec, store)
  if not touched:
    log(f"features from cache {path} ({len(images)} images, {len(train_rows)} with training views)")
  out = {}
  for table, (key, columns) in TABLES.items():
    row_of = {d.tobytes(): r for r, d in enumerate(store[key])}
    rows = np.asarray([row_of[digests[i]] for i in wanted[table]], np.int64)
    out.update({c: store[c][rows] for c in columns})
  return out
