"""Hostile input: whatever a user points the readers at yields data or one DataError naming the file.

A traceback from PIL or numpy tells a user nothing they can act on; a DataError says which file and what to do.
"""
import io
import os
import struct
import tempfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from maml_iqr.data import readers
from maml_iqr.data.images import DataError, list_images, load_image, load_images, load_mask

S = 8


def _save(path, im=None, **kw):
  os.makedirs(os.path.dirname(str(path)), exist_ok=True)
  (im if im is not None else Image.new("RGB", (16, 16), (10, 20, 30))).save(str(path), **kw)
  return str(path)


def _png_bytes(im=None) -> bytes:
  buf = io.BytesIO()
  (im if im is not None else Image.new("RGB", (24, 16), (200, 100, 50))).save(buf, "PNG")
  return buf.getvalue()


def _jpeg_bytes() -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.arange(24 * 16 * 3, dtype=np.uint8).reshape(16, 24, 3)).save(buf, "JPEG")
  return buf.getvalue()


# --- broken files ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, content, message", [
    ("zero.png", b"", r"image file is empty \(0 bytes\); delete it or replace it"),
    ("garbage.png", b"this is not an image at all" * 10, "cannot read image"),
    ("truncated.png", _png_bytes()[:60], "cannot read image"),
    ("truncated.jpg", _jpeg_bytes()[:200], "cannot read image"),
    ("text_named.jpg", b"hello\n", "delete or replace it"),
])
def test_broken_file_is_one_data_error_naming_it(tmp_path, name, content, message):
  path = tmp_path / name
  path.write_bytes(content)
  with pytest.raises(DataError, match=message) as e:
    load_image(str(path), S)
  assert str(path) in str(e.value)


def test_broken_file_inside_a_reader_names_that_file(tmp_path):
  for i in range(3):
    _save(tmp_path / "good" / f"{i}.png")
  (tmp_path / "good" / "1.png").write_bytes(_png_bytes()[:50])
  with pytest.raises(DataError, match=r"1\.png: cannot read image"):
    readers.read_folder(str(tmp_path / "good"), None, S)


def test_missing_file(tmp_path):
  with pytest.raises(DataError, match="image file not found"):
    load_image(str(tmp_path / "gone.png"), S)


def test_decompression_bomb_is_a_clear_data_error(tmp_path):
  """A tiny PNG whose header claims 100000 x 100000 pixels: refused before any pixel is allocated."""
  data = bytearray(_png_bytes(Image.new("L", (1, 1))))
  ihdr = struct.pack(">II", 100000, 100000) + bytes(data[24:29])
  data[16:29] = ihdr
  data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
  path = tmp_path / "bomb.png"
  path.write_bytes(bytes(data))
  with pytest.raises(DataError, match=r"bomb\.png: image is too large to load safely .*downscale it"):
    load_image(str(path), S)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path):
  path = _save(tmp_path / "locked.png")
  os.chmod(path, 0)
  with pytest.raises(DataError, match="permission denied"):
    load_image(path, S)


# --- modes ------------------------------------------------------------------------------------------------------

def _palette(transparency):
  im = Image.new("P", (16, 12), 1)
  im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
  return im, ({"transparency": 1} if transparency else {})


@pytest.mark.parametrize("name, make, pixel", [
    ("grey.png", lambda: (Image.new("L", (16, 12), 100), {}), (100, 100, 100)),
    ("rgb.png", lambda: (Image.new("RGB", (16, 12), (1, 2, 3)), {}), (1, 2, 3)),
    ("rgba.png", lambda: (Image.new("RGBA", (16, 12), (255, 0, 0, 0)), {}), (0, 0, 0)),  # on black
    ("la.png", lambda: (Image.new("LA", (16, 12), (200, 255)), {}), (200, 200, 200)),
    ("palette.png", lambda: _palette(False), (255, 0, 0)),
    ("palette_transparent.png", lambda: _palette(True), (0, 0, 0)),
    ("bilevel.png", lambda: (Image.new("1", (16, 12), 1), {}), (255, 255, 255)),
    ("sixteen.png", lambda: (Image.fromarray(np.full((12, 16), 40000, np.uint16)), {}), (156, 156, 156)),
    ("int32.tif", lambda: (Image.fromarray(np.full((12, 16), 7, np.int32)), {}), (7, 7, 7)),
    ("float01.tif", lambda: (Image.fromarray(np.full((12, 16), 0.5, np.float32)), {}), (128, 128, 128)),
    ("float_nan.tif", lambda: (Image.fromarray(np.full((12, 16), np.nan, np.float32)), {}), (0, 0, 0)),
    ("cmyk.jpg", lambda: (Image.new("CMYK", (16, 12), (0, 0, 0, 0)), {}), (255, 255, 255)),
])
def test_every_mode_becomes_rgb_uint8(tmp_path, name, make, pixel):
  im, kw = make()
  path = _save(tmp_path / name, im, **kw)
  a, original = load_image(path, S)
  assert a.shape == (S, S, 3) and a.dtype == np.uint8 and original == (16, 12)
  np.testing.assert_allclose(a[S // 2, S // 2], pixel, atol=2)


def test_sixteen_bit_uses_a_fixed_range_so_images_stay_comparable(tmp_path):
  """Per-image stretching made a uniform image black and two exposures identical."""
  dark = _save(tmp_path / "dark.png", Image.fromarray(np.tile(np.array([1000, 2000], np.uint16), (8, 4))))
  bright = _save(tmp_path / "bright.png", Image.fromarray(np.tile(np.array([30000, 60000], np.uint16), (8, 4))))
  a, _ = load_image(dark, 8)
  b, _ = load_image(bright, 8)
  assert a.mean() < 10 < 100 < b.mean()


def test_mixed_sizes_in_one_folder_come_out_one_size(tmp_path):
  for i, (size, mode) in enumerate([((16, 16), "RGB"), ((40, 10), "L"), ((7, 33), "RGBA"), ((100, 80), "1")]):
    _save(tmp_path / "good" / f"{i}.png", Image.new(mode, size))
  ds = readers.read_folder(str(tmp_path / "good"), None, S)
  assert ds.train.images.shape[1:] == ds.test.images.shape[1:] == (S, S, 3)
  assert len(ds.train) + len(ds.test) == 4


# --- EXIF orientation -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("orientation, red_side", [(6, "right"), (8, "left")])
def test_exif_rotated_jpeg_is_upright(tmp_path, orientation, red_side):
  """Stored landscape with a red top half; the camera's tag says rotate, so red ends up on one side."""
  a = np.zeros((20, 40, 3), np.uint8)
  a[:10] = (255, 0, 0)
  a[10:] = (0, 0, 255)
  exif = Image.Exif()
  exif[0x0112] = orientation
  path = _save(tmp_path / "rotated.jpg", Image.fromarray(a), exif=exif.tobytes(), quality=95)
  out, original = load_image(path, 20)
  assert original == (20, 40)  # upright: portrait
  left, right = out[10, 2], out[10, 17]
  red, blue = (left, right) if red_side == "left" else (right, left)
  assert red[0] > 200 and red[2] < 60 and blue[2] > 200 and blue[0] < 60


# --- masks ------------------------------------------------------------------------------------------------------

def test_mask_of_wrong_size_names_mask_and_both_sizes(tmp_path):
  image = _save(tmp_path / "a.png", Image.new("L", (16, 16)))
  mask = _save(tmp_path / "a_mask.png", Image.new("L", (8, 8), 255))
  with pytest.raises(DataError, match=r"a_mask\.png: mask is 8x8 but its image is 16x16"):
    load_images([image], S, [mask])


def test_ksdd2_mask_of_wrong_size(tmp_path):
  for split in ("train", "test"):
    _save(tmp_path / split / "0.png", Image.new("L", (16, 16)))
    _save(tmp_path / split / "0_GT.png", Image.new("L", (16, 16)))
  _save(tmp_path / "test" / "0_GT.png", Image.new("L", (16, 15)))
  with pytest.raises(DataError, match=r"0_GT\.png: mask is 16x15 but its image is 16x16"):
    readers.read_ksdd2(str(tmp_path), S)


@pytest.mark.parametrize("mask", [
    Image.fromarray(np.pad(np.ones((2, 2), np.uint16), 7)),  # 16-bit mask with value 1
    Image.fromarray(np.pad(np.ones((2, 2), np.float32), 7)),
    Image.fromarray(np.pad(np.ones((2, 2), bool), 7)),
])
def test_mask_modes_keep_small_nonzero_values(tmp_path, mask):
  path = _save(tmp_path / "m.tif", mask)
  m = load_mask(path, 16, (16, 16))
  assert m.dtype == bool and m.sum() == 4


# --- folder layouts ---------------------------------------------------------------------------------------------

def _strays(folder):
  os.makedirs(folder, exist_ok=True)
  for name in (".DS_Store", "Thumbs.db", "desktop.ini", "._foo.png", "notes.txt"):
    with open(os.path.join(folder, name), "wb") as f:
      f.write(b"\x00\x05\x16\x07 not an image")
  os.makedirs(os.path.join(folder, "subfolder"), exist_ok=True)
  os.makedirs(os.path.join(folder, "looks_like.png"), exist_ok=True)
  _save(os.path.join(folder, "subfolder", "nested.png"))


def test_list_images_skips_stray_files(tmp_path):
  _strays(str(tmp_path))
  _save(tmp_path / "real.png")
  assert [os.path.basename(p) for p in list_images(str(tmp_path))] == ["real.png"]


def test_mvtec_with_strays_everywhere(tmp_path):
  base = tmp_path / "bottle"
  for folder in ("train/good", "test/good", "test/broken"):
    _strays(str(base / folder))
    _save(base / folder / "000.png")
  _save(base / "ground_truth" / "broken" / "000_mask.png", Image.new("L", (16, 16), 255))
  (base / "test" / "README.txt").write_text("stray file in test/")
  (base / "test" / ".DS_Store").write_bytes(b"\0")
  ds = readers.read_mvtec(str(tmp_path), "bottle", S)
  assert len(ds.train) == 1 and (ds.test.n_good, ds.test.n_defective) == (1, 1)
  assert ds.test.masks[ds.test.labels == 1].all()


def test_empty_category(tmp_path):
  os.makedirs(tmp_path / "bottle" / "train" / "good")
  os.makedirs(tmp_path / "bottle" / "test" / "good")
  with pytest.raises(DataError, match=r"train/good: no images found"):
    readers.read_mvtec(str(tmp_path), "bottle", S)
  _save(tmp_path / "bottle" / "train" / "good" / "0.png")
  with pytest.raises(DataError, match=r"test: no test images found"):
    readers.read_mvtec(str(tmp_path), "bottle", S)
  os.makedirs(tmp_path / "cable")
  with pytest.raises(DataError, match=r"cable/train/good: folder not found; expected train/good"):
    readers.read_mvtec(str(tmp_path), "cable", S)


def test_single_image_category(tmp_path):
  """One good training image is allowed by the dataset readers; a plain folder needs 2 to split."""
  _save(tmp_path / "bottle" / "train" / "good" / "0.png")
  _save(tmp_path / "bottle" / "test" / "good" / "0.png")
  ds = readers.read_mvtec(str(tmp_path), "bottle", S)
  assert len(ds.train) == 1 and len(ds.test) == 1
  with pytest.raises(DataError, match=r"good: found 1 good images; need at least 2"):
    readers.read_folder(str(tmp_path / "bottle" / "train" / "good"), None, S)
  with pytest.raises(DataError, match=r"found 0 good images"):
    readers.read_folder(str(tmp_path / "bottle" / "test"), None, S)


def test_read_folder_always_keeps_a_training_image(tmp_path):
  for i in range(2):
    _save(tmp_path / "good" / f"{i}.png")
  _save(tmp_path / "bad" / "0.png")
  ds = readers.read_folder(str(tmp_path / "good"), str(tmp_path / "bad"), S, test_fraction=0.9)
  assert len(ds.train) == 1 and ds.test.labels.tolist() == [0, 1]


def test_read_folder_without_defective_images_holds_nothing_out(tmp_path):
  """Clean mode: with nothing defective to test against, every good image is cleaned, whatever test_fraction."""
  for i in range(3):
    _save(tmp_path / "good" / f"{i}.png")
  ds = readers.read_folder(str(tmp_path / "good"), None, S, test_fraction=0.5)
  assert ds.train.ids == ("0.png", "1.png", "2.png") and len(ds.test) == 0


def test_read_folder_same_folder_twice(tmp_path):
  for i in range(2):
    _save(tmp_path / "good" / f"{i}.png")
  with pytest.raises(DataError, match="defective folder is the good folder"):
    readers.read_folder(str(tmp_path / "good"), str(tmp_path / "good") + "/", S)


def test_read_folder_relative_and_absolute(tmp_path, monkeypatch):
  for i in range(2):
    _save(tmp_path / "good" / f"{i}.png")
  _save(tmp_path / "bad" / "b.png")
  monkeypatch.chdir(tmp_path)
  ds = readers.read_folder(str(tmp_path / "good"), "bad", S)
  assert ds.test.n_defective == 1 and os.path.join("bad", "b.png") in ds.test.ids


def test_missing_defective_folder(tmp_path):
  for i in range(2):
    _save(tmp_path / "good" / f"{i}.png")
  with pytest.raises(DataError, match="nope: folder not found"):
    readers.read_folder(str(tmp_path / "good"), str(tmp_path / "nope"), S)


def test_non_ascii_paths(tmp_path):
  cat = "flaschen_ä_日本"
  _save(tmp_path / cat / "train" / "good" / "bild_ü_一.png")
  _save(tmp_path / cat / "test" / "kratzer_é" / "fehler_ß.png")
  _save(tmp_path / cat / "ground_truth" / "kratzer_é" / "fehler_ß_mask.png", Image.new("L", (16, 16), 255))
  ds = readers.read_mvtec(str(tmp_path), cat, S)
  assert ds.train.ids == (os.path.join(cat, "train", "good", "bild_ü_一.png"),)
  assert ds.test.n_defective == 1 and ds.test.masks.all()
  bad = tmp_path / cat / "train" / "good" / "kaputt_日本.png"
  bad.write_bytes(b"junk")
  with pytest.raises(DataError, match="kaputt_日本.png: cannot read image"):
    readers.read_mvtec(str(tmp_path), cat, S)


# --- fuzz -------------------------------------------------------------------------------------------------------

_DIR = tempfile.mkdtemp(prefix="hostile_")
_VALID = [_png_bytes(), _jpeg_bytes(), _png_bytes(Image.new("P", (9, 5))), _png_bytes(Image.new("I;16", (5, 9)))]


def _check(data: bytes, suffix: str):
  path = os.path.join(_DIR, "fuzz" + suffix)
  with open(path, "wb") as f:
    f.write(data)
  try:
    a, _ = load_image(path, S)
  except DataError as e:
    assert "fuzz" + suffix in str(e)
  else:
    assert a.shape == (S, S, 3) and a.dtype == np.uint8


_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_SUFFIX = st.sampled_from([".png", ".jpg", ".tif", ".bmp", ".webp"])


@_FUZZ
@given(st.binary(max_size=2048), _SUFFIX)
def test_fuzz_random_bytes(data, suffix):
  _check(data, suffix)


@_FUZZ
@given(st.sampled_from(_VALID), st.floats(0, 1), _SUFFIX)
def test_fuzz_truncated_valid_images(data, keep, suffix):
  _check(data[:int(len(data) * keep)], suffix)


@_FUZZ
@given(st.sampled_from(_VALID), st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                                          min_size=1, max_size=8), _SUFFIX)
def test_fuzz_byte_flips_in_valid_images(data, flips, suffix):
  data = bytearray(data)
  for where, value in flips:
    data[int(where * len(data))] = value
  _check(bytes(data), suffix)
