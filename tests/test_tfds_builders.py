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
  files = os.listdir(os.path.join(data_dir, "mvtec_ad", f"widget_{SIZE}px", "1.0.0"))
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
