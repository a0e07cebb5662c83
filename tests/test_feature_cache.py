"""The feature cache is keyed by image content and settings: a changed, deleted or added image can never be given
another image's features, and a path spelled differently reuses it."""
import threading

import numpy as np
import pytest
from PIL import Image

from configs import folder as folder_config
from maml_iqr import feature_cache
from maml_iqr import features as features_lib
from maml_iqr.data import readers
from maml_iqr.models import backbones
from tests.conftest import write_synthetic_folders


@pytest.fixture(scope="module")
def backbone():
  bb = backbones.get_backbone("efficientnet_lite0")
  return bb, bb.load()


def _features(tmp_path, good_dir, backbone, monkeypatch, **overrides):
  """Features of a folder dataset's train + test images, and how many images the backbone was run on."""
  c = folder_config.get_config("quick")
  c.data.root, c.cache_dir = str(good_dir), str(tmp_path / "cache")
  for k, v in overrides.items():
    section, name = k.split(".")
    c[section][name] = v
  bb, bparams = backbone
  ds = readers.read(c.data, bb.input_size)
  computed = []
  original = features_lib.extract
  monkeypatch.setattr(features_lib, "extract", lambda b, p, images, *a, **k: (computed.append(len(images)),
                                                                              original(b, p, images, *a, **k))[1])
  ids = ds.train.ids + ds.test.ids
  out = feature_cache.features(c, bb, bparams, np.concatenate([ds.train.images, ds.test.images]), ds.name)
  monkeypatch.setattr(features_lib, "extract", original)
  return dict(zip(ids, out["eval"])), dict(zip(ids, out["train"])), computed


def test_changed_deleted_and_added_images_never_get_other_images_features(tmp_path, backbone, monkeypatch):
  root = write_synthetic_folders(tmp_path / "data", n_good=6, n_bad=2, size=32)
  good = root / "good"
  first, first_train, computed = _features(tmp_path, good, backbone, monkeypatch)
  assert computed == [6, 6]  # the training and the evaluation views of all 6 images
  again, _, computed = _features(tmp_path, str(good) + "/", backbone, monkeypatch)  # trailing slash: same cache
  assert computed == []
  assert all(np.array_equal(again[i], first[i]) for i in first)

  # replace an image by another under the same name: its features are recomputed, not reused
  victim = sorted(first)[2]
  Image.open(root / "bad" / "00.png").save(good / victim.split("/")[-1])
  changed, _, computed = _features(tmp_path, good, backbone, monkeypatch)
  assert computed == [1, 1]
  assert not np.allclose(changed[victim], first[victim])
  assert all(np.array_equal(changed[i], first[i]) for i in first if i != victim)

  # delete one image: every other image keeps exactly its own features (no shift by position)
  gone = sorted(first)[0]
  (good / gone.split("/")[-1]).unlink()
  fewer, fewer_train, computed = _features(tmp_path, good, backbone, monkeypatch)
  assert computed == [] and gone not in fewer
  assert all(np.array_equal(fewer[i], changed[i]) for i in fewer)
  assert all(np.array_equal(fewer_train[i], first_train[i]) for i in fewer if i != victim)

  # add two images: only they are computed
  for k in (1, 0):
    Image.open(root / "bad" / f"0{k}.png").save(good / f"new_{k}.png")
  more, _, computed = _features(tmp_path, good, backbone, monkeypatch)
  assert computed == [1, 1]  # 01.png is new content; 00.png's pixels are already cached (the replaced image)
  assert all(np.array_equal(more[i], fewer[i]) for i in fewer)


def test_other_settings_use_another_cache_and_damage_is_recomputed(tmp_path, backbone, monkeypatch):
  root = write_synthetic_folders(tmp_path / "data", n_good=4, n_bad=1, size=32)
  _, _, computed = _features(tmp_path, root / "good", backbone, monkeypatch)
  assert computed == [4, 4]
  _, _, computed = _features(tmp_path, root / "good", backbone, monkeypatch, **{"train.max_angle": 90.0})
  assert computed == [4, 4]  # other views: other features, another file
  _, _, computed = _features(tmp_path, root / "good", backbone, monkeypatch, **{"score.view_offset": 0.0})
  assert computed == [4, 4]  # other evaluation views (DifferNet's aligned grid)
  for path in (tmp_path / "cache").glob("*.npz"):
    path.write_bytes(path.read_bytes()[:100])  # truncated
  _, _, computed = _features(tmp_path, root / "good", backbone, monkeypatch)
  assert computed == [4, 4]


def test_training_views_depend_on_the_image_not_on_the_dataset():
  spec = {"view_seed": 0, "n_cached_views": 3, "max_angle": 180.0, "brightness": 0.0, "contrast": 0.0,
          "saturation": 0.0}
  a, b, c = (feature_cache.image_digest(np.full((4, 4, 3), v, np.uint8)) for v in (1, 2, 3))
  np.testing.assert_array_equal(feature_cache.view_params(spec, [a, b, c])[1], feature_cache.view_params(spec, [b])[0])
  assert not np.allclose(feature_cache.view_params(spec, [a])[0], feature_cache.view_params(spec, [b])[0])


def test_images_cached_under_another_dataset_are_borrowed_not_recomputed(tmp_path, backbone, monkeypatch):
  """A user's folder made of images another dataset's cache already holds (same pixels, same settings): their
  features are taken from that cache, identical, and only the new images are computed."""
  root = write_synthetic_folders(tmp_path / "data", n_good=5, n_bad=2, size=32)
  first, _, computed = _features(tmp_path, root / "good", backbone, monkeypatch)
  assert computed == [5, 5]
  for path in (tmp_path / "cache").glob("features_*.npz"):  # as if the good images were another dataset's
    path.rename(path.with_name(path.name.replace("features_folder_", "features_benchmark_")))
  mixed = tmp_path / "mixed"
  mixed.mkdir()
  for p in sorted((root / "good").iterdir())[:3] + sorted((root / "bad").iterdir())[:1]:
    (mixed / p.name.replace(".png", f"_{p.parent.name}.png")).write_bytes(p.read_bytes())
  again, _, computed = _features(tmp_path, mixed, backbone, monkeypatch)
  assert computed == [1, 1]  # the defective image only
  for name in sorted(first)[:3]:
    assert np.array_equal(again[name.replace(".png", "_good.png")], first[name])


def _six_image_folder(tmp_path, input_size: int):
  """The quick folder config on a 6-image synthetic folder with a cache in tmp_path: (config, dataset, its train +
  test images)."""
  root = write_synthetic_folders(tmp_path / "data", n_good=6, n_bad=0, size=32)
  c = folder_config.get_config("quick")
  c.data.root, c.cache_dir = str(root / "good"), str(tmp_path / "cache")
  ds = readers.read(c.data, input_size)
  return c, ds, np.concatenate([ds.train.images, ds.test.images])


def test_training_views_are_computed_only_for_the_images_a_run_trains_on(tmp_path, backbone, monkeypatch):
  """Validation and test images get evaluation views only; a later split that trains on other images computes
  just those images' training views, and every image's training features are the ones a full computation gives
  (rows follow `train_rows`, not the cache's order)."""
  bb, bparams = backbone
  c, ds, images = _six_image_folder(tmp_path, bb.input_size)
  computed = []
  original = features_lib.extract
  monkeypatch.setattr(features_lib, "extract", lambda b, p, ims, *a, **k: (computed.append(len(ims)),
                                                                           original(b, p, ims, *a, **k))[1])
  first = feature_cache.features(c, bb, bparams, images, ds.name, train_rows=np.array([4, 1]))
  assert computed == [6, 2] and first["train"].shape[0] == 2
  computed.clear()
  second = feature_cache.features(c, bb, bparams, images, ds.name, train_rows=np.array([1, 2, 5]))
  assert computed == [2]  # images 2 and 5; image 1's training views are cached
  np.testing.assert_array_equal(second["train"][0], first["train"][1])
  np.testing.assert_array_equal(second["eval"], first["eval"])

  full = feature_cache.features(c, bb, bparams, images, ds.name)  # every image's training views
  assert computed == [2, 2]  # images 0 and 3, on which no split trained yet
  np.testing.assert_array_equal(full["train"][[4, 1]], first["train"])
  np.testing.assert_array_equal(full["train"][[1, 2, 5]], second["train"])
  np.testing.assert_array_equal(full["train_views"][[1, 2, 5]], second["train_views"])


def test_two_runs_filling_one_cache_at_once_compute_each_image_once_and_keep_all_rows(tmp_path, backbone,
                                                                                      monkeypatch):
  """Run B (images 2-5) starts while run A (images 0-3) is computing: B waits for A instead of computing images 2
  and 3 a second time, and neither run's rows are lost (a third run computes nothing). Without the lock B enters
  the backbone at once and images 2 and 3 are computed twice."""
  bb, bparams = backbone
  c, ds, images = _six_image_folder(tmp_path, bb.input_size)
  computed, b_out, b_blocked_or_computing = [], {}, threading.Event()
  original, original_log = features_lib.extract, feature_cache.log
  b = threading.Thread(target=lambda: b_out.update(feature_cache.features(c, bb, bparams, images[2:], ds.name)))

  def extract(bb_, p, ims, *a, **k):
    if threading.current_thread() is b:
      b_blocked_or_computing.set()
    elif not b.is_alive() and not b_out:  # A's first extraction: B starts, A goes on once B waits or computes
      b.start()
      assert b_blocked_or_computing.wait(120)
    computed.append((threading.current_thread() is b, len(ims)))
    return original(bb_, p, ims, *a, **k)

  def log(message):
    if "another process is computing" in message:
      b_blocked_or_computing.set()
    original_log(message)

  monkeypatch.setattr(features_lib, "extract", extract)
  monkeypatch.setattr(feature_cache, "log", log)
  feature_cache.features(c, bb, bparams, images[:4], ds.name)
  b.join()
  # Each table of each of the 6 images once, by whichever run held the lock first (B may take the training table
  # of images 2 and 3 between A's two tables); both runs computed.
  assert len(computed) == 4 and sum(n for _, n in computed) == 12 and {who for who, _ in computed} == {False, True}
  computed.clear()
  both = feature_cache.features(c, bb, bparams, images, ds.name)
  assert computed == []
  np.testing.assert_array_equal(both["eval"][2:], b_out["eval"])
  np.testing.assert_array_equal(both["train"][2:], b_out["train"])


def test_a_cache_written_before_the_tables_were_split_is_read_not_recomputed(tmp_path, backbone, monkeypatch):
  """Files of the earlier layout (one row per image holding both kinds of views, no `train_digests`) stay valid:
  their features are served as they are, nothing is recomputed."""
  root = write_synthetic_folders(tmp_path / "data", n_good=4, n_bad=0, size=32)
  first, first_train, computed = _features(tmp_path, root / "good", backbone, monkeypatch)
  assert computed == [4, 4]
  (path,) = (tmp_path / "cache").glob("features_*.npz")
  with np.load(path) as f:
    store = {k: f[k] for k in f.files}
  by_digest = {d.tobytes(): r for r, d in enumerate(store["train_digests"])}
  rows = [by_digest[d.tobytes()] for d in store["digests"]]  # the old layout's train rows follow `digests`
  old = {"settings": store["settings"], "digests": store["digests"], "eval": store["eval"],
         "train_views": store["train_views"][rows], "train": store["train"][rows]}
  np.savez(path, **old)
  again, again_train, computed = _features(tmp_path, root / "good", backbone, monkeypatch)
  assert computed == []
  assert all(np.array_equal(again[i], first[i]) and np.array_equal(again_train[i], first_train[i]) for i in first)
