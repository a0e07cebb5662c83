"""Readers for the datasets the paper and DifferNet use, and for a user's own folders.

Each returns a `Dataset`: the dataset's own train set and test set as uint8 arrays of one size, with labels,
masks where the dataset has them, and stable ids (paths relative to the root). `read(config)` dispatches on
`config.data.name`.
"""
from __future__ import annotations

import collections
import os
import re

import numpy as np

from maml_iqr.data.images import DataError, Dataset, ImageSet, draw_whole_groups, list_images, load_images

MTD_DEFECTS = ("MT_Blowhole", "MT_Break", "MT_Crack", "MT_Fray", "MT_Uneven")
MTD_TRAIN_LIST = "differnet_train_filenames.txt"
MTD_SPLITS = ("differnet", "by_tile")
MTD_NAME = re.compile(r"(MT_\w+)[/\\]Imgs[/\\]exp(\d)_num_(\d+)\.\w+$")
MTD_MAX_STEP = 300  # the largest step of N within one tile is 260 (MT_Free); between tiles, thousands


def _require_dir(path: str, what: str) -> None:
  if not os.path.isdir(path):
    raise DataError(f"{path}: folder not found; expected {what}")


def _image_set(root: str, paths: list[str], labels: list[int], size: int,
               mask_paths: list[str | None] | None = None) -> ImageSet:
  images, masks = load_images(paths, size, mask_paths)
  ids = tuple(os.path.relpath(p, root) for p in paths)
  return ImageSet(images, np.asarray(labels, np.int32), ids, masks)


def mvtec_files(root: str, category: str) -> tuple[list[str], list[str], list[int], list[str | None]]:
  """The files `read_mvtec` reads, in its order: (train paths, test paths, test labels, test mask paths).

  Raises the reader's named DataErrors for a wrong layout, without opening any image.
  """
  _require_dir(root, "the MVTec-AD root holding one folder per category (bottle, cable, ...)")
  base = os.path.join(root, category)
  if not os.path.isdir(base):
    found = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    raise DataError(f"{base}: category folder not found; categories under {root}: {found or 'none'}")
  _require_dir(os.path.join(base, "train", "good"), "train/good with the defect-free training images")
  _require_dir(os.path.join(base, "test"), "test/<defect> folders and test/good")
  train_paths = list_images(os.path.join(base, "train", "good"))
  if not train_paths:
    raise DataError(f"{os.path.join(base, 'train', 'good')}: no images found (png/jpg/bmp/tif)")
  test_paths, test_labels, mask_paths = [], [], []
  for defect in sorted(os.listdir(os.path.join(base, "test"))):
    folder = os.path.join(base, "test", defect)
    if not os.path.isdir(folder) or defect.startswith("."):
      continue
    for path in list_images(folder):
      test_paths.append(path)
      test_labels.append(0 if defect == "good" else 1)
      mask_paths.append(None if defect == "good" else _mvtec_mask(base, defect, path))
  if not test_paths:
    raise DataError(f"{os.path.join(base, 'test')}: no test images found")
  return train_paths, test_paths, test_labels, mask_paths


def read_mvtec(root: str, category: str, size: int) -> Dataset:
  """MVTec-AD layout: <root>/<category>/{train/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png}."""
  train_paths, test_paths, test_labels, mask_paths = mvtec_files(root, category)
  train = _image_set(root, train_paths, [0] * len(train_paths), size)
  train = ImageSet(train.images, train.labels, train.ids, np.zeros(train.images.shape[:3], bool))
  test = _image_set(root, test_paths, test_labels, size, mask_paths)
  return Dataset("mvtec", category, train, test)


def _mvtec_mask(base: str, defect: str, image_path: str) -> str | None:
  stem = os.path.splitext(os.path.basename(image_path))[0]
  for name in (f"{stem}_mask.png", f"{stem}.png"):
    path = os.path.join(base, "ground_truth", defect, name)
    if os.path.isfile(path):
      return path
  return None  # MVTec ships a mask for every defective image; a missing one reads as all-zero


def ksdd2_files(root: str) -> dict[str, tuple[list[str], list[str]]]:
  """The files `read_ksdd2` reads: {split: (image paths, mask paths)}, with the reader's named DataErrors."""
  _require_dir(root, "the KSDD2 root holding train/ and test/")
  out = {}
  for split in ("train", "test"):
    folder = os.path.join(root, split)
    _require_dir(folder, f"{split}/ with <id>.png images and <id>_GT.png masks")
    paths = [p for p in list_images(folder) if not os.path.splitext(p)[0].endswith("_GT")]
    if not paths:
      raise DataError(f"{folder}: no images found (expected <id>.png with <id>_GT.png)")
    mask_paths = []
    for p in paths:
      m = os.path.splitext(p)[0] + "_GT.png"
      if not os.path.isfile(m):
        raise DataError(f"{m}: mask not found; KSDD2 ships a <id>_GT.png beside every <id>.png")
      mask_paths.append(m)
    out[split] = (paths, mask_paths)
  return out


def read_ksdd2(root: str, size: int) -> Dataset:
  """KSDD2 layout: <root>/{train,test}/<id>.png with <id>_GT.png; defective when the mask has a non-zero pixel."""
  parts = []
  for paths, mask_paths in ksdd2_files(root).values():
    images, masks = load_images(paths, size, mask_paths)
    labels = masks.reshape(len(paths), -1).any(axis=1).astype(np.int32)
    parts.append(ImageSet(images, labels, tuple(os.path.relpath(p, root) for p in paths), masks))
  return Dataset("ksdd2", "ksdd2", parts[0], parts[1])


def mtd_tiles(ids) -> dict[str, str]:
  """Image id -> its physical tile ('<class>/<first N>'). Magnetic Tile's `MT_<class>/Imgs/exp<L>_num_<N>.jpg`
  photographs each tile under up to six lightings L (1-6) with consecutive N: a new tile starts where L does not
  rise or N jumps by more than `MTD_MAX_STEP` (README, "Magnetic Tile shows each tile up to six times")."""
  parsed = collections.defaultdict(list)
  for i in ids:
    m = MTD_NAME.search(i)
    if not m:
      raise DataError(f"{i!r} is not a Magnetic Tile file name (MT_<class>/Imgs/exp<L>_num_<N>.jpg)")
    parsed[m[1]].append((int(m[3]), int(m[2]), i))
  tile = {}
  for cls, items in parsed.items():
    prev = None
    for num, light, i in sorted(items):
      if prev is None or light <= prev[1] or num - prev[0] > MTD_MAX_STEP:
        name = f"{cls}/{num}"
      tile[i] = name
      prev = (num, light)
  return tile


def read_magnetic_tile(root: str, size: int, split: str = "differnet", split_seed: int = 0) -> Dataset:
  """Magnetic Tile Defects. `split='differnet'` (the paper's): the 761 MT_Free images DifferNet lists train, the
  other MT_Free images and every defect test. `'by_tile'`: as many good test images, drawn as whole tiles with
  `split_seed`, so that no tile is photographed on both sides; the Dataset then carries the tiles (`groups`), and
  the noise protocol draws validation and injected images by tile too."""
  _require_dir(root, "the Magnetic Tile Defects root holding MT_Free/Imgs, MT_Blowhole/Imgs, ...")
  if split not in MTD_SPLITS:
    raise DataError(f"data.mtd_split={split!r}: expected one of {MTD_SPLITS}")
  list_path = os.path.join(root, MTD_TRAIN_LIST)
  if not os.path.isfile(list_path):
    raise DataError(f"{list_path}: DifferNet's train list not found; it names the MT_Free images to train on")
  with open(list_path) as f:
    train_names = {line.strip() for line in f if line.strip()}
  free = [p for p in _mtd_images(root, "MT_Free")]
  train_paths = [p for p in free if os.path.basename(p) in train_names]
  missing = train_names - {os.path.basename(p) for p in train_paths}
  if missing:
    raise DataError(f"{list_path}: {len(missing)} listed images are not in MT_Free/Imgs, e.g. {sorted(missing)[0]}")
  test_paths = [p for p in free if os.path.basename(p) not in train_names]
  if split == "by_tile":
    tiles = mtd_tiles(free)
    in_test = set(draw_whole_groups([tiles[p] for p in free], len(test_paths), np.random.default_rng(split_seed)))
    train_paths = [p for k, p in enumerate(free) if k not in in_test]
    test_paths = [p for k, p in enumerate(free) if k in in_test]
  test_labels = [0] * len(test_paths)
  mask_paths: list[str | None] = [None] * len(test_paths)
  for defect in MTD_DEFECTS:
    for p in _mtd_images(root, defect):
      test_paths.append(p)
      test_labels.append(1)
      mask_paths.append(os.path.splitext(p)[0] + ".png")
  train = _image_set(root, train_paths, [0] * len(train_paths), size)
  test = _image_set(root, test_paths, test_labels, size, mask_paths)
  groups = mtd_tiles(train.ids + test.ids) if split == "by_tile" else None
  return Dataset("magnetic_tile", "magnetic_tile", train, test, groups)


def _mtd_images(root: str, cls: str) -> list[str]:
  folder = os.path.join(root, cls, "Imgs")
  _require_dir(folder, f"{cls}/Imgs with .jpg images and .png masks")
  paths = [p for p in list_images(folder) if p.lower().endswith(".jpg")]
  if not paths:
    raise DataError(f"{folder}: no .jpg images found")
  return paths


ELPV_LABEL_CHOICES = ("drop", "good", "defective")


def read_elpv(size: int, cell_type: str = "all", one_third: str = "drop", two_thirds: str = "drop",
              test_fraction: float = 0.5, seed: int = 0) -> Dataset:
  """elpv solar cells from the `elpv-dataset` package; probability 0 good, 1 defective.

  What 1/3 and 2/3 become is a choice ('drop', 'good', 'defective'). The good cells are split with `seed`:
  `test_fraction` of them go to the test set with every defective cell, the rest are the train set.
  """
  from elpv_dataset.utils import load_dataset  # imported here: it reads 2,624 images on import of its data
  if cell_type not in ("all", "mono", "poly"):
    raise DataError(f"data.cell_type={cell_type!r}: expected 'all', 'mono' or 'poly'")
  for flag, value in (("data.elpv_one_third", one_third), ("data.elpv_two_thirds", two_thirds)):
    if value not in ELPV_LABEL_CHOICES:
      raise DataError(f"{flag}={value!r}: expected one of {ELPV_LABEL_CHOICES}")
  if not 0.0 < test_fraction < 1.0:
    raise DataError(f"data.test_fraction={test_fraction}: expected a value strictly between 0 and 1")
  images, probs, types = load_dataset()
  label = np.full(len(probs), -1, np.int32)
  label[np.isclose(probs, 0.0)] = 0
  label[np.isclose(probs, 1.0)] = 1
  for p, choice in ((1 / 3, one_third), (2 / 3, two_thirds)):
    if choice != "drop":
      label[np.isclose(probs, p)] = 0 if choice == "good" else 1
  keep = label >= 0
  if cell_type != "all":
    keep &= types == cell_type
  index = np.flatnonzero(keep)
  good, bad = index[label[index] == 0], index[label[index] == 1]
  rng = np.random.default_rng(seed)
  good = rng.permutation(good)
  n_test_good = int(round(test_fraction * len(good)))
  test_index = np.concatenate([np.sort(good[:n_test_good]), bad])
  train_index = np.sort(good[n_test_good:])

  def subset(idx):
    from PIL import Image
    arr = np.stack([np.asarray(Image.fromarray(images[i]).resize((size, size), Image.BILINEAR)) for i in idx])
    arr = np.repeat(arr[..., None], 3, axis=-1)
    return ImageSet(arr, label[idx], tuple(f"elpv/{types[i]}/{i:04d}" for i in idx))

  return Dataset("elpv", cell_type, subset(train_index), subset(test_index))


def folder_objects(ids, pattern: str, source: str = "data.object_pattern") -> dict[str, str]:
  """Image id -> the object (part) it shows: the first group of the regular expression `pattern` searched in the
  file name, or its whole match where it has no group. For parts photographed more than once (several lights or
  sides), e.g. `part0042_light3.png` with `^(part\\d+)_`. `source` names where the pattern came from, for errors."""
  try:
    rx = re.compile(pattern)
  except re.error as e:
    raise DataError(f"{source}='{pattern}' is not a regular expression ({e})") from None
  objects = {}
  for i in ids:
    m = rx.search(os.path.basename(i))
    objects[i] = m and (m[1] if rx.groups else m[0])
    if not objects[i]:
      raise DataError(f"{i}: {source}='{pattern}' finds no object in this file name; every image needs "
                      "one (e.g. '^(part\\d+)_' for part0042_light3.png), or leave the pattern empty")
  return objects


def read_folder(good_dir: str, defective_dir: str | None, size: int, test_fraction: float = 0.5,
                seed: int = 0, object_pattern: str = "") -> Dataset:
  """A user's plain folders: good images (split into train/test with `seed`) and optionally defective images.

  Without a defective folder there is nothing to test against, so nothing is held out (clean mode: the whole
  folder is cleaned and the detector trained on what is kept), whatever `test_fraction` says.

  `object_pattern` (`folder_objects`) names the object each image shows: the good images are then split by whole
  objects, the Dataset carries them (`groups`: validation is drawn by object, and patch_iqr scores an image
  against other objects only), and an object may not have images in both folders."""
  if not defective_dir:
    test_fraction = 0.0
  good_paths = list_images(good_dir)
  if len(good_paths) < 2:
    raise DataError(f"{good_dir}: found {len(good_paths)} good images; need at least 2 (one to train, one to test)")
  if defective_dir and os.path.realpath(defective_dir) == os.path.realpath(good_dir):
    raise DataError(f"{defective_dir}: the defective folder is the good folder; put defective images in their own "
                    "folder")
  bad_paths = list_images(defective_dir) if defective_dir else []
  if not 0.0 <= test_fraction < 1.0:
    raise DataError(f"data.test_fraction={test_fraction}: expected a value in [0, 1)")
  # abspath: commonpath refuses a mix of absolute and relative folders
  root = os.path.commonpath([os.path.abspath(good_dir)] + ([os.path.abspath(defective_dir)] if defective_dir else []))
  n_test = min(int(round(test_fraction * len(good_paths))), len(good_paths) - 1)  # keep a training image
  rng = np.random.default_rng(seed)
  objects = None
  if object_pattern:
    ids = [os.path.relpath(p, root) for p in good_paths + bad_paths]
    objects = folder_objects(ids, object_pattern)
    good_objects = [objects[i] for i in ids[:len(good_paths)]]
    both = sorted(set(good_objects) & {objects[i] for i in ids[len(good_paths):]})
    if both:
      raise DataError(f"data.object_pattern='{object_pattern}': {len(both)} objects have images in both the good and "
                      f"the defective folder (e.g. {both[0]!r}); put all of an object's images in one folder")
    in_test = draw_whole_groups(good_objects, n_test, rng) if n_test else np.zeros(0, np.int64)
    if len(in_test) == len(good_paths):
      raise DataError(f"{good_dir}: the {len(set(good_objects))} objects (data.object_pattern) leave no good object to "
                      "train on after the test share; add objects or lower data.test_fraction")
  else:
    in_test = rng.permutation(len(good_paths))[:n_test]
  test_good = sorted(good_paths[i] for i in in_test)
  train_good = sorted(set(good_paths) - set(test_good))
  train = _image_set(root, train_good, [0] * len(train_good), size)
  test = _image_set(root, test_good + bad_paths, [0] * len(test_good) + [1] * len(bad_paths), size)
  return Dataset("folder", os.path.basename(os.path.normpath(good_dir)), train, test, objects)


def read(data, size: int, prepared_dir: str = "") -> Dataset:
  """Reads the dataset a config's `data` section names, at `size` x `size` (the backbone's input size).

  MVTec-AD and KSDD2 go through TFDS when a folder for prepared datasets is known (`data.tfds_dir`, else
  `prepared_dir`): the first read prepares them there as array_record at `size` (decoding and resizing every
  image once), later reads take the arrays back with `tfds.data_source` (`tfds_builders.read_prepared`). With
  neither set, and for the other datasets, the files are decoded here. Both ways give the same arrays.
  """
  name = data.name
  tfds_dir = data.get("tfds_dir", "") or prepared_dir
  if name in ("mvtec", "ksdd2") and tfds_dir:
    from maml_iqr.data import tfds_builders  # imported here: tfds is slow to import and imports this module
    return tfds_builders.read_prepared(name, data.root, data.category, size, os.path.expanduser(tfds_dir))
  if name == "mvtec":
    return read_mvtec(data.root, data.category, size)
  if name == "ksdd2":
    return read_ksdd2(data.root, size)
  if name == "magnetic_tile":
    return read_magnetic_tile(data.root, size, data.get("mtd_split", "differnet"), data.split_seed)
  if name == "elpv":
    return read_elpv(size, data.category, data.elpv_one_third, data.elpv_two_thirds, data.test_fraction,
                     data.split_seed)
  if name == "folder":
    return read_folder(data.root, data.defective_root or None, size, data.test_fraction, data.split_seed,
                       data.get("object_pattern", ""))
  raise DataError(f"data.name={name!r}: expected one of mvtec, ksdd2, magnetic_tile, elpv, folder")


def read_config(config, size: int) -> Dataset:
  """`read` as every run and benchmark reads a config's data: MVTec-AD and KSDD2 prepared through TFDS under
  `<config.cache_dir>/tfds` (decoded from the files where the config names no cache folder)."""
  return read(config.data, size, prepared_dir=os.path.join(config.cache_dir, "tfds") if config.cache_dir else "")
