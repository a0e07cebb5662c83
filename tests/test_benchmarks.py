"""The benchmark scripts run end to end in --quick mode and write complete JSON (no timing thresholds)."""
import collections
import json
import math
import os

import numpy as np

from benchmarks import bench_core, cost_curves


def _positive(x) -> bool:
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bench_core_quick_writes_expected_json(tmp_path):
  out = tmp_path / "bench.json"
  bench_core.main(["--quick", f"--out={out}"])
  res = json.loads(out.read_text())
  for key in ("machine", "settings", "peak", "backbone", "train", "score", "maml", "memory", "compile_s"):
    assert key in res, key
  assert res["settings"]["quick"] is True
  assert {"jax_version", "devices", "cpu_count", "platform", "backend"} <= res["machine"].keys()
  assert _positive(res["peak"]["peak_gflops_per_s"])
  assert _positive(res["peak"]["matmul"]["gflops_per_s"]) and _positive(res["peak"]["conv"]["gflops_per_s"])
  assert {r["backbone"] for r in res["backbone"]} == {"efficientnet_lite0", "alexnet"}
  assert {r["mode"] for r in res["backbone"]} == {"with_views", "raw_features"}
  assert any("random" in r["weights"] for r in res["backbone"] if r["backbone"] == "alexnet")
  for r in res["backbone"]:
    for k in ("views_per_s", "median_s", "xla_flops_per_view", "gflops_per_s", "fraction_of_peak"):
      assert _positive(r[k]), (k, r)
  assert {r["size"] for r in res["train"]} == {"differnet", "default"}
  for r in res["train"]:
    for k in ("samples_per_s", "step_s", "params", "gflops_per_s", "fraction_of_peak", "one_call_per_step_s",
              "masked_scan_step_s", "optimizer_update_s", "shape_ceiling_gflops_per_s", "fraction_of_shape_ceiling"):
      assert _positive(r[k]), (k, r)
  for r in res["score"]:
    assert r["views_per_image"] == 64 and _positive(r["images_per_s"]) and _positive(r["fraction_of_peak"])
  assert len(res["maml"]) >= 2
  for r in res["maml"]:
    assert _positive(r["step_s"]) and _positive(r["tasks"]) and _positive(r["inner_steps"])
    assert _positive(r["fraction_of_shape_ceiling"])
  assert all(v >= 0 for v in res["compile_s"].values())
  assert _positive(res["memory"]["host_peak_rss_mb"])


def test_cost_curves_quick_writes_expected_json(tmp_path):
  out = tmp_path / "curves.json"
  cost_curves.main(["--quick", f"--out={out}"])
  res = json.loads(out.read_text())
  curves = {"score_vs_n": "n_images", "score_vs_k": "views", "train_epoch_vs_n": "n_images",
            "train_epoch_vs_k": "views", "maml_epoch_vs_t": "tasks"}
  assert "machine" in res and "memory" in res
  for curve, x in curves.items():
    pts = res[curve]["points"]
    assert len(pts) >= 2, curve
    assert len({p[x] for p in pts}) == len(pts), curve
    for p in pts:
      assert _positive(p["seconds"]) and _positive(p[x]), (curve, p)
  assert "slope_s" in res["score_vs_n"]["fit_vs_n"]



def test_patch_scores_find_the_odd_patch_and_never_match_an_image_with_itself():
  """Images 0-3 are alike, image 4 has one far patch; images 5 and 6 share a far patch (a repeated defect)."""
  from benchmarks import patch_scores
  rng = np.random.default_rng(0)
  patches = rng.normal(0, 0.01, (7, 6, 3)).astype(np.float32)
  patches[4, 2] += 5.0
  patches[5, 1] += [0.0, 5.0, 0.0]
  patches[6, 3] += [0.0, 5.0, 0.0]
  d = patch_scores.patch_distances(patches)
  assert d.shape == (7, 6, 7)
  np.testing.assert_allclose(d[np.arange(7), :, np.arange(7)], 0.0, atol=1e-3)  # an image holds its own patches
  nearest = patch_scores.top_mean(patch_scores.nn_patch_scores(d, 1), 1)
  assert nearest.argmax() == 4 and nearest[4] > 4.0  # self excluded, or every score would be 0
  assert nearest[5] < 0.1 and nearest[6] < 0.1  # each finds its twin defect in the other
  second = patch_scores.top_mean(patch_scores.nn_patch_scores(d, 2), 1)
  assert second[5] > 4.0 and second[6] > 4.0 and second[:4].max() < 0.1  # a defect seen once more still stands out
  subsets = patch_scores.subset_scores(d, 0.3, 50, np.random.default_rng(0))
  assert set(np.argsort(subsets)[-3:]) == {4, 5, 6}


def test_patch_contrast_compares_a_patch_with_its_own_position_and_its_own_image():
  """Position 0 is far in every image (a variable border) and image 3 far at position 2 only: raw scores rank the
  border, by_position image 3's lone patch. Image 4 far everywhere (an atypical texture): raw scores rank it
  first, within_image ranks image 3's lone far patch above it."""
  from benchmarks import patch_contrast
  rng = np.random.default_rng(0)
  s = rng.uniform(1.0, 1.1, (8, 9))
  s[3, 2] += 1.5
  bordered = s.copy()
  bordered[:, 0] = rng.uniform(2.0, 6.0, 8)
  z = patch_contrast.by_position(bordered)
  assert np.unravel_index(np.argmax(bordered), s.shape)[1] == 0 and np.unravel_index(np.argmax(z), s.shape) == (3, 2)
  s[4] += 2.0
  v = patch_contrast.variants(s)
  assert v["current"].argmax() == 4 and v["within_image"].argmax() == 3


def test_iterated_removal_finds_a_small_look_alike_group_but_not_a_large_one():
  """K = 3 sees past two twins, not past four: three look-alike defects and a lone one are all removed in the first
  pass, and no good image; five look-alikes stay (only the lone one goes), and a pass that removes nothing ends it."""
  from benchmarks import patch_scores
  rng = np.random.default_rng(1)
  patches = rng.normal(0, 1.0, (40, 4, 8)).astype(np.float32)
  patches[37:, 0] = 30.0 + rng.normal(0, 0.01, (3, 8))
  patches[36, 0] = 60.0
  injected = np.zeros(40, bool)
  injected[36:] = True
  assert patch_scores.iterated_removal(patch_scores.patch_distances(patches), injected, 1.5, 5) == [[1.0, 0.0]]
  patches[34:36, 0] = 30.0 + rng.normal(0, 0.01, (2, 8))
  injected[34:36] = True
  trajectory = patch_scores.iterated_removal(patch_scores.patch_distances(patches), injected, 1.5, 5)
  assert trajectory == [[1 / 6, 0.0]]


def test_calibrated_removal_spends_the_stated_budget_of_good_images():
  """Good training and validation images drawn alike: the validation good images' 95th percentile removes about 5 %
  of the good training images (not 0, not 95 %) and every far-off defect, in one pass."""
  from benchmarks import patch_scores
  rng = np.random.default_rng(2)
  patches = rng.normal(0, 1.0, (420, 4, 8)).astype(np.float32)  # 0-299 training (280-299 injected), 300-419 val
  patches[280:300, 0] += 40.0 * rng.normal(0, 1.0, (20, 8))  # lone defects, each in its own direction
  d = patch_scores.patch_distances(patches)
  train, val = np.arange(300), np.arange(300, 420)
  injected = np.zeros(300, bool)
  injected[280:] = True
  (recall, good_lost), = patch_scores.calibrated_removal(d[train][:, :, train], d[val][:, :, train], injected, 0.05, 1)
  assert recall == 1.0 and 0.015 <= good_lost <= 0.10, (recall, good_lost)


def test_score_fusion_counts_the_injected_images_the_budget_point_removes():
  """The images `found_within_budget` marks are exactly the recall that `recall_at_good_lost` reads (ties
  included); every fusion ignores the two scores' scales, and the z-score fusions rank an image either scorer
  finds far off above the rest."""
  from benchmarks import score_fusion
  from maml_iqr.metrics import recall_at_good_lost
  rng = np.random.default_rng(3)
  for _ in range(50):
    injected = rng.random(200) < 0.2
    scores = np.round(rng.normal(size=200) + injected * 2 * rng.random(), 1)
    found = score_fusion.found_within_budget(injected, scores)
    assert not (found & ~injected).any()
    assert found.sum() / injected.sum() == recall_at_good_lost(injected, scores)
  patch, gauss = rng.normal(size=100), rng.normal(size=100)
  patch[0], gauss[1] = 50.0, 50.0
  fused = score_fusion.fusions(patch, gauss)
  rescaled = score_fusion.fusions(3.0 * patch + 7.0, 1000.0 * gauss)  # scales apart: no fusion may care
  for name in fused:
    np.testing.assert_allclose(fused[name], rescaled[name], atol=1e-9, err_msg=name)
  assert set(np.argsort(fused["z_max"])[-2:]) == {0, 1} and set(np.argsort(fused["z_mean"])[-2:]) == {0, 1}


def test_mirror_memories_match_an_image_to_others_mirrors_but_never_its_own():
  """With a left-right mirror memory an image scores as far as its nearest other image or other image's mirror;
  its own mirror (which it always resembles) never counts."""
  from benchmarks import patch_mirrors
  n, p = 6, 4
  d_none = np.full((n, p, n), 10.0, np.float32)
  h = np.full((n, p, n), 10.0, np.float32)
  h[np.arange(n), :, np.arange(n)] = 0.0  # each image's own mirror: identical to it
  h[0, :, 1:4] = 1.0  # image 0 looks like the mirrors of images 1-3
  h[4, :, [2, 5]] = 1.0  # image 4 like two others' mirrors: with its own, three, if it counted
  rows = np.arange(n)
  none = patch_mirrors.memory_scores(d_none, {"h": h}, rows, ())
  mirrored = patch_mirrors.memory_scores(d_none, {"h": h}, rows, ("h",))
  np.testing.assert_allclose(none, 10.0)
  np.testing.assert_allclose(mirrored, [1.0] + [10.0] * (n - 1))  # K = 3: three other images' mirrors needed
  h[0, :, 3] = 10.0
  assert patch_mirrors.memory_scores(d_none, {"h": h}, rows, ("h",))[0] == 10.0  # only two: still far
  assert patch_mirrors.memory_scores(d_none, {"h": h}, rows[1:], ("h",)).tolist() == [10.0] * (n - 1)


def test_tail_test_replay_keeps_removals_only_while_the_upper_tail_outweighs_the_lower():
  """A trajectory whose first iteration has 20 scores far above the rest and whose second is symmetric: the test
  keeps the first iteration's removal and stops at the second; `none` keeps both. Fails if the test reads the
  wrong tail, ignores the lower fence, or replays past the first failed test."""
  from benchmarks import tail_test
  rng = np.random.default_rng(0)
  half = rng.normal(size=150)
  body = np.concatenate([half, -half])  # tails equal by construction
  lopsided, symmetric = np.concatenate([body, 10 + rng.normal(size=20)]), np.concatenate([body, [-8, 8, -9, 9]])
  run = {"config": {"refine": {"k": 1.5}}, "contamination": {"n_injected": 20, "n_good_train": 302},
         "refinement": [{"iteration": 0, "scores": lopsided.tolist(), "removed_injected": 20, "removed_good": 0},
                        {"iteration": 1, "scores": symmetric.tolist(), "removed_injected": 0, "removed_good": 4}]}
  assert tail_test.iterations_kept(run, "none") == 2
  for fences in ("iqr_fences", "half_iqr"):
    assert tail_test.iterations_kept(run, fences) == 1
    assert tail_test.quality(run, 1) == {"recall": 1.0, "good_lost": 0.0, "iterations": 1}
  up, low = tail_test.tail_counts(symmetric, 1.5, "iqr_fences")
  assert up == low >= 2 and tail_test.sign_test_p(up, low) > 0.5
  assert tail_test.sign_test_p(5, 0) == 1 / 32  # all five past the upper fence: (1/2)^5


def test_stop_rule_replay_at_patience_two_looks_past_one_fall_and_keeps_the_best_validated_set():
  """Magnetic Tile 50 % seed 0's recorded validation AUROCs (whole-set Gaussian): tolerance 0 at patience 1 stops at
  the 0.001 fall and keeps iteration 0's removal; patience 2 goes on to the later, higher ones and keeps all five
  (the last holds); after two falls patience 2 keeps the start. Fails if the replay ignores patience or keeps a set
  past the best-validated one."""
  from benchmarks import stop_rule

  def run(aurocs):
    return {"contamination": {"n_val": 116, "n_val_defective": 78},
            "refinement": [{"iteration": i, "val_auroc": a, "n_removed": 5} for i, a in enumerate(aurocs)]}

  rising = run([0.869, 0.886, 0.885, 0.888, 0.888])
  assert stop_rule.replay(rising, 0.0, 1) == 1
  assert stop_rule.replay(rising, 0.0, 2) == 5
  assert stop_rule.replay(rising, 100.0, 1) == 5
  falling = run([0.90, 0.89, 0.88, 0.95, 0.96])
  assert stop_rule.replay(falling, 0.0, 2) == 0
  assert stop_rule.replay(falling, 0.0, 3) == 5


def test_synthetic_defects_change_one_small_region_per_image_reproducibly():
  """CutPaste rectangles (2-15 % of the area) and scars (a thin strip) change a small connected part of each image
  and nothing else; the same seed makes the same defects, another seed others."""
  from benchmarks.synthetic_validation import synthetic_defects  # noqa: PLC0415 - absl flags only under __main__
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(6, 64, 64, 3), dtype=np.uint8)
  made = synthetic_defects(images, seed=3)
  np.testing.assert_array_equal(made, synthetic_defects(images, seed=3))
  assert not np.array_equal(made, synthetic_defects(images, seed=4))
  changed = (made != images).any(-1).mean((1, 2))
  assert np.all(changed > 0)
  assert np.all(changed[0::2] <= 0.16) and np.all(changed[1::2] <= 0.05), changed  # cutpaste, scar


def test_patch_backbone_reads_any_lite_layout_as_lite0_is_read():
  """benchmarks.patch_backbone loads a Lite state dict of any depth and derives each block's stride from the
  channels alone: on Lite0's weights that must give Lite0's own strides and its own stage maps, or the Lite2 figures
  would come from a mis-strided network."""
  import jax.numpy as jnp  # noqa: PLC0415
  from benchmarks import patch_backbone  # noqa: PLC0415
  from maml_iqr import patches as patches_lib  # noqa: PLC0415
  from maml_iqr.models import efficientnet_lite as enet  # noqa: PLC0415
  params = patch_backbone.lite_params(enet.weights_path())
  assert patch_backbone.block_strides(params) == list(enet._BLOCK_STRIDES)
  images = jnp.asarray(np.random.default_rng(0).uniform(size=(1, 224, 224, 3)), jnp.float32)
  got = patch_backbone.lite_patch_features(params, images, patch_backbone.block_strides(params), (4, 10))
  want = patches_lib.patch_features(enet.load_params(), images, patches_lib.Recipe(stages=("block4", "block10")))
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_whitened_patch_distances_find_a_defect_along_a_direction_good_patches_hardly_vary():
  """Good patches vary 20x more along channel 0 than channel 1; each image carries a few patches far out along
  channel 0 (rare textures) and one image a patch 1 unit off along channel 1. Raw distances rank the texture
  images first; whitened ones rank the odd image first. The fitted map whitens Gaussian patches."""
  from benchmarks import patch_whitening
  rng = np.random.default_rng(0)
  n, p = 40, 16
  feats = np.stack([rng.normal(0, 1, (n, p)) * 2.0, rng.normal(0, 1, (n, p)) * 0.1], -1).astype(np.float32)
  feats[:, :5, 0] += rng.choice([-6.0, 6.0], (n, 5))  # each image a few unusual-texture patches
  feats[7, 0, 1] += 1.0  # the defect: 10 standard deviations along channel 1
  gauss = rng.normal(0, 1, (n, p, 2)).astype(np.float32) @ np.array([[2.0, 0.5], [0.0, 1.0]], np.float32)
  x = patch_whitening.fitted_transform("whiten", gauss)(gauss).reshape(-1, 2)
  np.testing.assert_allclose(np.cov(x.T, bias=True), np.eye(2), atol=0.05)  # little shrinkage on Gaussian rows
  whitened = patch_whitening.transformed_scores("whiten", feats)
  assert np.argmax(whitened) == 7
  raw = patch_whitening.patches_lib.image_scores(
      patch_whitening.patches_lib.split_tables(
          patch_whitening.patches_lib.nearest_patch_distances(feats, None, "raw"), n)["train_patch_d"])
  assert np.argmax(raw) != 7


def test_stage_balance_gives_every_backbone_stage_the_same_summed_variance():
  from benchmarks import patch_whitening
  recipe = patch_whitening.patches_lib.Recipe(stages=("block4", "block10"))  # 40 + 112 channels
  rng = np.random.default_rng(1)
  feats = rng.normal(0, 1, (30, 4, 152)).astype(np.float32) * np.r_[np.full(40, 5.0), np.full(112, 0.5)]
  x = patch_whitening.fitted_transform("stage_balance", feats, recipe)(feats).reshape(-1, 152)
  np.testing.assert_allclose([x[:, :40].var(0).sum(), x[:, 40:].var(0).sum()], [1.0, 1.0], rtol=1e-4)


def test_same_test_set_scores_the_clean_cell_on_exactly_the_noisy_cells_test_images():
  """The clean cell scores the defects that the noisy split injects below every good image, the others above:
  on its own test set it ranks them imperfectly, on the noisy cell's test images (matched by id, not by position)
  perfectly. A cell whose recorded split differs from the rebuilt one stops with it named."""
  import pytest

  from benchmarks import common, same_test_set
  from maml_iqr.data.contamination import contaminate
  from maml_iqr.data.images import Dataset, ImageSet
  n_good, n_bad = 10, 10
  images = np.zeros((n_good + n_bad, 2, 2, 3), np.uint8)
  test = ImageSet(images, np.r_[np.zeros(n_good), np.ones(n_bad)].astype(np.int32),
                  tuple(f"t{i}" for i in range(n_good + n_bad)), None)
  train = ImageSet(images[:6], np.zeros(6, np.int32), tuple(f"g{i}" for i in range(6)), None)
  ds = Dataset("synthetic", "c", train, test)

  def make(ratio, scores_of=None):
    noise = {"ratio": ratio, "mode": "defect_share", "overlap": False, "on_shortage": "fail", "val_fraction": 0.2}
    split = contaminate(ds, ratio, seed=3, val_fraction=0.2)
    scores = [scores_of(i, y) for i, y in zip(split.test.ids, split.test.labels)] if scores_of else []
    return split, {"method": "differnet", "seed": 3, "config": {"noise": noise},
                   "injected_ids": list(split.injected_ids), "test_labels": [int(y) for y in split.test.labels],
                   "test_scores": scores}

  noisy_split, noisy = make(0.5)
  injected = set(noisy_split.injected_ids)
  _, clean = make(0.0, lambda i, y: (-1.0 if i in injected else 2.0 + int(i[1:]) / 100) if y else int(i[1:]) / 100)
  noisy["auroc"], clean["auroc"] = 0.5, same_test_set.auroc(clean["test_labels"], clean["test_scores"])
  figures = same_test_set.cell_figures(noisy, common.cell_split(noisy, ds).test, clean,
                                       common.cell_split(clean, ds).test)
  assert clean["auroc"] < 0.8 and figures["clean_auroc_same_test"] == 1.0
  assert figures["n_test_defective"] == n_bad - len(injected) - 2  # 2 defects went to validation
  noisy["injected_ids"] = noisy["injected_ids"][1:]
  with pytest.raises(ValueError, match="does not match"):
    common.cell_split(noisy, ds)
  with pytest.raises(ValueError, match="not in the clean cell's test set"):
    same_test_set.scores_on(["a", "b"], [0, 1], [0.1, 0.2], ["a", "c"], [0, 1])


def test_folder_objects_labels_follow_the_tiles(tmp_path):
  """benchmarks/folder_objects.py's folder: every capture of each drawn tile, one defective tile per class, the
  hidden label of each file the class of the image it links to, and names that say the tile, not the label."""
  from benchmarks import folder_objects  # noqa: PLC0415
  from maml_iqr.data import readers  # noqa: PLC0415
  from tests.conftest import shared_data  # noqa: PLC0415
  root = shared_data("magnetic_tile")
  out = str(tmp_path / "parts")
  labels = folder_objects.make(root, out, good_tiles=4, seed=0)
  assert sorted(labels) == sorted(os.listdir(out))
  targets = {name: os.path.realpath(os.path.join(out, name)) for name in labels}
  assert all((labels[n] == 0) == ("MT_Free" in t) for n, t in targets.items())
  assert {t.split(os.sep)[-3] for t in targets.values() if "MT_Free" not in t} == set(readers.MTD_DEFECTS)
  tiles = readers.mtd_tiles([os.path.relpath(t, os.path.realpath(root)) for t in targets.values()])
  objects = readers.folder_objects(list(labels), r"^(t\d+)_")
  by_name = {n: tiles[os.path.relpath(t, os.path.realpath(root))] for n, t in targets.items()}
  assert len(set(objects.values())) == len(set(by_name.values())) == 4 + len(readers.MTD_DEFECTS)
  assert all(len({by_name[n] for n in labels if objects[n] == o}) == 1 for o in set(objects.values()))
  every = [os.path.join(cls, "Imgs", f) for cls in ("MT_Free",) + readers.MTD_DEFECTS
           for f in os.listdir(os.path.join(root, cls, "Imgs")) if f.endswith(".jpg")]
  captures = collections.Counter(readers.mtd_tiles(every).values())
  assert all(list(by_name.values()).count(t) == captures[t] for t in set(by_name.values()))
  with open(out + ".labels.json") as f:
    assert json.load(f) == labels
