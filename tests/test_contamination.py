import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from maml_iqr.data.contamination import contaminate
from maml_iqr.data.images import DataError, Dataset, ImageSet


def _dataset(n_train, n_test_good, n_test_bad, n_train_bad=0):
  def image_set(prefix, labels):
    n = len(labels)
    images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    return ImageSet(images, np.asarray(labels, np.int32), tuple(f"{prefix}{i}" for i in range(n)),
                    np.zeros((n, 2, 2), bool))
  train = image_set("train/", [0] * n_train + [1] * n_train_bad)
  test = image_set("test/", [0] * n_test_good + [1] * n_test_bad)
  return Dataset("synthetic", "c", train, test)


@settings(max_examples=60, deadline=None)
@given(n_train=st.integers(2, 40), n_good=st.integers(2, 20), n_bad=st.integers(2, 30),
       ratio=st.floats(0, 1), seed=st.integers(0, 2**31 - 1), val=st.sampled_from([0.0, 0.2]))
def test_defect_share_counts_disjoint_and_seeded(n_train, n_good, n_bad, ratio, seed, val):
  ds = _dataset(n_train, n_good, n_bad)
  split = contaminate(ds, ratio, "defect_share", overlap=False, seed=seed, val_fraction=val)
  n_pool_bad = n_bad - split.val.n_defective
  assert split.n_injected == int(round(ratio * n_pool_bad))
  assert split.train.n_defective == split.n_injected == len(split.train) - n_train
  assert set(split.injected_ids) == {i for i, l in zip(split.train.ids, split.train.labels) if l == 1}
  # no overlap: train, val and test are disjoint and together are the dataset
  assert not set(split.train.ids) & set(split.test.ids)
  assert not set(split.val.ids) & (set(split.test.ids) | set(split.train.ids))
  assert len(split.train) + len(split.val) + len(split.test) == n_train + n_good + n_bad
  again = contaminate(ds, ratio, "defect_share", overlap=False, seed=seed, val_fraction=val)
  assert again.train.ids == split.train.ids and again.test.ids == split.test.ids and again.val.ids == split.val.ids


@settings(max_examples=40, deadline=None)
@given(n_train=st.integers(2, 40), n_bad=st.integers(2, 30), ratio=st.floats(0, 1), seed=st.integers(0, 1000))
def test_train_share_overlap_caps_with_warning(n_train, n_bad, ratio, seed):
  ds = _dataset(n_train, 5, n_bad)
  split = contaminate(ds, ratio, "train_share", overlap=True, seed=seed, on_shortage="cap", val_fraction=0.0)
  assert split.n_injected == min(int(ratio * n_train), n_bad)
  assert set(split.injected_ids) <= set(split.test.ids)  # overlap: injected images stay in the test set
  assert len(split.test) == 5 + n_bad
  assert split.realised == pytest.approx(split.n_injected / len(split.train))


def test_shortage_fails_with_count():
  ds = _dataset(100, 5, 10)
  with pytest.raises(DataError, match="only 10 exist"):
    contaminate(ds, 0.5, "train_share", val_fraction=0.0)


def test_different_seeds_differ():
  ds = _dataset(20, 20, 40)
  a = contaminate(ds, 0.5, seed=0)
  b = contaminate(ds, 0.5, seed=1)
  assert a.injected_ids != b.injected_ids


def test_train_defects_are_dropped():
  ds = _dataset(10, 5, 10, n_train_bad=3)
  split = contaminate(ds, 0.0, val_fraction=0.0)
  assert split.n_dropped_train_defects == 3 and split.n_good_train == 10 and len(split.train) == 10


@pytest.mark.parametrize("kwargs, flag", [({"ratio": 1.5}, "noise.ratio"), ({"ratio": -0.1}, "noise.ratio"),
                                          ({"ratio": 0.1, "mode": "half"}, "noise.mode"),
                                          ({"ratio": 0.1, "on_shortage": "x"}, "noise.on_shortage"),
                                          ({"ratio": 0.1, "val_fraction": 1.5}, "noise.val_fraction")])
def test_out_of_range_values_name_the_flag(kwargs, flag):
  with pytest.raises(DataError, match=flag):
    contaminate(_dataset(5, 5, 5), **kwargs)


def test_val_fraction_one_makes_the_whole_held_out_set_validation():
  ds = _dataset(10, 6, 4)
  split = contaminate(ds, 0.0, val_fraction=1.0)
  assert len(split.test) == 0 and len(split.val) == len(ds.test)
