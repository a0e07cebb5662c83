"""One run: read and contaminate the data, cache features, clean the training set, train and test the detector.

`train_and_evaluate(config, workdir)` is what `launch.main` calls; it only orchestrates
data -> features -> cleaning (`cleaning.refine`, the methods) -> final detector -> report. Every refinement
iteration checkpoints; a killed run started again with the same --workdir resumes there.
"""
from __future__ import annotations

import csv
import io
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from maml_iqr import (anomaly_maps, cleaning, config_check, detector, feature_cache, metric_writer, metrics, patches,
                      refine, report, review, saved_model, versions, xla_flags)
from maml_iqr.common import log
from maml_iqr.data import readers
from maml_iqr.data.contamination import contaminate
from maml_iqr.io import write_atomic, write_json
from maml_iqr.models import backbones


def patch_images(config, backbone, dataset, split) -> tuple[np.ndarray, np.ndarray]:
  """The training and validation images at the patch recipe's input size: the split's own, or the dataset read
  again at that size and matched by image id."""
  size = patches.recipe(config).side(backbone.input_size)
  if size == backbone.input_size:
    return split.train.images, split.val.images
  log(f"reading the images again at {size}x{size} for the patches (patch.input_size)")
  again = readers.read_config(config, size)
  by_id = dict(zip(list(again.train.ids) + list(again.test.ids), [*again.train.images, *again.test.images]))
  return tuple(np.stack([by_id[i] for i in part.ids]) if len(part.ids) else np.zeros((0, size, size, 3), np.uint8)
               for part in (split.train, split.val))


def object_groups(dataset, ids) -> list[str] | None:
  """The object each image of `ids` shows, where the dataset knows them (`Dataset.groups`), else None: patch_iqr's
  neighbours are other objects' images (`patches.split_tables`), and gaussian_iqr's leave-one-out leaves out the
  image's whole object (`gaussian.leave_groups_out`)."""
  return None if dataset.groups is None else [dataset.groups[i] for i in ids]


def split_features(config, backbone, bparams, dataset, split, train_views: bool = True) -> dict[str, np.ndarray]:
  """Features of the split's images from the content-keyed cache (`feature_cache`), rows matched by id:
  {'train' (N, K, D), 'train_views', 'train_eval' (N, V, D), 'val', 'test'}. Training views are computed for the
  split's training images only (none with `train_views=False`: what scoring alone needs); validation and test
  images need just the evaluation views."""
  row = {i: r for r, i in enumerate(dataset.train.ids + dataset.test.ids)}
  rows = lambda s: np.asarray([row[i] for i in s.ids], np.int64)
  feats = feature_cache.features(config, backbone, bparams,
                                 np.concatenate([dataset.train.images, dataset.test.images]), dataset.name,
                                 train_rows=rows(split.train) if train_views else np.zeros(0, np.int64))
  return {"train": feats["train"], "train_views": feats["train_views"],
          "train_eval": feats["eval"][rows(split.train)], "val": feats["eval"][rows(split.val)],
          "test": feats["eval"][rows(split.test)]}


def training_data(config, feats, backbone=None, bparams=None, images=None):
  """What `detector.train` reads: the feature cache, or (train.recompute_features) the images and the same
  views, run through the backbone every step as the reference does."""
  if not config.train.recompute_features:
    return dict(data=feats["train"], batch_fn=detector.gather_cached)
  return dict(data=(bparams, jnp.asarray(images), jnp.asarray(feats["train_views"])),
              batch_fn=detector.recompute_features(backbone.features), n_cached=feats["train_views"].shape[1])


def injected_mask(split) -> np.ndarray:
  """Which training images were injected (known to the evaluation only, never to the cleaning)."""
  return np.isin(np.asarray(split.train.ids), np.asarray(split.injected_ids, dtype=object))


def final_detector(ctx: cleaning.Context, kept: np.ndarray):
  """The final detector, trained on the kept images only. `train.init='meta'` starts it from meta-parameters
  meta-trained afresh on those same images (never on images removed earlier)."""
  c = ctx.config
  epochs = c.train.meta_epochs * c.train.sub_epochs
  init, info = None, {}
  if c.train.init == "meta":
    log(f"meta-training the final detector's start on {int(kept.sum())} images")
    init, _, info = cleaning.meta_train(ctx, kept, None, (7,))
  log(f"training the final detector on {int(kept.sum())} images for {epochs} epochs")
  params, losses = cleaning.train_flow(ctx, kept, epochs, (5,), init)
  return params, losses, info


def epochs_to_converge(losses: np.ndarray, n_epochs: int, tolerance: float = 0.05) -> int | None:
  """First epoch whose mean loss is within `tolerance` of the whole drop from the first to the last epoch.

  Relative to the run's own last epoch: it says when this run flattened out, not that a longer run would not
  go lower (a 32-epoch run flattens by epoch 25-30; 192 epochs go on lowering the loss until about epoch 150).
  """
  if n_epochs < 2 or len(losses) < n_epochs:
    return None
  per_epoch = np.asarray(losses[:len(losses) // n_epochs * n_epochs]).reshape(n_epochs, -1).mean(1)
  drop = per_epoch[0] - per_epoch[-1]
  return int(np.argmax(per_epoch - per_epoch[-1] <= tolerance * abs(drop))) + 1


REVIEW_BORDERLINE = 12  # kept images with the highest cleaning scores shown beside the removed ones
REVIEW_MAX_REMOVED = 36  # removed images shown at most (highest scores first); all are in suspicious.csv


def stop_rule(config, split) -> str:
  """The stopping rule in force, in words, for results.json."""
  r = config.refine
  cap = f"or after {1 if config.method == 'one_shot' else r.max_iterations} iteration(s)"
  if split.val.n_good and split.val.n_defective:
    return (f"validation AUROC: an iteration holds when its validation AUROC is at most "
            f"{r.val_tolerance_se:g} standard error(s) below the highest so far; keep the set of the latest that "
            f"holds, stop {r.patience} iteration(s) after it; or when nothing is removed; {cap}")
  return f"no labelled validation: until the IQR rule removes nothing, {cap}"


def write_parts(workdir: str, objects: np.ndarray, score: np.ndarray, removed: np.ndarray) -> None:
  """parts.csv: every object (part) ranked by its highest image score (`review.part_scores`), with how many of its
  images there are and how many were removed."""
  table = io.StringIO()
  rows = csv.writer(table, lineterminator="\n")
  rows.writerow(["rank", "object", "score", "images", "removed"])
  for k, (name, top) in enumerate(review.part_scores(objects, score)):
    mine = objects == name
    rows.writerow([k + 1, name, f"{top:.6f}", int(mine.sum()), int((mine & removed).sum())])
  write_atomic(os.path.join(workdir, "parts.csv"), table.getvalue())


def write_review(workdir: str, split, state, kept: np.ndarray, det, objects: list[str] | None = None) -> None:
  """suspicious.csv (every training image ranked by its cleaning score, and the object it shows where the
  dataset knows them: `object_groups`; then parts.csv too) and, given the detector `det`, review.png (the removed
  and the borderline images, largest score first, with its anomaly maps): what an inspector reads. The run draws
  the sheet in clean mode only: maps cost about 8 scorings per image."""
  r = refine.ranking(state.history, kept, state.kept)
  order = np.argsort(-np.nan_to_num(r["score"], nan=-np.inf), kind="stable")
  table = io.StringIO()
  rows = csv.writer(table, lineterminator="\n")  # quotes a file name with a comma in it
  rows.writerow(["rank", "id", "score", "removed", "iteration_removed"] + (["object"] if objects is not None else []))
  for k, i in enumerate(order):
    rows.writerow([k + 1, split.train.ids[i], f"{r['score'][i]:.6f}", int(r["removed"][i]),
                   r["removed_at"][i] if r["removed"][i] else ""] + ([objects[i]] if objects is not None else []))
  write_atomic(os.path.join(workdir, "suspicious.csv"), table.getvalue())
  if objects is not None:
    write_parts(workdir, np.asarray(objects), r["score"], r["removed"])
  if det is None:
    return
  removed = [i for i in order if r["removed"][i]][:REVIEW_MAX_REMOVED]
  borderline = [i for i in order if not r["removed"][i]][:REVIEW_BORDERLINE]
  show = np.asarray(removed + borderline, np.int64)
  if not len(show):
    return
  titles = [f"{split.train.ids[i]}\n{'removed (it. %d)' % r['removed_at'][i] if r['removed'][i] else 'kept'}"
            for i in show]
  review.write(os.path.join(workdir, "review.png"), split.train.images[show], r["score"][show],
               anomaly_maps.maps(det, split.train.images[show]), titles,
               heading=f"{len(removed)} removed and {len(borderline)} borderline kept images, by cleaning score")


def train_and_evaluate(config, workdir: str, overwrite: bool = False) -> dict:
  """One run in `workdir`. Before any backbone runs: `~` expanded in paths, the config validated, the workdir
  locked and checked to be this config's (`workdir.claim`; `overwrite` clears another config's outputs first),
  and every check that needs the data made (`config_check.check_feasible`). A finished results.json is never
  replaced by this run's placeholder."""
  from maml_iqr import workdir as workdir_lib  # noqa: PLC0415
  workdir = workdir_lib.expand_path(workdir)
  config = config_check.expand_paths(config)
  config_check.validate(config)
  config_check.check_workdir(workdir)
  workdir_lib.claim(workdir, config, overwrite)
  timings, start, cache_before = {}, time.time(), xla_flags.compile_cache_use()
  backbone = backbones.from_config(config.backbone)
  bparams = backbone.load()
  if not config.cache_dir:
    config = config.copy_and_resolve_references()
    with config.unlocked():
      config.cache_dir = os.path.join(workdir, "cache")
  dataset = readers.read_config(config, backbone.input_size)
  split = contaminate(dataset, config.noise.ratio, config.noise.mode, config.noise.overlap, config.seed,
                      config.noise.on_shortage, config.noise.val_fraction)
  warnings = config_check.check_feasible(config, split)
  timings["data_s"] = round(time.time() - start, 2)
  log(dataset.summary())
  log(f"contamination: {split.summary()}")
  for warning in warnings:
    log(f"WARNING: {warning}")
  results = {
      "dataset": dataset.name, "category": dataset.category, "method": config.method, "tag": config.tag,
      "seed": config.seed,
      "backbone": backbone.name, "noise": {"ratio": config.noise.ratio, "mode": config.noise.mode,
                                           "overlap": config.noise.overlap},
      "contamination": split.summary(), "injected_ids": list(split.injected_ids), "status": "data",
      "warnings": warnings, "config": config.to_dict(), "versions": versions.versions(), "timings": timings,
  }
  workdir_lib.bind(workdir, config)
  workdir_lib.write_results(workdir, results)

  t = time.time()
  feats = split_features(config, backbone, bparams, dataset, split)
  timings["features_s"] = round(time.time() - t, 2)
  if config.method == "patch_iqr":  # its scorers read patch distance tables, computed once for the run
    t = time.time()
    log(f"patch features and distances of {len(split.train)} training and {len(split.val)} validation images")
    groups = object_groups(dataset, list(split.train.ids) + list(split.val.ids))
    if groups is not None:
      log(f"an image's neighbours are images of other objects only ({len(set(groups))} objects)")
    feats.update(patches.cached_tables(config, backbone, bparams, *patch_images(config, backbone, dataset, split),
                                       f"{dataset.name}_{dataset.category}", groups))
    timings["patch_distances_s"] = round(time.time() - t, 2)
  flow = detector.make_flow(config, backbone.feature_dim)
  feats = dict(feats, train=jnp.asarray(feats["train"]))
  writer = metric_writer.open_writer(workdir)
  train_groups = object_groups(dataset, split.train.ids)
  ctx = cleaning.Context(config, flow, feats, training_data(config, feats, backbone, bparams, split.train.images),
                         writer, None if train_groups is None else np.asarray(train_groups))

  t = time.time()
  injected = injected_mask(split)
  state = None
  kept = np.ones(len(split.train), bool)
  if config.method != "differnet":
    state = cleaning.refine(ctx, os.path.join(workdir, "checkpoints", "refine"), len(split.train),
                            split.val.labels, injected, split.train.ids)
    kept = state.final_kept()
  timings["refine_s"] = round(time.time() - t, 2)

  t = time.time()
  params, losses, final_meta = final_detector(ctx, kept)
  epochs = config.train.meta_epochs * config.train.sub_epochs
  timings["final_train_s"] = round(time.time() - t, 2)
  t = time.time()
  has_test = len(split.test) > 0  # no test set: clean mode (a user's folder, cleaned whole)
  test_scores = detector.score(flow, params, feats["test"], config.score.kind)
  timings["test_s"] = round(time.time() - t, 2)
  # The final detector as a folder `launch.predict` loads, with its operating threshold (saved_model), and the
  # pixel AUROC of its anomaly maps on test images that have masks (at most anomaly_maps.PIXEL_AUROC_MAX_IMAGES).
  t = time.time()
  model_dir = os.path.join(workdir, "model")
  val_scores = detector.score(flow, params, feats["val"], config.score.kind)
  threshold = saved_model.operating_threshold(
      split.val.labels, val_scores,
      lambda: detector.score(flow, params, feats["train_eval"][kept], config.score.kind))  # only when needed
  saved_model.save(model_dir, config, backbone, params, threshold,
                   {"dataset": dataset.name, "category": dataset.category, "method": config.method,
                    "seed": config.seed, "n_train": int(kept.sum())})
  timings["model_s"] = round(time.time() - t, 2)
  t = time.time()
  pixel_images = config.score.pixel_auroc_images
  pixel_auroc = None if split.test.masks is None or not has_test or not pixel_images else \
      anomaly_maps.pixel_auroc_of(saved_model.load(model_dir), split.test.images, split.test.masks, pixel_images)
  timings["pixel_auroc_s"] = round(time.time() - t, 2)
  if state is not None:
    t = time.time()
    write_review(workdir, split, state, kept, saved_model.load(model_dir) if not has_test else None, train_groups)
    timings["review_s"] = round(time.time() - t, 2)
  timings["total_s"] = round(time.time() - start, 2)
  # What the compilation cache (maml_iqr/xla_flags.py) answered during this run, where it is on.
  timings.update({k: round(v - cache_before[k], 1) for k, v in xla_flags.compile_cache_use().items()})
  labels = split.test.labels
  results.update({
      "status": "done",
      "auroc": metrics.auroc(labels, test_scores) if has_test else None,
      "aupr": metrics.aupr(labels, test_scores) if has_test else None,
      "f1_max": metrics.f1_max(labels, test_scores) if has_test else None,
      # The final detector on the labelled validation images: what choices between runs may be made on.
      "validation_auroc": metrics.auroc(split.val.labels, val_scores) if len(np.unique(split.val.labels)) == 2
                          else None,
      "n_final_train": int(kept.sum()),
      "removal": {"n_removed": int((~kept).sum()), "removed_injected": int((injected & ~kept).sum()),
                  "removed_good": int((~injected & ~kept).sum()),
                  "recall": float((injected & ~kept).sum() / max(injected.sum(), 1)) if injected.any() else None,
                  "precision": float((injected & ~kept).sum() / max((~kept).sum(), 1)) if (~kept).any() else None,
                  "good_lost": float((~injected & ~kept).sum() / max((~injected).sum(), 1))},
      "stop_reason": state.stop_reason if state else "",
      "stop_rule": stop_rule(config, split) if state else None,
      "best_iteration": state.best_iteration if state else None,
      "refinement": [{k: v for k, v in h.items() if k not in ("kept_before",)} for h in state.history]
                    if state else [],
      "final_init": {"init": config.train.init, **final_meta},
      "final_train_loss": float(np.mean(losses[-max(1, len(losses) // 10):])) if len(losses) else None,
      "final_epochs_to_converge": epochs_to_converge(losses, epochs),
      "test_scores": [round(float(s), 6) for s in test_scores], "test_labels": labels.tolist(),
      "model": {"path": "model", "threshold": threshold},
      "pixel_auroc": pixel_auroc,
  })
  write_json(os.path.join(workdir, "results.json"), results)
  report.write(workdir, results)
  writer.close()
  return results


def main(config, workdir: str, overwrite: bool = False) -> None:
  """`launch.main`'s run. A user's error (`workdir.user_errors`: config, data, weights, workdir, a diverging
  loss) ends in one line `error: ...` on stderr and exit code 2, with results.json `status: failed` (unless it
  holds a finished run, or the workdir is another run's). SIGTERM or SIGINT stop the run at once: exit code
  128 + the signal, the last checkpoint kept, the same command resumes."""
  import sys  # noqa: PLC0415
  from maml_iqr import workdir as workdir_lib  # noqa: PLC0415
  workdir = workdir_lib.expand_path(workdir)
  try:
    with workdir_lib.stop_on_signals():
      results = train_and_evaluate(config, workdir, overwrite)
  except workdir_lib.Interrupted as e:
    log(f"WARNING: {e}: checkpoints in {workdir} are kept; run the same command again to resume")
    raise SystemExit(workdir_lib.exit_code(e)) from None
  except workdir_lib.user_errors() as e:
    workdir_lib.record_failure(workdir, e)
    print(f"error: {e}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None
  finally:
    workdir_lib.release(workdir)
  if results["auroc"] is None:  # clean mode: nothing to test against
    measured = f"(clean mode): {results['removal']['n_removed']} images removed, ranked in {workdir}/suspicious.csv"
  else:
    measured = f"at noise {results['noise']['ratio']}: test AUROC {results['auroc']:.4f}"
  log(f"done: {results['method']} on {results['dataset']}/{results['category']} {measured}; results in "
      f"{workdir}/results.json, report in {workdir}/report.md")
