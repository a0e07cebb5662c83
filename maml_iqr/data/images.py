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

  def summary(self) -> str:
    return (f"{self.name}/{self.category}: train {len(self.train)} ({self.train.n_good} good, "
            f"{self.train.n_defective} defective), test {len(self.test)} ({self.test.n_good} good, "
            f"{self.test.n_defective} defective), image size {self.train.images.shape[1]}")


def list_images(folder: str) -> list[str]:
  """Sorted image files in `folder`, skipping hidden files (.DS_Store), thumbnails and masks."""
  if not os.path.isdir(folder):
    raise DataError(f"{folder}: folder not found")
  names = []
  for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name)
    if name.startswith(".") or name.lower() in ("thumbs.db", "desktop.ini") or not os.path.isfile(path):
      continue
    if name.lower().endswith(IMAGE_EXTENSIONS):
      names.append(path)
  return names


def _open(path: str) -> Image.Image:
  if not os.path.isfile(path):
    raise DataError(f"{path}: image file not found")
  if os.path.getsize(path) == 0:
    raise DataError(f"{path}: image file is empty (0 bytes); delete it or replace it with a valid image")
  try:
    with Image.open(path) as im:
      im.load()  # decode now so truncation shows here, not later
      return ImageOps.exif_transpose(im)
  except Exception as e:  # PIL raises many types for broken files
    raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e}); the file is corrupt, truncated or "
                    "not an image: delete or replace it") from None


def _to_rgb(im: Image.Image) -> Image.Image:
  """Any PIL mode (1, L, P, RGBA, I;16, I, F, CMYK) to 8-bit RGB; 16-bit data is scaled by its own range."""
  if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
    a = np.asarray(im, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    a = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo) * 255.0
    im = Image.fromarray(np.round(a).astype(np.uint8), mode="L")
  if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
    im = im.convert("RGBA")
    background = Image.new("RGBA", im.size, (0, 0, 0, 255))
    im = Image.alpha_composite(background, im)
  return im.convert("RGB")


def load_image(path: str, size: int) -> tuple[np.ndarray, tuple[int, int]]:
  """Reads `path` as (size, size, 3) uint8 RGB (plain resize, aspect not kept, as DifferNet) and its original (w, h)."""
  im = _open(path)
  original = im.size
  im = _to_rgb(im).resize((size, size), Image.BILINEAR)
  return np.asarray(im, dtype=np.uint8), original


def load_mask(path: str, size: int, image_size: tuple[int, int]) -> np.ndarray:
  """Reads a defect mask as (size, size) bool; it must have the size of its image."""
  im = _open(path)
  if im.size != image_size:
    raise DataError(f"{path}: mask is {im.size[0]}x{im.size[1]} but its image is {image_size[0]}x{image_size[1]}; "
                    "a mask must have the size of its image")
  a = np.asarray(im.convert("L").resize((size, size), Image.NEAREST))
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
