import os
import re

import numpy as np
import pytest
from PIL import Image

from maml_iqr.data import readers
from maml_iqr.data.images import DataError, draw_whole_groups, load_image
from tests.conftest import DATA, shared_data


def _png(path, size=(16, 16), value=128, mode="L"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.new(mode, size, value).save(path)


def test_hazelnut_toy_counts_and_masks():
  shared_data("hazelnut_toy")
  ds = readers.read_mvtec(DATA, "hazelnut_toy", 64)
  assert (len(ds.train), ds.test.n_good, ds.test.n_defective) == (28, 6, 17)
  assert ds.train.images.shape == (28, 64, 64, 3) and ds.train.images.dtype == np.uint8
  defective = ds.test.labels == 1
  assert ds.test.masks[defective].reshape(17, -1).any(axis=1).all()  # all 17 masks found, non-empty
  assert not ds.test.masks[~defective].any()
  assert ds.test.ids[0].startswith("hazelnut_toy/test/")


def test_magnetic_tile_differnet_split():
  root = shared_data("magnetic_tile")
  ds = readers.read_magnetic_tile(root, 32)
  assert (len(ds.train), ds.test.n_good, ds.test.n_defective) == (761, 191, 392)
  assert not set(ds.train.ids) & set(ds.test.ids)
  assert ds.test.masks[ds.test.labels == 1].any()


def test_elpv_split_is_seeded_and_disjoint():
  a = readers.read_elpv(32, "mono", seed=3)
  b = readers.read_elpv(32, "mono", seed=3)
  c = readers.read_elpv(32, "mono", seed=4)
  assert a.train.ids == b.train.ids and a.train.ids != c.train.ids
  assert not set(a.train.ids) & set(a.test.ids)
  assert all("/mono/" in i for i in a.train.ids + a.test.ids)
  assert a.train.n_defective == 0 and a.test.n_defective > 0
  full = readers.read_elpv(32, one_third="defective", two_thirds="defective")
  assert full.test.n_defective > readers.read_elpv(32).test.n_defective


def test_ksdd2_fixture(tmp_path):
  for split, n in (("train", 3), ("test", 4)):
    for i in range(n):
      _png(str(tmp_path / split / f"{i}.png"), value=10 * i)
      mask = Image.new("L", (16, 16), 0)
      if i % 2:
        mask.putpixel((3, 3), 255)
      mask.save(tmp_path / split / f"{i}_GT.png")
  ds = readers.read_ksdd2(str(tmp_path), 8)
  assert len(ds.train) == 3 and len(ds.test) == 4
  assert list(ds.test.labels) == [0, 1, 0, 1] and ds.test.ids[1] == os.path.join("test", "1.png")


def test_folder_reader_with_stray_files(tmp_path):
  for i in range(6):
    _png(str(tmp_path / "good" / f"g{i}.png"))
  _png(str(tmp_path / "bad" / "b0.png"))
  (tmp_path / "good" / ".DS_Store").write_bytes(b"\0\1")
  (tmp_path / "good" / "notes.txt").write_text("hi")
  ds = readers.read_folder(str(tmp_path / "good"), str(tmp_path / "bad"), 8, test_fraction=0.5)
  assert len(ds.train) == 3 and ds.test.n_good == 3 and ds.test.n_defective == 1


def _parts(tmp_path, n_parts=6, lights=3, bad_parts=(9,)):
  for part in range(n_parts):
    for light in range(lights):
      _png(str(tmp_path / "good" / f"part{part:02d}_light{light}.png"))
  for part in bad_parts:
    for light in range(lights):
      _png(str(tmp_path / "bad" / f"part{part:02d}_light{light}.png"))


def test_folder_objects_keep_each_part_on_one_side(tmp_path):
  """With data.object_pattern the good images are split by whole parts (a part's other photographs in the test set
  would be a leak), the Dataset names every image's part, and the same seed draws the same parts; without it the
  folder reads as before, by image, with no groups."""
  _parts(tmp_path)
  read = lambda seed, pattern: readers.read_folder(str(tmp_path / "good"), str(tmp_path / "bad"), 8, 0.5, seed,
                                                   pattern)
  part = lambda i: os.path.basename(i)[:6]
  ds = read(0, r"^(part\d+)_")
  assert ds.groups == {i: part(i) for i in ds.train.ids + ds.test.ids}
  train_parts = {part(i) for i in ds.train.ids}
  test_good_parts = {part(i) for i, y in zip(ds.test.ids, ds.test.labels) if y == 0}
  assert len(train_parts) == 3 and len(test_good_parts) == 3 and not train_parts & test_good_parts
  assert len(ds.train) == 9 and ds.test.n_good == 9 and ds.test.n_defective == 3
  assert read(0, r"^(part\d+)_").train.ids == ds.train.ids
  assert {read(s, r"^(part\d+)_").train.ids for s in range(6)} != {ds.train.ids}  # the seed draws the parts
  plain = read(0, "")
  assert plain.groups is None and len(plain.train) == 9
  assert {part(i) for i in plain.train.ids} & {part(i) for i in plain.test.ids[:9]}  # by image, parts cross sides


def test_folder_objects_named_errors(tmp_path):
  _parts(tmp_path, bad_parts=(2,))
  good, bad = str(tmp_path / "good"), str(tmp_path / "bad")
  with pytest.raises(DataError, match=r"objects have images in both the good and the defective folder.*'part02'"):
    readers.read_folder(good, bad, 8, 0.5, 0, r"^(part\d+)_")
  with pytest.raises(DataError, match=re.escape(r"part00_light0.png: data.object_pattern='^(lot\d+)' finds no object")):
    readers.read_folder(good, None, 8, 0.0, 0, r"^(lot\d+)")
  with pytest.raises(DataError, match="not a regular expression"):
    readers.read_folder(good, None, 8, 0.0, 0, r"^(part")
  _png(str(tmp_path / "bad2" / "scratch_light9.png"))
  with pytest.raises(DataError, match="no good object to train on"):
    readers.read_folder(good, str(tmp_path / "bad2"), 8, 0.9, 0, r"light\d")  # 3 'objects' (the lights), 16 to test


def test_missing_root_names_path(tmp_path):
  with pytest.raises(DataError, match="nowhere: folder not found"):
    readers.read_mvtec(str(tmp_path / "nowhere"), "bottle", 8)


def test_unknown_category_lists_found(tmp_path):
  _png(str(tmp_path / "bottle" / "train" / "good" / "0.png"))
  with pytest.raises(DataError, match=r"categories under .*\['bottle'\]"):
    readers.read_mvtec(str(tmp_path), "cable", 8)


def test_wrong_layout(tmp_path):
  _png(str(tmp_path / "bottle" / "good" / "0.png"))
  with pytest.raises(DataError, match="train/good"):
    readers.read_mvtec(str(tmp_path), "bottle", 8)


def test_empty_category(tmp_path):
  os.makedirs(tmp_path / "bottle" / "train" / "good")
  os.makedirs(tmp_path / "bottle" / "test" / "good")
  with pytest.raises(DataError, match="no images found"):
    readers.read_mvtec(str(tmp_path), "bottle", 8)


def test_truncated_and_empty_images_name_the_file(tmp_path):
  good = tmp_path / "a.png"
  _png(str(good), size=(64, 64), mode="RGB")
  data = good.read_bytes()
  (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
  (tmp_path / "zero.jpg").write_bytes(b"")
  (tmp_path / "junk.jpg").write_bytes(b"this is not an image")
  for name in ("cut.png", "zero.jpg", "junk.jpg"):
    with pytest.raises(DataError, match=name):
      load_image(str(tmp_path / name), 8)


def test_mask_of_wrong_size(tmp_path):
  base = tmp_path / "bottle"
  _png(str(base / "train" / "good" / "0.png"))
  _png(str(base / "test" / "crack" / "0.png"), size=(16, 16))
  _png(str(base / "ground_truth" / "crack" / "0_mask.png"), size=(12, 16))
  with pytest.raises(DataError, match="0_mask.png: mask is 12x16 but its image is 16x16"):
    readers.read_mvtec(str(tmp_path), "bottle", 8)


def test_magnetic_tile_tiles_are_grouped_by_rising_lighting_and_near_numbers():
  """Six lightings of one tile have rising exp and nearby num; a new tile starts where exp does not rise or num
  jumps; classes never share a tile."""
  ids = [f"MT_Free/Imgs/exp{e}_num_{n}.jpg" for e, n in [(1, 743), (2, 824), (3, 913), (1, 1810), (2, 1836),
                                                          (4, 2500)]]
  ids.append("MT_Crack/Imgs/exp2_num_744.jpg")
  tile = readers.mtd_tiles(ids)
  assert [tile[i] for i in ids] == ["MT_Free/743"] * 3 + ["MT_Free/1810"] * 2 + ["MT_Free/2500", "MT_Crack/744"]
  with pytest.raises(DataError, match="not a Magnetic Tile file name"):
    readers.mtd_tiles(["MT_Free/Imgs/photo.jpg"])


def test_a_split_by_tile_never_puts_one_tile_on_both_sides():
  ids = [f"MT_Free/Imgs/exp{e}_num_{1000 * t + 10 * e}.jpg" for t in range(1, 21) for e in range(1, 7)]
  tile = readers.mtd_tiles(ids)
  assert len(set(tile.values())) == 20
  for seed in range(3):
    test = {ids[k] for k in draw_whole_groups([tile[i] for i in ids], 25, np.random.default_rng(seed))}
    assert 25 <= len(test) < 31 and {tile[i] for i in test}.isdisjoint({tile[i] for i in ids if i not in test})


def test_magnetic_tile_by_tile_split_and_its_noise_keep_every_tile_on_one_side():
  """data.mtd_split=by_tile: as many good test images as DifferNet's split, drawn as whole tiles by split_seed;
  the noise protocol then draws validation and injected images by tile, so no tile is in two of train, val and
  test. DifferNet's split carries no tiles (the paper's protocol is unchanged)."""
  from maml_iqr.data.contamination import contaminate
  root = shared_data("magnetic_tile")
  assert readers.read_magnetic_tile(root, 8).groups is None
  ds = readers.read_magnetic_tile(root, 8, "by_tile", 0)
  assert 191 <= ds.test.n_good < 191 + 7 and len(ds.train) + ds.test.n_good == 952 and ds.test.n_defective == 392
  tiles = lambda ids: {ds.groups[i] for i in ids}  # noqa: E731
  assert tiles(ds.train.ids).isdisjoint(tiles(ds.test.ids))
  assert set(readers.read_magnetic_tile(root, 8, "by_tile", 1).train.ids) != set(ds.train.ids)
  split = contaminate(ds, 0.5, seed=3)
  assert split.n_injected >= round(0.5 * (392 - split.val.n_defective))
  sides = [tiles(split.train.ids), tiles(split.val.ids), tiles(split.test.ids)]
  assert all(a.isdisjoint(b) for k, a in enumerate(sides) for b in sides[k + 1:])
  with pytest.raises(DataError, match="mtd_split"):
    readers.read_magnetic_tile(root, 8, "by_part")
