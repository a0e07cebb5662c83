"""Image sets and robust image/mask loading shared by every reader.

Every reader returns a `Dataset` of two `ImageSet`s holding uint8 RGB arrays of one size, so that the rest of
the pipeline (transforms, backbones, contamination) never sees a file again. Loading errors are `DataError`s
that name the file and say what was expected.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from maml_iqr.common import log

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DataError(ValueError):
  """Bad input data: the message names the path and what was expected."""


@dataclasses.dataclass(frozen=True)
class ImageSet:
  """Images (N, S, S, 3) uint8, labels (N,) int32 (0 good, 1 defective), stable ids, optional masks (N, S, S) bool."""
  images: np.ndarray
  labels: np.ndarray
  ids: tuple[str, ...]
  masks: np.ndarray | None = None

  def __post_init__(self):
    n = len(self.ids)
    if self.images.shape[0] != n or self.labels.shape[0] != n:
      raise ValueError(f"ImageSet sizes differ: {self.images.shape[0]} images, {self.labels.shape[0]} labels, {n} ids")
    if len(set(self.ids)) != n:
      raise ValueError("ImageSet ids must be unique")
    if self.masks is not None and self.masks.shape[0] != n:
      raise ValueError(f"ImageSet has {self.masks.shape[0]} masks for {n} images")

  def __len__(self) -> int:
    return len(self.ids)

  def take(self, index: Sequence[int] | np.ndarray) -> "ImageSet":
    index = np.asarray(index, dtype=np.int64)
    return ImageSet(self.images[index], self.labels[index], tuple(self.ids[i] for i in index),
                    None if self.masks is None else self.masks[index])

  @staticmethod
  def concat(parts: Sequence["ImageSet"]) -> "ImageSet":
    parts = [p for p in parts if len(p)]
    if not parts:
      raise ValueError("nothing to concatenate")
    with_masks = all(p.masks is not None for p in parts)
    return ImageSet(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
                    tuple(i for p in parts for i in p.ids),
                    np.concatenate([p.masks for p in parts]) if with_masks else None)

  @property
  def n_good(self) -> int:
    return int((self.labels == 0).sum())

  @property
  def n_defective(self) -> int:
    return int((self.labels == 1).sum())


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A reader's output: the dataset's own train set (all good) and test set (good + defective)."""
  name: str
  category: str
  train: ImageSet
  test: ImageSet
  groups: dict[str, str] | None = None  # image id -> the object it shows, where one object has several images

  def summary(self) -> str:
    return (f"{self.name}/{self.category}: train {len(self.train)} ({self.train.n_good} good, "
            f"{self.train.n_defective} defective), test {len(self.test)} ({self.test.n_good} good, "
            f"{self.test.n_defective} defective), image size {self.train.images.shape[1]}")


def draw_whole_groups(groups: Sequence[str], n: int, rng: np.random.Generator) -> np.ndarray:
  """Sorted indices of `groups` (one name per image): whole groups in random order until at least n images, so
  that no group is split between what is drawn and what is not."""
  picked: list[int] = []
  for g in rng.permutation(sorted(set(groups))):
    if len(picked) >= n:
      break
    picked += [i for i, name in enumerate(groups) if name == g]
  return np.asarray(sorted(picked), np.int64)


def list_images(folder: str) -> list[str]:
  """Sorted image files in `folder`, skipping hidden files (.DS_Store), thumbnails and masks.

  Subfolders are not read (nor symlinks to folders), and a symlink that leads nowhere cannot be; a symlink to
  an image file is read wherever it points. Whatever is skipped besides hidden files is said in one warning
  line with the count and the first names, so that images left in a subfolder are not silently missing.
  """
  if not os.path.isdir(folder):
    raise DataError(f"{folder}: folder not found")
  names = []
  skipped: dict[str, list[str]] = {"subfolders (not read: move their images up or point the config at them)": [],
                                   "broken symlinks or special files": [], "files that are not images": []}
  for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name)
    if name.startswith(".") or name.lower() in ("thumbs.db", "desktop.ini"):
      continue
    if os.path.isdir(path):
      skipped["subfolders (not read: move their images up or point the config at them)"].append(name)
    elif not os.path.isfile(path):
      skipped["broken symlinks or special files"].append(name)
    elif name.lower().endswith(IMAGE_EXTENSIONS):
      names.append(path)
    else:
      skipped["files that are not images"].append(name)
  said = [f"{len(v)} {k} ({', '.join(v[:3])}{', ...' if len(v) > 3 else ''})" for k, v in skipped.items() if v]
  if said:
    log(f"WARNING: {folder}: read {len(names)} images; skipped {'; '.join(said)}")
  return names


def _open(path: str) -> Image.Image:
  """Opens and decodes `path` upright; every failure becomes one DataError naming the file and the remedy."""
  if not os.path.isfile(path):
    raise DataError(f"{path}: image file not found")
  if os.path.getsize(path) == 0:
    raise DataError(f"{path}: image file is empty (0 bytes); delete it or replace it with a valid image")
  try:
    with Image.open(path) as im:
      im.load()  # decode now so truncation shows here, not later
      try:
        return ImageOps.exif_transpose(im)
      except Exception:  # broken EXIF, intact pixels: keep them as stored rather than reject the image
        return im.copy()
  except Image.DecompressionBombError as e:
    raise DataError(f"{path}: image is too large to load safely ({e}); downscale it (every image is resized to "
                    "the backbone's input size anyway) or remove it") from None
  except PermissionError:
    raise DataError(f"{path}: permission denied; make the file readable or remove it") from None
  except MemoryError:
    raise DataError(f"{path}: not enough memory to decode this image; downscale it or remove it") from None
  except Exception as e:  # PIL raises many types for broken files (OSError, SyntaxError, struct.error, ...)
    raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e}); the file is corrupt, truncated or "
                    "not an image: delete or replace it") from None


def _scale_to_8bit(im: Image.Image) -> Image.Image:
  """High bit-depth (I;16, I, F) to L by a fixed range, not each image's own, so that images stay comparable.

  16-bit modes map 0..65535 to 0..255. I and F data use the smallest of [0, 1] (F only), [0, 255], [0, 65535]
  that holds it; only data outside all of them is stretched by its own range. NaN and inf read as 0.
  """
  a = np.asarray(im, dtype=np.float64)
  a = np.where(np.isfinite(a), a, 0.0)
  lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
  if im.mode.startswith("I;16"):
    lo, top = 0.0, 65535.0
  elif im.mode == "F" and lo >= 0.0 and hi <= 1.0:
    lo, top = 0.0, 1.0
  elif lo >= 0.0 and hi <= 255.0:
    lo, top = 0.0, 255.0
  elif lo >= 0.0 and hi <= 65535.0:
    lo, top = 0.0, 65535.0
  else:
    top = hi
  a = np.zeros_like(a) if top <= lo else (a - lo) / (top - lo) * 255.0
  return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), mode="L")


def _to_rgb(im: Image.Image) -> Image.Image:
  """Any PIL mode (1, L, P, RGBA, I;16, I, F, CMYK) to 8-bit RGB; transparency is composited on black."""
  if im.mode.startswith("I;16") or im.mode in ("I", "F"):
    im = _scale_to_8bit(im)
  if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
    im = im.convert("RGBA")
    background = Image.new("RGBA", im.size, (0, 0, 0, 255))
    im = Image.alpha_composite(background, im)
  return im.convert("RGB")


def load_image(path: str, size: int) -> tuple[np.ndarray, tuple[int, int]]:
  """Reads `path` as (size, size, 3) uint8 RGB (plain resize, aspect not kept, as DifferNet) and its original (w, h)."""
  im = _open(path)
  original = im.size
  try:
    im = _to_rgb(im).resize((size, size), Image.BILINEAR)
  except Exception as e:  # an exotic mode (e.g. a TIFF with 2 float channels) PIL cannot turn into RGB
    raise DataError(f"{path}: cannot convert image mode {im.mode!r} to RGB ({type(e).__name__}: {e}); save it "
                    "as 8-bit grey or RGB PNG") from None
  return np.asarray(im, dtype=np.uint8), original


def load_mask(path: str, size: int, image_size: tuple[int, int]) -> np.ndarray:
  """Reads a defect mask as (size, size) bool; it must have the size of its image."""
  im = _open(path)
  if im.size != image_size:
    raise DataError(f"{path}: mask is {im.size[0]}x{im.size[1]} but its image is {image_size[0]}x{image_size[1]}; "
                    "a mask must have the size of its image")
  try:
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):  # any non-zero value is a defect, however small
      a = np.asarray(im, dtype=np.float64)
      im = Image.fromarray(((np.isfinite(a) & (a != 0)) * 255).astype(np.uint8), mode="L")
    a = np.asarray(im.convert("L").resize((size, size), Image.NEAREST))
  except Exception as e:
    raise DataError(f"{path}: cannot convert mask mode {im.mode!r} to grey ({type(e).__name__}: {e}); save it "
                    "as an 8-bit grey PNG (0 good, non-zero defect)") from None
  return a > 0


def load_images(paths: Sequence[str], size: int, mask_paths: Sequence[str | None] | None = None,
                ) -> tuple[np.ndarray, np.ndarray | None]:
  """Loads images (and masks where a path is given; None means an all-zero mask) into arrays."""
  images = np.zeros((len(paths), size, size, 3), np.uint8)
  masks = None if mask_paths is None else np.zeros((len(paths), size, size), bool)
  for i, path in enumerate(paths):
    images[i], original = load_image(path, size)
    if mask_paths is not None and mask_paths[i] is not None:
      masks[i] = load_mask(mask_paths[i], size, original)
  return images, masks
