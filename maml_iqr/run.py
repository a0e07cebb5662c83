"""One run: read and contaminate the data, cache features, clean the training set, train and test the detector.

`train_and_evaluate(config, workdir)` is what `launch.main` calls. Methods share everything but the cleaning:
  differnet  train on the noisy set as it is
  one_shot   one IQR removal, scored by detectors trained on the noisy set at the full schedule
  iterative  IQR removal repeated, each time scored by freshly trained flows (the predecessor paper, IRP)
  maml_iqr   IQR removal repeated, scored by a MAML meta-learned flow adapted to the kept set (the method)
Scores are cross-fitted over `refine.folds` folds in every method that removes images.
Every refinement iteration checkpoints; a killed run started again with the same --workdir resumes there.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from maml_iqr import config_check, detector, maml, metrics, report
from maml_iqr import features as features_lib
from maml_iqr.checkpoint import Checkpointer
from maml_iqr.data import readers
from maml_iqr.data.contamination import contaminate
from maml_iqr.io import write_atomic, write_json
from maml_iqr.models import backbones
from maml_iqr.refine import RefineState, refine_step


def _rng(config, *stage) -> np.random.Generator:
  """An independent, reproducible host RNG per stage, so no RNG state needs checkpointing."""
  return np.random.default_rng([config.seed, *stage])


def _fingerprint(*parts) -> str:
  return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _log(message: str) -> None:
  print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def cached_features(config, backbone, bparams, dataset, split) -> dict[str, np.ndarray]:
  """Features of every image of the dataset, computed once and shared by all methods, noise levels and seeds.

  Per image: `train.n_cached_views` random views (for training; drawn with `train.view_seed`, so every run of
  the dataset sees the same views) and the `score.n_views` fixed evaluation rotations. Stored in
  `cache_dir` under a fingerprint of everything they depend on; a damaged file is recomputed, never trusted.
  """
  t = config.train
  b = config.backbone
  what = dict(name=b.name, weights_path=b.weights_path, stages=b.stages, **({} if b.dtype == "float32" else
                                                                          dict(dtype=b.dtype)))
  key = _fingerprint(config.data.to_dict(), what,
                     [t.n_cached_views, t.view_seed, t.max_angle, t.brightness, t.contrast, t.saturation],
                     config.score.n_views)
  path = os.path.join(config.cache_dir, f"features_{dataset.name}_{key}.npz")
  store = None
  if os.path.exists(path):
    try:
      with np.load(path) as f:
        store = {k: f[k] for k in f.files}
      _log(f"features from cache {path}")
    except Exception as e:  # noqa: BLE001
      print(f"WARNING: feature cache {path} is unreadable ({e}); recomputing it", flush=True)
  if store is None:
    images = np.concatenate([dataset.train.images, dataset.test.images])
    n = len(images)
    views = features_lib.random_view_params(np.random.default_rng(t.view_seed), n, t.n_cached_views,
                                            t.max_angle, t.brightness, t.contrast, t.saturation)
    _log(f"computing features of {n} images x ({t.n_cached_views} train + {config.score.n_views} evaluation) "
         f"views with {backbone.name}")
    store = {"train_views": views,
             "train": features_lib.extract(backbone, bparams, images, views, label="train views",
                                           dtype=config.backbone.dtype),
             "eval": features_lib.extract(backbone, bparams, images,
                                          features_lib.fixed_view_params(n, config.score.n_views, t.brightness,
                                                                         t.contrast, t.saturation),
                                          label="evaluation views", dtype=config.backbone.dtype)}
    buf = io.BytesIO()
    np.savez(buf, **store)
    write_atomic(path, buf.getvalue())
  row = {i: r for r, i in enumerate(dataset.train.ids + dataset.test.ids)}
  rows = lambda s: np.asarray([row[i] for i in s.ids], np.int64)
  return {"train": store["train"][rows(split.train)], "train_views": store["train_views"][rows(split.train)],
          "train_eval": store["eval"][rows(split.train)],
          "val": store["eval"][rows(split.val)], "test": store["eval"][rows(split.test)]}


def training_data(config, feats, backbone=None, bparams=None, images=None):
  """What `detector.train` reads: the feature cache, or (train.recompute_features) the images and the same
  views, run through the backbone every step as the reference does."""
  if not config.train.recompute_features:
    return dict(data=feats["train"], batch_fn=detector.gather_cached)
  return dict(data=(bparams, jnp.asarray(images), jnp.asarray(feats["train_views"])),
              batch_fn=detector.recompute_features(backbone.features), n_cached=feats["train_views"].shape[1])


def train_detector(config, flow, train_data, kept, epochs, stage, params=None):
  """DifferNet training on the kept images' views; `params=None` starts from a fresh init."""
  params = detector.init_params(flow, config.seed) if params is None else params
  params, _, losses = detector.train(flow, params, detector.make_optimizer(config.train), kept=np.flatnonzero(kept),
                                     epochs=epochs, rng=_rng(config, *stage), t=config.train,
                                     label=f"{'/'.join(map(str, stage))}", **train_data)
  return params, losses


def _task_loss(flow):
  """The flow's NLL on a task's rows of any leading shape (..., D): MAML's `loss_fn(params, batch)`."""
  return lambda p, x: detector.loss_fn(flow, p, x.reshape(-1, x.shape[-1]))


@functools.lru_cache(maxsize=None)
def _meta_step(flow, cfg: maml.MamlConfig, t: tuple):
  """The jitted, device-parallel meta step; cached so that refinement iterations reuse one compile."""
  optimizer = detector.make_optimizer(ml_collections.ConfigDict(dict(t)))  # cached: same object per setting
  return optimizer, maml.parallel_meta_step(maml.make_meta_step(_task_loss(flow), optimizer, cfg))


@functools.lru_cache(maxsize=None)
def _adapt(flow, cfg: maml.MamlConfig):
  return jax.jit(lambda p, x: maml.adapt(_task_loss(flow), p, x, cfg.inner_lr, cfg.inner_steps, True))


def _maml_config(config) -> maml.MamlConfig:
  m = config.maml
  return maml.MamlConfig(inner_lr=m.inner_lr, inner_steps=m.inner_steps, first_order=m.first_order,
                         meta_lr=m.meta_lr, tasks_per_step=m.tasks_per_batch, task_size=m.task_size,
                         query_fraction=m.query_fraction)


def meta_train(config, flow, feats, kept, params, iteration):
  """MAML on tasks of kept images, each image bringing `train.n_views` of its cached views (as a training
  batch does); returns the meta-parameters and the meta-losses."""
  m = config.maml
  meta_opt = dict(config.train.to_dict(), lr=m.meta_lr)
  optimizer, step = _meta_step(flow, _maml_config(config), tuple(sorted(meta_opt.items())))
  opt_state = optimizer.init(params)
  kept_idx = np.flatnonzero(kept)
  n_dev = jax.device_count()
  n_tasks = -(-m.tasks_per_batch // n_dev) * n_dev  # a multiple of the device count
  steps = m.meta_epochs * max(1, -(-len(kept_idx) // (n_tasks * m.task_size)))
  rng = _rng(config, 3, iteration)
  losses = []
  n_views, n_cached = config.train.n_views, feats.shape[1]
  start = last = time.time()
  for i in range(steps):
    if time.time() - last > 20:
      last = time.time()
      print(f"  meta-train {iteration}: step {i}/{steps}, meta-loss {np.mean(losses[-20:]):.4f}, "
            f"{(last - start) / i * (steps - i):.0f} s left", flush=True)
    s_idx, q_idx = maml.sample_tasks(rng, kept_idx, n_tasks, m.task_size, m.query_fraction)
    idx = np.concatenate([s_idx, q_idx], 1)
    views = np.argsort(rng.random(idx.shape + (n_cached,)), -1)[..., :n_views]
    rows = feats[jnp.asarray(idx)[..., None], jnp.asarray(views)]  # (tasks, task_size, n_views, D)
    n_s = s_idx.shape[1]
    tasks = {"support": rows[:, :n_s], "query": rows[:, n_s:]}
    params, opt_state, out = step(params, opt_state, tasks)
    losses.append(float(out["loss"]))
    if not np.isfinite(losses[-1]):
      raise FloatingPointError(f"MAML meta-training: the meta-loss became non-finite at step {i}; lower "
                               "--config.maml.meta_lr or --config.maml.inner_lr")
  return params, losses


ADAPT_IMAGES = 64  # images in the adaptation batch (drawn with replacement when fewer are kept: fixed shape)


def adapt_to_set(config, flow, meta_params, feats, train_data, kept, stage):
  """The meta-learned flow adapted to the kept set: `maml.adapt_epochs` epochs of the detector's optimiser
  from the meta-parameters, or (adapt_epochs = 0) the MAML inner loop on one batch of kept images."""
  if config.maml.adapt_epochs > 0:
    start = jax.tree.map(jnp.copy, meta_params)  # training donates its input; the meta-parameters live on
    return train_detector(config, flow, train_data, kept, config.maml.adapt_epochs, (4, *stage), start)[0]
  kept_idx = np.flatnonzero(kept)
  idx = _rng(config, 4, *stage).choice(kept_idx, size=ADAPT_IMAGES, replace=len(kept_idx) < ADAPT_IMAGES)
  return _adapt(flow, _maml_config(config))(meta_params, feats[idx])


def fit_scorer(config, flow, feats, train_data, kept, iteration, fold, meta):
  """Flow params fitted on `kept` for one method: adapted from the meta-parameters (maml_iqr), trained from
  scratch for refine.score_epochs (iterative), or trained at the full schedule (one_shot)."""
  stage = (2, iteration, fold)
  if config.method == "maml_iqr":
    return adapt_to_set(config, flow, meta, feats["train"], train_data, kept, (iteration, fold))
  epochs = config.refine.score_epochs if config.method == "iterative" else \
      config.train.meta_epochs * config.train.sub_epochs
  return train_detector(config, flow, train_data, kept, epochs, stage)[0]


def score_training_set(config, flow, feats, train_data, kept, iteration, meta):
  """Scores of every training image and of the validation set in one refinement iteration.

  With refine.folds = F > 1 the kept images are split into F seeded folds and each fold is scored by a flow
  fitted on the other folds (cross-fitting): a flow never scores an image it was fitted on, so it cannot have
  learnt to accept a defective image it is asked about. Validation scores are the mean over the F flows.
  """
  if config.method == "maml_iqr":
    meta, _ = meta_train(config, flow, feats["train"], kept, meta, iteration)
  n_folds = config.refine.folds
  kept_idx = np.flatnonzero(kept)
  fold_of = np.full(len(kept), -1)
  fold_of[kept_idx] = _rng(config, 6, iteration).permutation(len(kept_idx)) % n_folds
  train_scores = np.zeros(len(kept), np.float32)
  val_scores = np.zeros(feats["val"].shape[0], np.float32)
  for f in range(n_folds):
    fit_on = kept & (fold_of != f) if n_folds > 1 else kept
    params = fit_scorer(config, flow, feats, train_data, fit_on, iteration, f, meta)
    scores = detector.score(flow, params, feats["train_eval"], config.score.kind)
    target = kept & (fold_of == f) if n_folds > 1 else kept
    train_scores[target] = scores[target]
    val_scores += detector.score(flow, params, feats["val"], config.score.kind) / n_folds
  return meta, train_scores, val_scores


def injected_mask(split) -> np.ndarray:
  """Which training images were injected (known to the evaluation only, never to the cleaning)."""
  return np.isin(np.asarray(split.train.ids), np.asarray(split.injected_ids, dtype=object))


def refine(config, workdir, flow, feats, train_data, split) -> RefineState:
  """The refinement loop, resumable from the last completed iteration."""
  n = len(split.train)
  injected = injected_mask(split)
  state = RefineState(np.ones(n, bool))
  params = detector.init_params(flow, config.seed)  # meta-parameters carried across iterations (maml_iqr)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints", "refine"))
  restored = ckpt.restore_latest(params)
  if restored is not None:
    step, params, meta = restored
    state = RefineState(np.asarray(meta["kept"], bool), meta["iteration"], meta["history"],
                        meta["best_iteration"], meta["best_val_auroc"], meta["stop_reason"])
    _log(f"resumed refinement after iteration {step} ({int(state.kept.sum())} images kept)")
  r = config.refine
  if config.method == "one_shot":
    r = ml_collections.ConfigDict(r.to_dict())
    r.max_iterations = 1
  try:
    while not state.done:
      t0 = time.time()
      params, train_scores, val_scores = score_training_set(config, flow, feats, train_data, state.kept,
                                                            state.iteration, params)
      if not (np.all(np.isfinite(train_scores)) and np.all(np.isfinite(val_scores))):
        raise FloatingPointError("refinement: non-finite scores; the last good checkpoint is kept")
      state = refine_step(state, train_scores, split.val.labels, val_scores, injected, split.train.ids, r)
      h = state.history[-1]
      h["seconds"] = round(time.time() - t0, 2)
      _log(f"refine iteration {h['iteration']}: threshold {h['threshold']:.4f}, removed {h['n_removed']} "
           f"({h['removed_injected']} injected, {h['removed_good']} good), kept {h['n_kept']}, "
           f"val AUROC {h['val_auroc']:.4f}{', stop: ' + state.stop_reason if state.done else ''}")
      ckpt.save(state.iteration, params, {"kept": state.kept.astype(int).tolist(), "iteration": state.iteration,
                                          "history": state.history, "best_iteration": state.best_iteration,
                                          "best_val_auroc": state.best_val_auroc, "stop_reason": state.stop_reason})
  finally:
    ckpt.close()
  return state, params


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


def train_and_evaluate(config, workdir: str) -> dict:
  config_check.validate(config)
  config_check.check_workdir(workdir)
  timings, start = {}, time.time()
  backbone = backbones.get_backbone(config.backbone.name, config.backbone.weights_path or None,
                                    tuple(config.backbone.stages) if config.backbone.name != "alexnet" else None)
  bparams = backbone.load()
  dataset = readers.read(config.data, backbone.input_size)
  split = contaminate(dataset, config.noise.ratio, config.noise.mode, config.noise.overlap, config.seed,
                      config.noise.on_shortage, config.noise.val_fraction)
  timings["data_s"] = round(time.time() - start, 2)
  _log(dataset.summary())
  _log(f"contamination: {split.summary()}")
  results = {
      "dataset": dataset.name, "category": dataset.category, "method": config.method, "tag": config.tag,
      "seed": config.seed,
      "backbone": backbone.name, "noise": {"ratio": config.noise.ratio, "mode": config.noise.mode,
                                           "overlap": config.noise.overlap},
      "contamination": split.summary(), "injected_ids": list(split.injected_ids), "status": "data",
      "config": config.to_dict(), "timings": timings,
  }
  write_json(os.path.join(workdir, "results.json"), results)

  t = time.time()
  if not config.cache_dir:
    config = config.copy_and_resolve_references()
    with config.unlocked():
      config.cache_dir = os.path.join(workdir, "cache")
  feats = cached_features(config, backbone, bparams, dataset, split)
  timings["features_s"] = round(time.time() - t, 2)
  flow = detector.make_flow(config, backbone.feature_dim)
  feats = dict(feats, train=jnp.asarray(feats["train"]))
  train_data = training_data(config, feats, backbone, bparams, split.train.images)

  t = time.time()
  history, stop_reason = [], ""
  kept = np.ones(len(split.train), bool)
  meta_params = None
  if config.method != "differnet":
    state, meta_params = refine(config, workdir, flow, feats, train_data, split)
    history, stop_reason, kept = state.history, state.stop_reason, state.final_kept()
  timings["refine_s"] = round(time.time() - t, 2)

  t = time.time()
  epochs = config.train.meta_epochs * config.train.sub_epochs
  init = meta_params if config.method == "maml_iqr" and config.maml.init_final_from_meta else None
  _log(f"training the final detector on {int(kept.sum())} images for {epochs} epochs")
  params, losses = train_detector(config, flow, train_data, kept, epochs, (5,), init)
  timings["final_train_s"] = round(time.time() - t, 2)
  t = time.time()
  test_scores = detector.score(flow, params, feats["test"], config.score.kind)
  timings["test_s"] = round(time.time() - t, 2)
  timings["total_s"] = round(time.time() - start, 2)
  labels = split.test.labels
  injected = injected_mask(split)
  results.update({
      "status": "done",
      "auroc": metrics.auroc(labels, test_scores), "aupr": metrics.aupr(labels, test_scores),
      "f1_max": metrics.f1_max(labels, test_scores),
      "n_final_train": int(kept.sum()),
      "removal": {"n_removed": int((~kept).sum()), "removed_injected": int((injected & ~kept).sum()),
                  "removed_good": int((~injected & ~kept).sum()),
                  "recall": float((injected & ~kept).sum() / max(injected.sum(), 1)) if injected.any() else None,
                  "precision": float((injected & ~kept).sum() / max((~kept).sum(), 1)) if (~kept).any() else None,
                  "good_lost": float((~injected & ~kept).sum() / max((~injected).sum(), 1))},
      "stop_reason": stop_reason,
      "refinement": [{k: v for k, v in h.items() if k not in ("kept_before",)} for h in history],
      "final_train_loss": float(np.mean(losses[-max(1, len(losses) // 10):])) if len(losses) else None,
      "final_epochs_to_converge": epochs_to_converge(losses, epochs),
      "test_scores": [round(float(s), 6) for s in test_scores], "test_labels": labels.tolist(),
  })
  write_json(os.path.join(workdir, "results.json"), results)
  report.write(workdir, results)
  return results


def main(config, workdir: str) -> None:
  try:
    results = train_and_evaluate(config, workdir)
  except (config_check.ConfigError, readers.DataError, FloatingPointError) as e:
    path = os.path.join(workdir or ".", "results.json")
    if os.path.exists(path):  # say so, so that a failed run does not look like a killed one
      with open(path) as f:
        partial = json.load(f)
      write_json(path, dict(partial, status="failed", error=str(e)))
    raise SystemExit(f"error: {e}") from None
  _log(f"done: {results['method']} on {results['dataset']}/{results['category']} at noise "
       f"{results['noise']['ratio']}: test AUROC {results['auroc']:.4f}; results in {workdir}/results.json, "
       f"report in {workdir}/report.md")
