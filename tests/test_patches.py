"""patch_iqr's scores: exact nearest-patch distances, an image never its own neighbour, removed images out of the
memory, and on real images the defects ranked high."""
import csv
import json
import os

import numpy as np
import pytest

from configs import folder as folder_config
from maml_iqr import cleaning, config_check, metrics, patches, run
from maml_iqr.data.images import DataError
from tests.conftest import shared_data


def brute_force(queries, memory):
  d = np.linalg.norm(queries[:, :, None, None, :] - memory[None, None], axis=-1)  # (Q, P, N, P)
  return d.min(-1)


def test_nearest_patch_distances_are_exact_across_padded_tiles_and_symmetric_halves():
  rng = np.random.default_rng(0)
  queries, memory = rng.normal(size=(11, 6, 5)).astype(np.float32), rng.normal(size=(37, 6, 5)).astype(np.float32)
  got = patches.nearest_patch_distances(queries, memory, "test", tile=8)  # neither count divides evenly
  np.testing.assert_allclose(got, brute_force(queries, memory), rtol=1e-4, atol=1e-4)
  # against themselves: half the pairs computed, the other half read off the same distance matrices
  got = patches.nearest_patch_distances(memory, None, "test", tile=8)  # self-distances 0 up to float cancellation
  np.testing.assert_allclose(got, brute_force(memory, memory), rtol=1e-4, atol=2e-3)


def test_an_image_is_never_its_own_neighbour_and_removed_images_leave_the_memory():
  """Images 0 and 1 share an odd patch (a defect seen twice), image 2 has its own; the rest are alike. At K = 1
  image 0's nearest other image is 1, so it scores low while 1 is in the memory and high once 1 is removed. Image
  2 scores high at once: against itself it would score 0."""
  rng = np.random.default_rng(1)
  feats = rng.normal(0, 0.1, size=(12, 8, 4)).astype(np.float32)
  feats[0, 3] = feats[1, 3] = 5.0
  feats[2, 5] = -5.0
  tables = patches.distance_tables(feats, feats[:0])
  d = tables["train_patch_d"]
  assert np.isinf(d[np.arange(12), :, np.arange(12)]).all() and tables["val_patch_d"].shape == (0, 8, 12)
  everyone = np.ones(12, bool)
  s = patches.image_scores(d[:, :, everyone], k=1, top=1)
  assert np.argmax(s) == 2 and s[0] < s[2] / 5
  without_1 = everyone.copy()
  without_1[1] = False
  fit = cleaning.fit_patches(None, without_1, None, (0, 0))
  s = patches.image_scores(d[:, :, without_1], k=1, top=1)
  np.testing.assert_allclose(fit.scorers[0](d), patches.image_scores(d[:, :, without_1]))
  assert s[0] > 20 * np.median(s)


def test_images_of_one_object_are_not_each_others_neighbours():
  """Four captures of one object (group 'a') share an odd patch, as a defective tile's captures share its defect;
  so does a validation image of that object. Without groups the captures vouch for each other (K = 3 others show
  the patch) and score like the rest; with groups they, and the validation capture, are scored against other
  objects only and stand out. Too few images of other objects to score against is a named error."""
  rng = np.random.default_rng(2)
  feats = rng.normal(0, 0.1, size=(14, 8, 4)).astype(np.float32)
  feats[[0, 1, 2, 3, 13], 3] = 5.0  # 0-12 train, 13 validation
  groups = ["a"] * 4 + [f"o{i}" for i in range(9)] + ["a"]
  dist = patches.distance_tables(feats[:13], feats[13:])
  plain = patches.image_scores(dist["train_patch_d"])
  assert plain[:4].max() < 2 * np.median(plain[4:])
  both = np.concatenate([feats[:13], feats[13:]])
  full = patches.nearest_patch_distances(both, None, "test")
  tables = patches.split_tables(full.copy(), 13, groups)
  grouped = patches.image_scores(tables["train_patch_d"])
  assert grouped[:4].min() > 10 * grouped[4:].max()
  val = patches.image_scores(tables["val_patch_d"])
  assert val[0] > 10 * grouped[4:].max()
  assert patches.image_scores(patches.split_tables(full.copy(), 13)["val_patch_d"])[0] < 2 * np.median(plain[4:])
  with pytest.raises(ValueError, match="other objects"):
    patches.split_tables(full.copy(), 13, ["a"] * 11 + ["b"] * 3)
  with pytest.raises(ValueError, match="group names"):
    patches.split_tables(full.copy(), 13, groups[:13])
  # Removals that leave an image fewer than K kept images of other objects stop the run with a named error, not a
  # non-finite score: here object 'a' (images 0-3) keeps only objects o0 and o1 to be scored against.
  ctx = cleaning.Context(folder_config.get_config("quick"), None, tables, {})
  kept = np.zeros(13, bool)
  kept[:6] = True
  fit = cleaning.fit_patches(ctx, kept, None, ())
  with pytest.raises(DataError, match=r"4 image\(s\) have fewer than 3 kept images of other objects"):
    fit.scorers[0](tables["train_patch_d"])
  assert np.isfinite(fit.scorers[0](tables["train_patch_d"][4:])).all()  # the other objects' images have 5 each
  kept[6] = True  # a third other object: 'a' can be scored again
  assert np.isfinite(cleaning.fit_patches(ctx, kept, None, ()).scorers[0](tables["train_patch_d"])).all()


def _pixel_patches(ims):
  """Patch features as a fixed function of each image's own pixels (the backbone is not under test)."""
  shape = (patches.RECIPE.patches, patches.RECIPE.dim)
  return np.stack([np.resize(im.astype(np.float32).ravel() / 255, shape) for im in ims]).reshape(-1, *shape)


def _cache_run(monkeypatch, cache_dir, images, train, val, computed):
  """cached_tables on images[train] / images[val]; `computed` collects how many images each call featurised. The
  tables must equal a computation from scratch."""
  monkeypatch.setattr(patches, "extract", lambda backbone, bparams, ims, dtype, recipe: computed.append(len(ims))
                      or _pixel_patches(ims))
  c = folder_config.get_config("quick")
  c.cache_dir, c.backbone.name, c.backbone.weights_path = str(cache_dir), "alexnet", "random"
  backbone = type("Backbone", (), {"input_size": 8})()
  tables = patches.cached_tables(c, backbone, None, images[train], images[val], "toy")
  fresh = patches.distance_tables(_pixel_patches(images[train]), _pixel_patches(images[val]))
  for key in ("train_patch_d", "val_patch_d"):
    np.testing.assert_allclose(tables[key], fresh[key], rtol=1e-5, atol=1e-5)
  return tables


def test_patch_distance_cache_computes_only_unseen_pixels_and_never_serves_stale_rows(tmp_path, monkeypatch, caplog):
  """A second run (another split of the same images) featurises only the images the cache has not seen, and its
  tables equal a computation from scratch; an image changed under the same position is recomputed, a damaged
  file is recomputed with a warning, and other settings use another file."""
  caplog.set_level("INFO")
  rng = np.random.default_rng(0)
  images = rng.integers(0, 255, size=(14, 8, 8, 3), dtype=np.uint8)
  computed = []
  _cache_run(monkeypatch, tmp_path, images, np.arange(8), np.arange(8, 10), computed)
  assert computed == [10]
  _cache_run(monkeypatch, tmp_path, images, np.r_[2:12], np.array([0, 13]), computed)  # 10, 11, 13 are new
  assert computed == [10, 3]
  _cache_run(monkeypatch, tmp_path, images, np.r_[0:8], np.r_[8:10], computed)  # all cached
  assert computed == [10, 3] and "patch distances from cache" in caplog.text
  changed = images.copy()
  changed[4, 0, 0] ^= 1  # one pixel of image 4: its digest, not its position, decides
  _cache_run(monkeypatch, tmp_path, changed, np.r_[0:8], np.r_[8:10], computed)
  assert computed == [10, 3, 1]
  (path,) = [p for p in tmp_path.iterdir() if p.suffix == ".npz"]
  path.write_bytes(b"not a table")
  _cache_run(monkeypatch, tmp_path, images, np.r_[0:8], np.r_[8:10], computed)
  assert computed == [10, 3, 1, 10] and "patch distance cache" in caplog.text and "unusable" in caplog.text
  monkeypatch.setattr(patches, "FORMAT", patches.FORMAT + 1)  # another recipe: another file, nothing reused
  _cache_run(monkeypatch, tmp_path, images, np.r_[0:8], np.r_[8:10], computed)
  assert computed == [10, 3, 1, 10, 10] and len([p for p in tmp_path.iterdir() if p.suffix == ".npz"]) == 2


def test_patch_iqr_refuses_folds_and_other_backbones(folders):
  c = folder_config.get_config("quick")
  c.data.root = str(folders / "good")
  c.method = "patch_iqr"
  config_check.validate(c)
  c.refine.folds = 2
  with pytest.raises(config_check.ConfigError, match=r"--config.refine.folds=2.*patch_iqr"):
    config_check.validate(c)
  c.refine.folds, c.backbone.name, c.backbone.weights_path = 1, "alexnet", "random"
  with pytest.raises(config_check.ConfigError, match=r"--config.backbone.name='alexnet'.*patch_iqr"):
    config_check.validate(c)


@pytest.mark.parametrize("key, value, message", [
    ("stages", ("block4", "stride32"), "block0..block15"), ("grid", 10, r"block4 is 28x28 at 224x224"),
    ("local", 2, "odd"), ("pool", "median", "mean or max"), ("input_size", 300, "multiple of 32")])
def test_patch_recipe_out_of_range_names_its_flag(folders, key, value, message):
  c = folder_config.get_config("quick")
  c.data.root, c.method = str(folders / "good"), "patch_iqr"
  assert patches.recipe(c) == patches.RECIPE  # configs/base.py's section is the recipe the benchmarks call current
  c.patch[key] = value
  with pytest.raises(config_check.ConfigError, match=rf"--config.patch.{key}=.*{message}"):
    config_check.validate(c)


def test_config_check_knows_the_networks_input_size_and_each_block_stride():
  from maml_iqr.models import efficientnet_lite as enet  # noqa: PLC0415
  assert config_check.BACKBONE_INPUT_SIZE == enet.INPUT_SIZE
  assert config_check.BLOCK_STRIDES == tuple(2 * np.cumprod(enet._BLOCK_STRIDES))


def test_patch_images_at_another_size_are_the_splits_own_images_matched_by_id(folders):
  """patch.input_size other than the backbone's: the split's training and validation images read again at that
  size, in the split's order (which is not the dataset's: injected images join the training set)."""
  from maml_iqr.data import readers  # noqa: PLC0415
  from maml_iqr.data.contamination import contaminate  # noqa: PLC0415
  c = folder_config.get_config("quick")
  c.data.root, c.data.defective_root, c.patch.input_size = str(folders / "good"), str(folders / "bad"), 64
  dataset = readers.read(c.data, 32)
  split = contaminate(dataset, 0.5, "defect_share", False, 0, "cap", 0.2)
  train, val = run.patch_images(c, type("Backbone", (), {"input_size": 32})(), dataset, split)
  big = readers.read(c.data, 64)
  by_id = dict(zip(big.train.ids + big.test.ids, [*big.train.images, *big.test.images]))
  assert train.shape == (len(split.train), 64, 64, 3) and val.shape == (len(split.val), 64, 64, 3)
  assert any(i in big.test.ids for i in split.train.ids)  # the split's order is not the dataset's
  for images, part in ((train, split.train), (val, split.val)):
    np.testing.assert_array_equal(images, np.stack([by_id[i] for i in part.ids]))


def test_object_groups_follow_the_splits_order(folders):
  """The groups handed to the patch tables are the split's training then validation images' own objects, in the
  split's order (not the dataset's), and none where the dataset knows no objects."""
  import dataclasses  # noqa: PLC0415
  from maml_iqr.data import readers  # noqa: PLC0415
  from maml_iqr.data.contamination import contaminate  # noqa: PLC0415
  c = folder_config.get_config("quick")
  c.data.root, c.data.defective_root = str(folders / "good"), str(folders / "bad")
  dataset = readers.read(c.data, 32)
  ids = dataset.train.ids + dataset.test.ids
  grouped = dataclasses.replace(dataset, groups={i: f"object {k // 2}" for k, i in enumerate(ids)})
  split = contaminate(grouped, 0.5, "defect_share", False, 0, "cap", 0.2)
  rows = list(split.train.ids) + list(split.val.ids)
  assert run.object_groups(dataset, rows) is None
  assert run.object_groups(grouped, rows) == [f"object {ids.index(i) // 2}" for i in rows]
  assert rows[:len(dataset.train)] != dataset.train.ids  # the split's order is not the dataset's


def test_patch_table_too_large_is_refused_before_any_backbone_runs():
  assert patches.table_problem(1000, 200) == ""
  assert "gaussian_iqr" in patches.table_problem(4000, 1000)


def test_patch_iqr_ranks_the_defects_mixed_into_a_real_folder_high(tmp_path, monkeypatch):
  """28 good hazelnut photos and 6 with colour defects in one folder, no labels (clean mode): the patch scores in
  suspicious.csv rank the 6 high (AUROC >= 0.85 against the hidden truth; random scores reach it with
  probability below 1 %), and the run ends with a saved detector."""
  data = shared_data("hazelnut_toy")
  folder = tmp_path / "line"
  folder.mkdir()
  for name in sorted(os.listdir(os.path.join(data, "train", "good"))):
    os.symlink(os.path.join(data, "train", "good", name), folder / f"good_{name}")
  for name in sorted(os.listdir(os.path.join(data, "test", "colour")))[:6]:
    os.symlink(os.path.join(data, "test", "colour", name), folder / f"colour_{name}")
  c = folder_config.get_config("quick")
  c.data.root, c.method, c.refine.k, c.refine.max_iterations = str(folder), "patch_iqr", 1.0, 2
  monkeypatch.setattr(run, "REVIEW_BORDERLINE", 2)  # the review sheet's anomaly maps are not under test here
  monkeypatch.setattr(run, "REVIEW_MAX_REMOVED", 2)
  run.main(c, str(tmp_path / "w"))
  res = json.loads((tmp_path / "w" / "results.json").read_text())
  assert res["status"] == "done" and res["timings"]["patch_distances_s"] > 0
  with open(tmp_path / "w" / "suspicious.csv") as f:
    rows = list(csv.DictReader(f))
  truth = np.array([r["id"].split("/")[-1].startswith("colour_") for r in rows], int)
  scores = np.array([float(r["score"]) for r in rows])
  print("patch_iqr on the hazelnut folder: AUROC of the cleaning scores", metrics.auroc(truth, scores))
  assert metrics.auroc(truth, scores) >= 0.85, rows[:10]
  assert (tmp_path / "w" / "model" / "detector.json").exists()


def test_patch_recipe_brings_every_stage_to_its_grid_and_each_recipe_has_its_own_cache_file():
  """A one-pixel defect on a stage map twice the grid's size keeps its full height under max pooling and a
  quarter under the mean; a coarser map is repeated onto the grid; a map that fits neither way is refused."""
  fine = np.zeros((1, 28, 28, 2), np.float32)
  fine[0, 5, 7, 0] = 1.0
  mean = np.asarray(patches._to_grid(fine, patches.Recipe(local=1)))
  top = np.asarray(patches._to_grid(fine, patches.Recipe(local=1, pool="max")))
  assert mean.shape == top.shape == (1, 14, 14, 2)
  assert mean[0, 2, 3, 0] == 0.25 and top[0, 2, 3, 0] == 1.0 and mean.sum() == 0.25 and top.sum() == 1.0
  smoothed = np.asarray(patches._to_grid(fine, patches.Recipe(local=3)))  # 3x3 mean, then the 2x2 mean
  np.testing.assert_allclose(smoothed.sum(), 1.0 / 4, rtol=1e-6)
  assert (smoothed[0, 2:4, 2:5, 0] > 0).sum() > 1  # spread over neighbouring cells
  coarse = np.zeros((1, 7, 7, 1), np.float32)
  coarse[0, 1, 2, 0] = 3.0
  up = np.asarray(patches._to_grid(coarse, patches.Recipe(local=1)))
  assert (up[0, 2:4, 4:6, 0] == 3.0).all() and up.sum() == 12.0
  with pytest.raises(ValueError, match="10x10"):
    patches._to_grid(np.zeros((1, 10, 10, 1), np.float32), patches.Recipe())
  c = folder_config.get_config("quick")
  c.backbone.name, c.backbone.weights_path = "alexnet", "random"
  backbone = type("Backbone", (), {"input_size": 8})()
  recipes = [patches.RECIPE, patches.Recipe(pool="max"), patches.Recipe(local=1), patches.Recipe(grid=7),
             patches.Recipe(stages=("block2",) + patches.RECIPE.stages), patches.Recipe(input_size=16)]
  paths = {patches.cache_path("c", "x", patches.cache_settings(c, backbone, r)) for r in recipes}
  assert len(paths) == len(recipes)
  with pytest.raises(ValueError, match="expects 16x16 images, got 8x8"):  # never patches of the wrong size cached
    patches.extract(backbone, None, np.zeros((1, 8, 8, 3), np.uint8), recipe=patches.Recipe(input_size=16))
