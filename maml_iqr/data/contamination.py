"""The noise protocol: move defective test images into the training set, reproducibly.

Two definitions are in use (PAPER_NOTES.md): `defect_share` (ratio of the defective test images moved into
training; feasible up to 1.0 on every class) and `train_share` (anomalies = int(ratio * n_good_train), as
SoftPatch; capped by what exists). With `overlap=False` moved images leave the test set (SoftPatch's default);
with `overlap=True` they stay in it too (InReaCh).

A labelled validation set, used only by refinement's stopping rule, is carved from the dataset's test set
*before* injection (a stratified `val_fraction` of its good and its defective images), so its labels never
touch the test set and the injected images never come from it.

Where one object has several images (`Dataset.groups`: Magnetic Tile with `data.mtd_split=by_tile`, six
lightings per tile), the validation set and the injected images are drawn as whole objects, so that no object is
on two sides of the split; the counts asked for are then reached by whole objects and may be exceeded by part of
one.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from maml_iqr.common import log
from maml_iqr.data.images import DataError, Dataset, ImageSet, draw_whole_groups

MODES = ("defect_share", "train_share")
SHORTAGE = ("fail", "cap")


@dataclasses.dataclass(frozen=True)
class NoisySplit:
  """Train (good + injected, labels say which: hidden from the method), validation and test sets."""
  train: ImageSet
  val: ImageSet
  test: ImageSet
  injected_ids: tuple[str, ...]
  n_good_train: int
  ratio: float
  mode: str
  overlap: bool
  n_dropped_train_defects: int = 0

  @property
  def n_injected(self) -> int:
    return len(self.injected_ids)

  @property
  def realised(self) -> float:
    """Anomalies as a share of the training set actually built."""
    return self.n_injected / max(len(self.train), 1)

  def summary(self) -> dict:
    return {"ratio": self.ratio, "mode": self.mode, "overlap": self.overlap, "n_injected": self.n_injected,
            "n_good_train": self.n_good_train, "n_train": len(self.train), "realised": round(self.realised, 6),
            "n_val": len(self.val), "n_val_defective": self.val.n_defective, "n_test": len(self.test),
            "n_test_defective": self.test.n_defective,
            "n_dropped_train_defects": self.n_dropped_train_defects}


def _draw(idx: np.ndarray, n: int, rng: np.random.Generator, groups: list[str] | None) -> np.ndarray:
  """n of the indices `idx`, at random; with `groups` (one per index) whole groups until at least n."""
  if groups is None:
    return rng.choice(idx, size=n, replace=False)
  return idx[draw_whole_groups([groups[i] for i in idx], n, rng)]


def _stratified_split(labels: np.ndarray, fraction: float, rng: np.random.Generator,
                      groups: list[str] | None = None) -> np.ndarray:
  """Boolean mask picking round(fraction * n) of each class (at least one of each when fraction > 0; with
  `groups`, whole groups until at least that many)."""
  pick = np.zeros(len(labels), bool)
  if fraction <= 0:
    return pick
  if fraction >= 1:
    return np.ones(len(labels), bool)
  for cls in (0, 1):
    idx = np.flatnonzero(labels == cls)
    n = min(len(idx) - 1, max(1, int(round(fraction * len(idx))))) if len(idx) > 1 else 0
    pick[_draw(idx, n, rng, groups)] = True
  return pick


def contaminate(dataset: Dataset, ratio: float, mode: str = "defect_share", overlap: bool = False,
                seed: int = 0, on_shortage: str = "fail", val_fraction: float = 0.2) -> NoisySplit:
  """Builds the noisy training set, the validation set and the test set for one seed."""
  if not 0.0 <= ratio <= 1.0:
    raise DataError(f"noise.ratio={ratio}: expected a value in [0, 1]")
  if mode not in MODES:
    raise DataError(f"noise.mode={mode!r}: expected one of {MODES}")
  if on_shortage not in SHORTAGE:
    raise DataError(f"noise.on_shortage={on_shortage!r}: expected one of {SHORTAGE}")
  if not 0.0 <= val_fraction <= 1.0:
    raise DataError(f"noise.val_fraction={val_fraction}: expected a value in [0, 1]")
  rng = np.random.default_rng(seed)

  good_train = dataset.train.take(np.flatnonzero(dataset.train.labels == 0))
  n_dropped = len(dataset.train) - len(good_train)  # KSDD2 ships defective training images: not "good" data
  if n_dropped:
    log(f"dropped {n_dropped} defective images from {dataset.name}'s own train set")

  group_of = (lambda part: None) if dataset.groups is None else (lambda part: [dataset.groups[i] for i in part.ids])
  in_val = _stratified_split(dataset.test.labels, val_fraction, rng, group_of(dataset.test))
  val = dataset.test.take(np.flatnonzero(in_val))
  pool = dataset.test.take(np.flatnonzero(~in_val))
  defect_idx = np.flatnonzero(pool.labels == 1)

  if mode == "defect_share":
    wanted = int(round(ratio * len(defect_idx)))
  else:
    wanted = int(ratio * len(good_train))
  if wanted > len(defect_idx):
    msg = (f"noise.ratio={ratio} ({mode}) asks for {wanted} defective images but only {len(defect_idx)} exist "
           f"outside the validation set")
    if on_shortage == "fail":
      raise DataError(msg + "; lower noise.ratio, lower noise.val_fraction, or set noise.on_shortage=cap")
    log(f"WARNING: {msg}; capping at {len(defect_idx)}")
    wanted = len(defect_idx)

  injected = np.sort(_draw(defect_idx, wanted, rng, group_of(pool))) if wanted else np.zeros(0, np.int64)
  moved = pool.take(injected)
  masks_ok = good_train.masks is not None and moved.masks is not None
  train = ImageSet.concat([good_train if masks_ok else dataclasses.replace(good_train, masks=None),
                           moved if masks_ok else dataclasses.replace(moved, masks=None)])
  test = pool if overlap else pool.take(np.setdiff1d(np.arange(len(pool)), injected))
  return NoisySplit(train=train, val=val, test=test, injected_ids=moved.ids, n_good_train=len(good_train),
                    ratio=ratio, mode=mode, overlap=overlap, n_dropped_train_defects=n_dropped)
