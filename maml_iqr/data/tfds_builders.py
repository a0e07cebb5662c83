"""TFDS builders for MVTec-AD and KSDD2 that work without TensorFlow.

Both read a manually downloaded copy (`manual_dir`) with the readers in `maml_iqr.data.readers`, so a TFDS
dataset holds exactly the arrays the readers return (resized to the config's `image_size`). Features are plain
`tfds.features.Tensor`s because `tfds.features.Image` needs TensorFlow to encode PNGs; the files are written as
`array_record` so that `tfds.data_source` reads them back with random access, again without TensorFlow.

`readers.read` uses them through `read_prepared` when a folder for prepared data is known: the first read
prepares the dataset there, later reads only read it back. A prepared copy is keyed by what it was made from:
its config name carries a digest of the source files' names, sizes and modification times (exactly the files
the reader reads), so a source folder with a file added, removed, replaced or touched is prepared again (and the
stale copy removed, saying so) instead of being read from the old copy.

Typical use:

  dataset = read_prepared("mvtec", "/data/mvtec_ad", "bottle", 224, "/data/tfds")
  train = load_split(MvtecAd, data_dir, manual_dir, "train", mvtec_config("bottle", image_size=128))
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import shutil
import textwrap

import numpy as np
import tensorflow_datasets as tfds

from maml_iqr.common import log
from maml_iqr.data.images import DataError, Dataset, ImageSet
from maml_iqr.data.readers import ksdd2_files, mvtec_files, read_ksdd2, read_mvtec

DEFAULT_IMAGE_SIZE = 256  # stored size; the models resize again, so this only bounds the disk use
MVTEC_CATEGORIES = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill",
                    "screw", "tile", "toothbrush", "transistor", "wood", "zipper")
MVTEC_URL = "https://www.mvtec.com/company/research/datasets/mvtec-ad"
KSDD2_URL = "https://www.vicos.si/resources/kolektorsdd2/"
FILE_FORMAT = "array_record"  # the random-access format tfds.data_source reads without TensorFlow


@dataclasses.dataclass(eq=False)
class MvtecAdConfig(tfds.core.BuilderConfig):
  """One MVTec-AD category at one stored image size (made from the source files with `source_digest`)."""
  category: str = ""
  image_size: int = DEFAULT_IMAGE_SIZE
  source_digest: str = ""


@dataclasses.dataclass(eq=False)
class Ksdd2Config(tfds.core.BuilderConfig):
  """KSDD2 at one stored image size (made from the source files with `source_digest`)."""
  image_size: int = DEFAULT_IMAGE_SIZE
  source_digest: str = ""


DIGEST_CHARS = 12


def _name_prefix(base: str, image_size: int) -> str:
  return f"{base}_{image_size}px_"


def _config_name(base: str, image_size: int, source_digest: str = "") -> str:
  # The size is in the name so that two sizes never share (and overwrite) one prepared folder; the digest, so
  # that a changed source folder never reuses a copy made from the old files.
  if source_digest:
    return _name_prefix(base, image_size) + source_digest
  return base if image_size == DEFAULT_IMAGE_SIZE else f"{base}_{image_size}px"


def _check_size(image_size: int) -> None:
  if image_size < 1:
    raise DataError(f"image_size={image_size}: expected a positive number of pixels")


def mvtec_config(category: str, image_size: int = DEFAULT_IMAGE_SIZE, source_digest: str = "") -> MvtecAdConfig:
  """A config for any category folder (the 15 official ones or your own in the same layout) and size."""
  _check_size(image_size)
  return MvtecAdConfig(name=_config_name(category, image_size, source_digest), category=category,
                       image_size=image_size, source_digest=source_digest,
                       description=f"MVTec-AD {category}, images resized to {image_size}x{image_size}.")


def ksdd2_config(image_size: int = DEFAULT_IMAGE_SIZE, source_digest: str = "") -> Ksdd2Config:
  """A KSDD2 config at `image_size` (the images are 230x630-ish; they are resized to a square like the reader)."""
  _check_size(image_size)
  return Ksdd2Config(name=_config_name("default", image_size, source_digest), image_size=image_size,
                     source_digest=source_digest, description=f"KSDD2, images resized to {image_size}x{image_size}.")


def _features(size: int) -> tfds.features.FeaturesDict:
  # Tensor, not Image/Text: those encode with TensorFlow. dtype np.str_ stores the id as bytes, read back as bytes.
  # Pixels as raw bytes and masks as zlib'd bytes: with the default encoding every pixel is an int64 in the
  # Example proto, and parsing those made the read back slower than decoding the JPEGs again (BENCHMARKS.md).
  return tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES),
      "mask": tfds.features.Tensor(shape=(size, size), dtype=np.bool_, encoding=tfds.features.Encoding.ZLIB),
      "label": tfds.features.Tensor(shape=(), dtype=np.int32),
      "id": tfds.features.Tensor(shape=(), dtype=np.str_),
  })


def _manual_dir(dl_manager, instructions: str):
  """`dl_manager.manual_dir`, with tfds' bare AssertionError turned into a DataError that says what to download."""
  try:
    return dl_manager.manual_dir
  except AssertionError as e:  # tfds' message names the folder; make sure it also says what to put there
    message = str(e).strip()
    raise DataError(message if instructions.strip() in message else f"{message}\n{instructions}") from None


class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared generation: read both splits once with a reader, then write them as they are."""

  _HOMEPAGE = ""
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "Images, masks, labels and ids as the maml_iqr readers return them.",
                   "1.1.0": "Images stored as raw bytes, masks as zlib'd bytes (not one int64 per pixel)."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=_features(self.builder_config.image_size),
                                          supervised_keys=("image", "label"), homepage=self._HOMEPAGE)

  def _split_generators(self, dl_manager):
    root = _manual_dir(dl_manager, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    try:
      dataset = self._read(str(root))
    except DataError as e:  # a wrong layout: repeat what the layout must be
      raise DataError(f"{e}\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}") from None
    return {"train": self._generate_examples(dataset.train), "test": self._generate_examples(dataset.test)}

  def _generate_examples(self, images: ImageSet):
    masks = images.masks if images.masks is not None else np.zeros(images.images.shape[:3], bool)
    for i, key in enumerate(images.ids):
      yield key, {"image": images.images[i], "mask": masks[i], "label": np.int32(images.labels[i]), "id": key}


class MvtecAd(_Builder):
  """MVTec-AD, one config per category; train is all good, test is good + defective with masks."""

  _HOMEPAGE = MVTEC_URL
  BUILDER_CONFIGS = [mvtec_config(c) for c in MVTEC_CATEGORIES]
  MANUAL_DOWNLOAD_INSTRUCTIONS = textwrap.dedent(f"""\
      Download MVTec-AD from {MVTEC_URL} (mvtec_anomaly_detection.tar.xz) and unpack it into
      manual_dir so that <manual_dir>/bottle/train/good exists (one folder per category, each with train/,
      test/ and ground_truth/).""")

  def _read(self, root: str):
    return read_mvtec(root, self.builder_config.category, self.builder_config.image_size)


class Ksdd2(_Builder):
  """KolektorSDD2; an image is defective when its <id>_GT.png mask has a non-zero pixel."""

  _HOMEPAGE = KSDD2_URL
  BUILDER_CONFIGS = [ksdd2_config()]
  MANUAL_DOWNLOAD_INSTRUCTIONS = textwrap.dedent(f"""\
      Download KolektorSDD2 from {KSDD2_URL} and unpack it into manual_dir so that
      <manual_dir>/train and <manual_dir>/test exist, each holding <id>.png images with their <id>_GT.png
      masks.""")

  def _read(self, root: str):
    return read_ksdd2(root, self.builder_config.image_size)


def prepare(builder_cls: type[_Builder], data_dir: str, manual_dir: str | None,
            config: tfds.core.BuilderConfig | str | None = None) -> tfds.core.DatasetBuilder:
  """Builds the dataset into `data_dir` as array_record (a no-op when it is already there) and returns the builder."""
  builder = builder_cls(data_dir=data_dir, config=config, file_format=FILE_FORMAT)
  builder.download_and_prepare(file_format=FILE_FORMAT,
                               download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def load_split(builder_cls: type[_Builder], data_dir: str, manual_dir: str | None, split: str,
               config: tfds.core.BuilderConfig | str | None = None) -> ImageSet:
  """Prepares if needed, then reads `split` back with `tfds.data_source` (random access, no TensorFlow).

  A prepared dataset is keyed by builder, config name and version only: a config made without a
  `source_digest` is not rebuilt when the files under `manual_dir` change (`read_prepared` makes configs with
  one, so that it is).
  """
  prepare(builder_cls, data_dir, manual_dir, config)
  return read_split(builder_cls, data_dir, split, config)


def read_split(builder_cls: type[_Builder], data_dir: str, split: str,
               config: tfds.core.BuilderConfig | str | None = None) -> ImageSet:
  """Reads a prepared `split` back with `tfds.data_source` (random access, no TensorFlow)."""
  source = tfds.data_source(builder_cls.name, split=split, data_dir=data_dir, download=False,
                            builder_kwargs={"config": config, "file_format": FILE_FORMAT})
  return source_to_image_set(source)


def source_to_image_set(source) -> ImageSet:
  """Stacks a data source's records into an ImageSet in the readers' order.

  tfds shuffles records by a hash of their key when it writes them; sorting the ids by path components
  restores the order the readers use (sorted folders, then sorted file names).
  """
  n = len(source)
  if n == 0:
    raise DataError("the split holds no examples")
  records = source.__getitems__(list(range(n)))
  ids = [r["id"].decode() if isinstance(r["id"], bytes) else str(r["id"]) for r in records]  # str Tensors read as bytes
  order = sorted(range(n), key=lambda i: ids[i].split(os.sep))
  records = [records[i] for i in order]
  return ImageSet(np.stack([np.asarray(r["image"], np.uint8) for r in records]),
                  np.asarray([int(r["label"]) for r in records], np.int32),  # a scalar Tensor reads as a Python int
                  tuple(ids[i] for i in order),
                  np.stack([np.asarray(r["mask"], bool) for r in records]))


def source_digest(root: str, paths: list[str]) -> str:
  """Digest of the files a reader reads: each one's path relative to `root`, size and modification time (of the
  file a symlink points to). Any file added, removed, replaced or touched changes it; reading no pixel, it costs
  one stat per file."""
  h = hashlib.sha256()
  for path in sorted(paths):
    st = os.stat(path)
    h.update(f"{os.path.relpath(path, root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
  return h.hexdigest()[:DIGEST_CHARS]


def _source(name: str, root: str, category: str):
  """(builder class, name base, the files the reader reads) for `name`; the reader's DataErrors on a bad layout."""
  if name == "mvtec":
    train, test, _, masks = mvtec_files(root, category)
    return MvtecAd, category, train + test + [m for m in masks if m]
  if name == "ksdd2":
    return Ksdd2, "default", [p for paths, masks in ksdd2_files(root).values() for p in paths + masks]
  raise DataError(f"data.name={name!r}: TFDS builders exist for mvtec and ksdd2 only")


def _remove_stale(data_dir: str, builder_name: str, prefix: str, keep: str, root: str) -> None:
  """Removes copies of the same dataset and size prepared from an earlier state of the source files."""
  folder = os.path.join(data_dir, builder_name)
  if not os.path.isdir(folder):
    return
  pattern = re.compile(re.escape(prefix) + f"[0-9a-f]{{{DIGEST_CHARS}}}")
  for name in sorted(os.listdir(folder)):
    if name != keep and pattern.fullmatch(name):
      stale = os.path.join(folder, name)
      log(f"WARNING: {stale}: prepared from files under {root} that have changed since (added, removed or "
          "modified); removing it and preparing the dataset again")
      shutil.rmtree(stale)


def read_prepared(name: str, root: str, category: str, size: int, data_dir: str) -> Dataset:
  """`readers.read` for mvtec / ksdd2 through TFDS: prepares `<data_dir>/<builder>/<config>` from `root` on the
  first call (array_record at `size`), then reads it back with `tfds.data_source`. Same arrays and ids as the
  reader; the same DataErrors for a wrong layout or a broken file (with the download instructions added)."""
  builder_cls, base, files = _source(name, root, category)
  digest = source_digest(root, files)
  config = (mvtec_config(category, size, digest) if name == "mvtec" else ksdd2_config(size, digest))
  prepared = os.path.join(data_dir, builder_cls.name, config.name)
  with _no_custom_config_warning():
    # One preparer at a time (sweep workers share the folder): the others wait here, then find it prepared.
    with _exclusive(os.path.join(data_dir, builder_cls.name, f".{config.name}.lock")):
      _remove_stale(data_dir, builder_cls.name, _name_prefix(base, size), config.name, root)
      if not os.path.isfile(os.path.join(prepared, str(builder_cls.VERSION), "dataset_info.json")):
        log(f"preparing {builder_cls.name}/{config.name} from {root} at {size}x{size} into {data_dir} (once; "
            "later runs read it back)")
        try:
          prepare(builder_cls, data_dir, root, config)
        except DataError:  # tfds removes its unfinished version folder; remove the empty config folder too
          shutil.rmtree(prepared, ignore_errors=True)
          raise
        if source_digest(root, _source(name, root, category)[2]) != digest:  # changed while it was prepared
          shutil.rmtree(prepared, ignore_errors=True)
          raise DataError(f"{root}: files changed while the dataset was being prepared into {prepared}; run "
                          "again")
    train, test = (read_split(builder_cls, data_dir, split, config) for split in ("train", "test"))
  return Dataset(name, category if name == "mvtec" else "ksdd2", train, test)


class _DropCustomConfigWarning(logging.Filter):
  """tfds warns "Using custom data configuration" on every builder made from a config outside BUILDER_CONFIGS:
  four WARNING lines per read for what is the normal case here (a config per digest and size)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Using custom data configuration")


@contextlib.contextmanager
def _no_custom_config_warning():
  logger, drop = logging.getLogger("absl"), _DropCustomConfigWarning()
  logger.addFilter(drop)
  try:
    yield
  finally:
    logger.removeFilter(drop)


@contextlib.contextmanager
def _exclusive(lock_path: str):
  """An exclusive lock on `lock_path` among the processes of this host (fcntl; no lock where it is missing)."""
  os.makedirs(os.path.dirname(lock_path), exist_ok=True)
  try:
    import fcntl  # pylint: disable=import-outside-toplevel
  except ImportError:
    yield
    return
  with open(lock_path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)
