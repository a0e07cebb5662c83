"""The TFDS builders write what the readers return, and read it back with tfds.data_source, all without TensorFlow."""
import importlib.util
import os
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from maml_iqr.data import readers
from maml_iqr.data import tfds_builders as tb
from maml_iqr.data.images import DataError
from tests.conftest import DATA, shared_data

SIZE = 12


def _png(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path)


def _rgb(rng, h=20, w=24):
  return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _mask(h=20, w=24, box=None):
  m = np.zeros((h, w), np.uint8)
  if box:
    m[box[0]:box[1], box[2]:box[3]] = 255
  return m


@pytest.fixture
def mvtec_root(tmp_path):
  """A category 'widget' in MVTec layout: 3 train, 2 good test, 2 'scratch' test with masks."""
  rng = np.random.default_rng(0)
  base = tmp_path / "mvtec" / "widget"
  for i in range(3):
    _png(base / "train" / "good" / f"{i:03d}.png", _rgb(rng))
  for i in range(2):
    _png(base / "test" / "good" / f"{i:03d}.png", _rgb(rng))
    _png(base / "test" / "scratch" / f"{i:03d}.png", _rgb(rng))
    _png(base / "ground_truth" / "scratch" / f"{i:03d}_mask.png", _mask(box=(2, 10, 3 + i, 12)))
  return str(tmp_path / "mvtec")


@pytest.fixture
def ksdd2_root(tmp_path):
  """KSDD2 layout: train 3 (1 defective), test 2 (1 defective); tall images like the real ones."""
  rng = np.random.default_rng(1)
  root = tmp_path / "ksdd2"
  for split, boxes in (("train", [None, (5, 15, 2, 6), None]), ("test", [(0, 4, 0, 4), None])):
    for i, box in enumerate(boxes):
      _png(root / split / f"{10 + i}.png", _rgb(rng, 30, 10))
      _png(root / split / f"{10 + i}_GT.png", _mask(30, 10, box))
  return str(root)


def _assert_same(got, want):
  assert got.ids == want.ids
  np.testing.assert_array_equal(got.labels, want.labels)
  assert got.images.dtype == np.uint8 and got.images.tobytes() == want.images.tobytes()
  want_masks = want.masks if want.masks is not None else np.zeros(want.images.shape[:3], bool)
  np.testing.assert_array_equal(got.masks, want_masks)


def test_no_tensorflow():
  assert importlib.util.find_spec("tensorflow") is None, "these tests check that tfds works without TensorFlow"


def test_mvtec_round_trip(tmp_path, mvtec_root):
  config = tb.mvtec_config("widget", SIZE)
  want = readers.read_mvtec(mvtec_root, "widget", SIZE)
  data_dir = str(tmp_path / "tfds")
  train = tb.load_split(tb.MvtecAd, data_dir, mvtec_root, "train", config)
  test = tb.load_split(tb.MvtecAd, data_dir, mvtec_root, "test", config)
  assert (len(train), test.n_good, test.n_defective) == (3, 2, 2)
  _assert_same(train, want.train)
  _assert_same(test, want.test)
  assert test.masks[test.labels == 1].reshape(2, -1).any(axis=1).all()
  files = os.listdir(os.path.join(data_dir, "mvtec_ad", f"widget_{SIZE}px", str(tb.MvtecAd.VERSION)))
  assert any(".array_record" in f for f in files), files
  # Random access straight from tfds, as a training loop would use it.
  source = tfds.data_source("mvtec_ad", split="test", data_dir=data_dir, download=False,
                            builder_kwargs={"config": config})
  assert len(source) == 4
  record = source[3]
  assert record["image"].shape == (SIZE, SIZE, 3) and record["image"].dtype == np.uint8
  assert record["id"].decode() in want.test.ids
  assert "tensorflow" not in sys.modules


def test_ksdd2_round_trip(tmp_path, ksdd2_root):
  want = readers.read_ksdd2(ksdd2_root, SIZE)
  data_dir = str(tmp_path / "tfds")
  config = tb.ksdd2_config(SIZE)
  train = tb.load_split(tb.Ksdd2, data_dir, ksdd2_root, "train", config)
  test = tb.load_split(tb.Ksdd2, data_dir, ksdd2_root, "test", config)
  assert train.ids == ("train/10.png", "train/11.png", "train/12.png")
  assert train.labels.tolist() == [0, 1, 0] and test.labels.tolist() == [1, 0]
  _assert_same(train, want.train)
  _assert_same(test, want.test)
  assert "tensorflow" not in sys.modules


def test_registered_configs():
  names = [c.name for c in tb.MvtecAd.BUILDER_CONFIGS]
  assert names == list(tb.MVTEC_CATEGORIES) and len(names) == 15
  assert all(c.image_size == tb.DEFAULT_IMAGE_SIZE for c in tb.MvtecAd.BUILDER_CONFIGS)
  assert tb.mvtec_config("bottle", 64).name == "bottle_64px"


@pytest.mark.parametrize("builder_cls, url", [(tb.MvtecAd, tb.MVTEC_URL), (tb.Ksdd2, tb.KSDD2_URL)])
def test_missing_or_empty_manual_dir_says_where_to_download(tmp_path, builder_cls, url):
  (tmp_path / "empty").mkdir()
  for manual_dir in (str(tmp_path / "missing"), str(tmp_path / "empty")):
    with pytest.raises(DataError, match="does not exist or is empty") as e:
      tb.load_split(builder_cls, str(tmp_path / "tfds"), manual_dir, "train", "bottle" if builder_cls is tb.MvtecAd
                    else None)
    assert url in str(e.value) and manual_dir in str(e.value)


def test_wrong_layout_names_folder_and_download(tmp_path, mvtec_root):
  with pytest.raises(DataError, match="category folder not found") as e:
    tb.load_split(tb.MvtecAd, str(tmp_path / "tfds"), mvtec_root, "train", tb.mvtec_config("bottle", SIZE))
  assert tb.MVTEC_URL in str(e.value) and "widget" in str(e.value)


def test_hazelnut_toy(tmp_path):
  shared_data("hazelnut_toy")
  config = tb.mvtec_config("hazelnut_toy", 32)
  data_dir = str(tmp_path / "tfds")
  train = tb.load_split(tb.MvtecAd, data_dir, DATA, "train", config)
  test = tb.load_split(tb.MvtecAd, data_dir, DATA, "test", config)
  assert (len(train), len(test), test.n_good, test.n_defective) == (28, 23, 6, 17)
  want = readers.read_mvtec(DATA, "hazelnut_toy", 32)
  _assert_same(test, want.test)


# readers.read through TFDS. Checked to fail on the old code: there read() decoded the files and never prepared
# anything (test_read_prepares_once_then_reads_back fails on the missing prepared folder), and a prepared copy was
# keyed by category and size only (test_changed_source_is_prepared_again reads the stale copy: 3 images, not 4).
def _data(name, root, category="widget", tfds_dir=""):
  import ml_collections
  return ml_collections.ConfigDict(dict(name=name, root=root, category=category, tfds_dir=tfds_dir))


def _prepared(data_dir, builder="mvtec_ad"):
  folder = os.path.join(data_dir, builder)
  return sorted(n for n in os.listdir(folder) if not n.startswith(".")) if os.path.isdir(folder) else []


def _no_decoding(monkeypatch):
  """Any image decode from now on fails the test: what follows must come from the prepared copy."""
  def refuse(*args, **kwargs):
    raise AssertionError("an image file was decoded")
  monkeypatch.setattr(readers, "load_images", refuse)


def test_read_prepares_once_then_reads_back(tmp_path, mvtec_root, monkeypatch):
  data_dir = str(tmp_path / "tfds")
  want = readers.read_mvtec(mvtec_root, "widget", SIZE)
  first = readers.read(_data("mvtec", mvtec_root), SIZE, prepared_dir=data_dir)
  (name,) = _prepared(data_dir)
  assert name.startswith(f"widget_{SIZE}px_") and len(name) == len(f"widget_{SIZE}px_") + tb.DIGEST_CHARS
  _no_decoding(monkeypatch)
  second = readers.read(_data("mvtec", mvtec_root), SIZE, prepared_dir=data_dir)
  for got in (first, second):
    assert (got.name, got.category) == ("mvtec", "widget")
    _assert_same(got.train, want.train)
    _assert_same(got.test, want.test)
  assert _prepared(data_dir) == [name] and "tensorflow" not in sys.modules


def test_config_value_names_the_folder(tmp_path, mvtec_root):
  own = str(tmp_path / "own")
  readers.read(_data("mvtec", mvtec_root, tfds_dir=own), SIZE, prepared_dir=str(tmp_path / "default"))
  assert _prepared(own) and not os.path.exists(tmp_path / "default")


def test_read_config_prepares_under_the_cache_folder(tmp_path, mvtec_root):
  """Runs and benchmarks read a config's data one way: prepared under `<cache_dir>/tfds`, decoded without one."""
  import ml_collections
  config = ml_collections.ConfigDict(dict(data=_data("mvtec", mvtec_root), cache_dir=str(tmp_path / "cache")))
  want = readers.read_mvtec(mvtec_root, "widget", SIZE)
  _assert_same(readers.read_config(config, SIZE).train, want.train)
  assert _prepared(str(tmp_path / "cache" / "tfds"))
  config.cache_dir = ""
  _assert_same(readers.read_config(config, SIZE).test, want.test)
  assert not os.path.exists("tfds")


def test_changed_source_is_prepared_again(tmp_path, mvtec_root, monkeypatch):
  data_dir = str(tmp_path / "tfds")
  read = lambda: readers.read(_data("mvtec", mvtec_root), SIZE, prepared_dir=data_dir)
  read()
  good = os.path.join(mvtec_root, "widget", "train", "good")
  rng = np.random.default_rng(5)
  seen = set(_prepared(data_dir))
  # Added, then modified in place (same name and size, new pixels, a later mtime), then removed.
  changes = [lambda: _png(os.path.join(good, "003.png"), _rgb(rng)),
             lambda: (_png(os.path.join(good, "000.png"), _rgb(rng)), os.utime(os.path.join(good, "000.png"),
                                                                                ns=(1, 2_000_000_000_000_000_000))),
             lambda: os.remove(os.path.join(good, "001.png"))]
  for change, n_train in zip(changes, (4, 4, 3)):
    change()
    got = read()
    _assert_same(got.train, readers.read_mvtec(mvtec_root, "widget", SIZE).train)
    assert len(got.train) == n_train
    (name,) = _prepared(data_dir)  # the stale copy was removed
    assert name not in seen
    seen.add(name)


def test_ksdd2_through_read(tmp_path, ksdd2_root, monkeypatch):
  data_dir = str(tmp_path / "tfds")
  want = readers.read_ksdd2(ksdd2_root, SIZE)
  readers.read(_data("ksdd2", ksdd2_root, "ksdd2"), SIZE, prepared_dir=data_dir)
  _no_decoding(monkeypatch)
  got = readers.read(_data("ksdd2", ksdd2_root, "ksdd2"), SIZE, prepared_dir=data_dir)
  assert (got.name, got.category) == ("ksdd2", "ksdd2")
  _assert_same(got.train, want.train)
  _assert_same(got.test, want.test)
  assert [n.startswith(f"default_{SIZE}px_") for n in _prepared(data_dir, "ksdd2")] == [True]


def test_named_errors_through_tfds(tmp_path, mvtec_root):
  data_dir = str(tmp_path / "tfds")
  with pytest.raises(DataError, match="nowhere: folder not found"):
    readers.read(_data("mvtec", str(tmp_path / "nowhere")), SIZE, prepared_dir=data_dir)
  with pytest.raises(DataError, match=r"categories under .*\['widget'\]"):
    readers.read(_data("mvtec", mvtec_root, "bottle"), SIZE, prepared_dir=data_dir)
  broken = os.path.join(mvtec_root, "widget", "test", "good", "000.png")
  with open(broken, "wb") as f:
    f.write(b"not an image")
  with pytest.raises(DataError, match="000.png"):
    readers.read(_data("mvtec", mvtec_root), SIZE, prepared_dir=data_dir)
  assert not _prepared(data_dir)  # nothing half-prepared is left to be reused
