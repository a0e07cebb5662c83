"""The cleaning methods: fit flows on part of the kept set, score the rest, remove by the IQR rule, repeat.

Every method that removes images is a fit function in `FITTERS`,

  fit(ctx, train_mask, start, stage) -> Fit(carry, scorers, info)

which sees only the images in `train_mask`. `start` is the `carry` the same fold's fit returned the iteration
before (None at the first iteration, or always without `refine.warm_start`); `scorers` are functions of an
image's evaluation-view features (n, V, D) -> (n,), whose mean is the fold's score of an image; `info` joins the
history.

  one_shot   one removal, scored by flows trained on the noisy set at the full detector schedule
  iterative  removal repeated, each time scored by flows trained for `refine.score_epochs` (IRP)
  maml_iqr   removal repeated, scored by flows meta-trained on tasks of the kept images
             (`maml.objective`, e.g. MAML) and adapted by the very inner loop the objective trained for, on
             `maml.score_tasks` support sets
  gaussian_iqr  removal repeated, scored by a Ledoit-Wolf Gaussian on the mean of each image's evaluation views
             (`gaussian.py`); nothing is trained, so an iteration takes a fraction of a second
  patch_iqr  removal repeated, scored by patch-level nearest neighbours among the kept images (`patches.py`):
             each image against the others (one fold), from a distance table computed once per run

Scores are cross-fitted: the training images are split once, by the seed, into `refine.folds` folds, and fold
f is scored by a fit that saw only the other folds' kept images, so a flow never scores an image it was fitted
on, also across iterations when it is warm-started. Each fold's scores are standardised by their own median
and IQR (fits of different folds have different scales) before the pooled IQR rule; validation scores take the
same standardisation and are averaged over folds. The controller (`refine`) checkpoints after every iteration.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from maml_iqr import detector, gaussian, maml, metric_writer, patches
from maml_iqr.checkpoint import Checkpointer
from maml_iqr.common import log, stage_rng
from maml_iqr.data.images import DataError
from maml_iqr.refine import RefineState, refine_step
from maml_iqr.workdir import raise_if_stopped


@dataclasses.dataclass(frozen=True)
class Context:
  """What every fit reads: the run's config, the flow module, the features
  ({'train' (N, K, D) cached training views, 'train_eval' (N, V, D), 'val' (M, V, D)}), `train_data` (the
  keyword arguments `detector.train` reads its rows with), the TensorBoard writer of the run's curves, and the
  object each training image shows where the dataset knows them (`Dataset.groups`; else None)."""
  config: Any
  flow: Any
  feats: dict
  train_data: dict
  writer: Any = metric_writer.NullWriter()
  groups: np.ndarray | None = None


def _tag(kind: str, stage: tuple) -> str:
  return f"{kind}/{'/'.join(map(str, stage))}"


@dataclasses.dataclass
class Fit:
  """A fold's fit: what carries to the next iteration, its scorers, what it logs, and (optionally) the scores of
  its own images each by a fit without that image, which replace the scorers' for them when nothing is held out."""
  carry: Any
  scorers: list
  info: dict = dataclasses.field(default_factory=dict)
  own_scores: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------- plain training

def placed(params):
  """A copy of `params` replicated over the task mesh, where the meta-step returns them: every jitted step sees
  one input type whatever made the params (an init, a meta-step, a training run), so none is compiled twice."""
  return jax.device_put(jax.tree.map(jnp.copy, params), NamedSharding(maml.task_mesh(), PartitionSpec()))


def train_flow(ctx: Context, mask: np.ndarray, epochs: int, stage: tuple, params=None):
  """DifferNet training for `epochs` epochs on the images in `mask`; `params=None` starts from a fresh init.
  Returns params and the per-step losses."""
  c = ctx.config
  params = placed(detector.init_params(ctx.flow, c.seed) if params is None else params)
  params, _, losses = detector.train(ctx.flow, params, detector.make_optimizer(c.train), kept=np.flatnonzero(mask),
                                     epochs=epochs, rng=stage_rng(c.seed, *stage), t=c.train,
                                     label="/".join(map(str, stage)), **ctx.train_data)
  for epoch, loss in enumerate(np.asarray(losses).reshape(epochs, -1).mean(1)):
    ctx.writer.scalar(_tag("detector_loss", stage), loss, epoch)
  return params, losses


def flow_scorer(ctx: Context, params) -> Callable[[np.ndarray], np.ndarray]:
  """The flow with `params` as a scorer: `score.kind` averaged over an image's evaluation views."""
  return lambda feats: detector.score(ctx.flow, params, feats, ctx.config.score.kind)


def fit_trained(ctx: Context, mask: np.ndarray, start, stage: tuple) -> Fit:
  """A flow trained on the mask: `refine.score_epochs` (iterative) or the full detector schedule (one_shot)."""
  c = ctx.config
  epochs = c.refine.score_epochs if c.method == "iterative" else c.train.meta_epochs * c.train.sub_epochs
  params, losses = train_flow(ctx, mask, epochs, stage, start)
  return Fit(params, [flow_scorer(ctx, params)], {"train_loss": float(np.mean(losses[-max(1, len(losses) // 10):]))})


def fit_gaussian(ctx: Context, mask: np.ndarray, start, stage: tuple) -> Fit:
  """gaussian_iqr: a Gaussian on the mask's images' mean evaluation-view features; an image scores its
  Mahalanobis distance, with `refine.leave_one_out` each of the mask's own images from the Gaussian of the
  others (of the other objects', where the dataset knows them: `ctx.groups`). Nothing carries over (`start` is
  always None: refine.warm_start is refused)."""
  del start, stage
  rows = ctx.feats["train_eval"][np.flatnonzero(mask)].mean(1)
  mean, precision = gaussian.fit(rows)
  own = None
  if ctx.config.refine.leave_one_out:
    own = (gaussian.leave_one_out(rows) if ctx.groups is None else
           gaussian.leave_groups_out(rows, np.asarray(ctx.groups)[np.flatnonzero(mask)]))
  return Fit(None, [lambda feats: gaussian.mahalanobis(mean, precision, np.asarray(feats).mean(1))], own_scores=own)


def fit_patches(ctx: Context, mask: np.ndarray, start, stage: tuple) -> Fit:
  """patch_iqr: the mask's images are the memory; its scorer reads rows of a patch distance table (`SCORED`)
  and reduces them over the memory's columns. A training image is never its own neighbour (the table's
  diagonal is inf), so one fold scores every image by the others."""
  del start, stage
  memory = np.flatnonzero(mask)

  def scorer(d):
    scores = patches.image_scores(np.asarray(d)[:, :, memory])
    if not np.all(np.isfinite(scores)):  # only images of its own object left: removals emptied the others
      raise DataError(f"patch_iqr: {int((~np.isfinite(scores)).sum())} image(s) have fewer than {patches.K} kept "
                      "images of other objects to be scored against (data.object_pattern); give more objects, or "
                      "lower refine.max_remove_total")
    return scores
  return Fit(None, [scorer])


# --------------------------------------------------------------------------------------------- meta-learning

def _task_loss(flow):
  """The flow's NLL on rows of any leading shape (..., D): MAML's `loss_fn(params, batch)`."""
  return lambda p, x: detector.loss_fn(flow, p, x.reshape(-1, x.shape[-1]))


def maml_config(config) -> maml.MamlConfig:
  m = config.maml
  return maml.MamlConfig(inner_lr=m.inner_lr, inner_steps=m.inner_steps, first_order=m.first_order,
                         meta_lr=m.meta_lr, tasks_per_step=m.tasks_per_batch, task_size=m.task_size,
                         query_fraction=m.query_fraction, objective=m.objective,
                         normalized=m.inner_update == "normalized")


@functools.lru_cache(maxsize=None)
def _meta_step(flow, cfg: maml.MamlConfig, optimizer_settings: tuple):
  """The jitted, device-parallel meta step and its optimiser; cached so that folds and iterations reuse one
  compile."""
  optimizer = detector.make_optimizer(ml_collections.ConfigDict(dict(optimizer_settings)))
  return optimizer, maml.parallel_meta_step(maml.make_meta_step(_task_loss(flow), optimizer, cfg))


@functools.lru_cache(maxsize=None)
def _diagnostics(flow, cfg: maml.MamlConfig):
  return jax.jit(lambda p, tasks: maml.diagnostics(_task_loss(flow), p, tasks, cfg))


@functools.lru_cache(maxsize=None)
def _adapt(flow, cfg: maml.MamlConfig):
  """The inner loop as the meta-objective trains it: `inner_steps` steps of `maml.inner_update` at `inner_lr` on
  a support set."""
  return jax.jit(lambda p, support: maml.adapt(_task_loss(flow), p, support, cfg.inner_lr, cfg.inner_steps, True,
                                               cfg.normalized))


def task_rows(ctx: Context, rng: np.random.Generator, image_idx: np.ndarray) -> jax.Array:
  """Rows of a batch of task images, each bringing `train.n_views` of its cached views, as a training batch
  does: (..., n_views, D)."""
  feats, n_views = ctx.feats["train"], ctx.config.train.n_views
  views = np.argsort(rng.random(image_idx.shape + (feats.shape[1],)), -1)[..., :n_views]
  return feats[jnp.asarray(image_idx)[..., None], jnp.asarray(views)]


def meta_steps(config, n_images: int) -> tuple[int, int]:
  """(tasks per step, steps): tasks a multiple of the device count; `maml.meta_epochs` passes over the images."""
  m = config.maml
  n_dev = jax.device_count()
  n_tasks = -(-m.tasks_per_batch // n_dev) * n_dev
  return n_tasks, m.meta_epochs * max(1, -(-n_images // (n_tasks * m.task_size)))


def meta_train(ctx: Context, mask: np.ndarray, params, stage: tuple):
  """`maml.meta_epochs` of meta-training on tasks of the images in `mask`, from `params` (None: a fresh init),
  after `maml.pretrain_epochs` epochs of the detector's plain training on the same images (a flow worth
  adapting, at a fraction of a meta-step's cost per image; 0: none).

  Returns the meta-parameters, the meta-losses, and the inner loop's diagnostics (`maml.diagnostics`; {} when
  `config.maml.diagnostics` is off) on the tasks of the last meta-step, at the parameters it starts from. One
  diagnosed step costs about two meta-steps: at four steps per fit they took a fifth of a maml_iqr iteration
  (benchmarks/profile_iteration.py).
  """
  c = ctx.config
  m = c.maml
  cfg = maml_config(c)
  if m.pretrain_epochs:
    params, _ = train_flow(ctx, mask, m.pretrain_epochs, (8, *stage), params)
  params = placed(detector.init_params(ctx.flow, c.seed) if params is None else params)
  optimizer, step = _meta_step(ctx.flow, cfg, tuple(sorted(dict(c.train.to_dict(), lr=m.meta_lr).items())))
  diagnose = _diagnostics(ctx.flow, cfg)
  opt_state = optimizer.init(params)
  idx = np.flatnonzero(mask)
  n_tasks, steps = meta_steps(c, len(idx))
  rng = stage_rng(c.seed, 3, *stage)
  losses, diag = [], {}
  start = last = time.time()
  for i in range(steps):
    raise_if_stopped()
    if time.time() - last > 20:
      last = time.time()
      log(f"  meta-train {'/'.join(map(str, stage))}: step {i}/{steps}, meta-loss {np.mean(losses[-20:]):.4f}, "
          f"{(last - start) / i * (steps - i):.0f} s left")
    s_idx, q_idx = maml.sample_tasks(rng, idx, n_tasks, m.task_size, m.query_fraction)
    rows = task_rows(ctx, rng, np.concatenate([s_idx, q_idx], 1))  # (tasks, task_size, n_views, D)
    tasks = {"support": rows[:, :s_idx.shape[1]], "query": rows[:, s_idx.shape[1]:]}
    if m.diagnostics and i == steps - 1:
      diag = {k: float(v) for k, v in diagnose(params, tasks).items()}
      ctx.writer.scalars(i, {_tag(f"maml_{k}", stage): v for k, v in diag.items()})
    params, opt_state, out = step(params, opt_state, tasks)
    losses.append(float(out["loss"]))
    if not np.isfinite(losses[-1]):
      raise FloatingPointError(f"meta-training {stage}: the meta-loss became non-finite at step {i}; lower "
                               "--config.maml.meta_lr or --config.maml.inner_lr")
  for epoch, loss in enumerate(np.asarray(losses).reshape(m.meta_epochs, -1).mean(1)):
    ctx.writer.scalar(_tag("maml_meta_loss", stage), loss, epoch)
  return params, losses, diag


def adapted_flows(ctx: Context, meta_params, pool: np.ndarray, n_flows: int, n_support: int, stage: tuple):
  """Yields (support, adapted parameters) for `n_flows` support sets of `n_support` images drawn from the indices
  in `pool`, each adapted from `meta_params` by the inner loop the meta-objective trains. A generator, so that an
  ensemble of many adapted flows is scored one flow at a time."""
  rng = stage_rng(ctx.config.seed, 4, *stage)
  supports = np.stack([rng.choice(pool, n_support, replace=False) for _ in range(n_flows)])
  adapt = _adapt(ctx.flow, maml_config(ctx.config))
  for s in supports:
    yield s, adapt(meta_params, task_rows(ctx, rng, s))


def adapted_scorers(ctx: Context, meta_params, mask: np.ndarray, stage: tuple) -> list:
  """The meta-parameters adapted by the inner loop to `maml.score_tasks` support sets drawn from the images in
  `mask`, each of a task's support size: exactly the adaptation the meta-objective was trained for."""
  m = ctx.config.maml
  flows = adapted_flows(ctx, meta_params, np.flatnonzero(mask), m.score_tasks,
                        maml.support_size(m.task_size, m.query_fraction), stage)
  return [flow_scorer(ctx, params) for _, params in flows]


def fit_meta(ctx: Context, mask: np.ndarray, start, stage: tuple) -> Fit:
  """maml_iqr: meta-train on tasks of the mask's images, then adapt to support sets of them to score."""
  params, losses, diag = meta_train(ctx, mask, start, stage)
  n = max(1, len(losses) // max(ctx.config.maml.meta_epochs, 1))
  info = dict(diag, meta_loss_first_epoch=float(np.mean(losses[:n])), meta_loss_last_epoch=float(np.mean(losses[-n:])))
  return Fit(params, adapted_scorers(ctx, params, mask, stage), info)


FITTERS: dict[str, Callable[..., Fit]] = {"one_shot": fit_trained, "iterative": fit_trained, "maml_iqr": fit_meta,
                                          "gaussian_iqr": fit_gaussian, "patch_iqr": fit_patches}

# The `ctx.feats` tables a method's scorers read, for the training and the validation images.
SCORED = {"patch_iqr": ("train_patch_d", "val_patch_d")}
EVAL_FEATURES = ("train_eval", "val")


# ------------------------------------------------------------------------------------------------- scoring

def mean_score(scorers: list, feats) -> np.ndarray:
  return np.mean([score(feats) for score in scorers], axis=0)


def min_fit_images(config) -> int:
  """The fewest images a fit may be given: a MAML task's worth for maml_iqr (tasks are drawn without
  replacement), two for a Gaussian (three scored leave-one-out), K + 1 for patch_iqr (K others than the image
  scored), one otherwise. Removals stop short of it (`refine.select_removals`)."""
  return {"maml_iqr": config.maml.task_size, "gaussian_iqr": 3 if config.refine.leave_one_out else 2,
          "patch_iqr": patches.K + 1}.get(config.method, 1)


def fold_assignment(config, n: int) -> np.ndarray:
  """Fold of every training image, fixed for the whole run (so a warm-started fold fit never sees its fold).
  Images are dealt one by one even where the dataset knows its objects: folds holding whole objects removed fewer
  injected images by tile (README, "Captures of one object are not each other's neighbours")."""
  return stage_rng(config.seed, 6).permutation(n) % config.refine.folds


def robust_standardise(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
  """(scores - median) / IQR of `reference`: puts the folds' fits on one scale without letting the outliers
  being looked for set it."""
  q1, med, q3 = np.percentile(reference, [25, 50, 75])
  return (scores - med) / max(q3 - q1, 1e-12)


def score_iteration(ctx: Context, kept: np.ndarray, fold_of: np.ndarray, carries: list, iteration: int):
  """One refinement iteration's cross-fitted, standardised scores of the kept training images and of the
  validation set. Returns (carries, train_scores (N,), val_scores (M,), info averaged over folds)."""
  c = ctx.config
  n_folds = c.refine.folds
  fit = FITTERS[c.method]
  train_in, val_in = (ctx.feats[k] for k in SCORED.get(c.method, EVAL_FEATURES))
  train_scores = np.zeros(len(kept), np.float32)
  val_scores = np.zeros(val_in.shape[0], np.float32)
  infos, new_carries = [], []
  for f in range(n_folds):
    fit_on = kept & (fold_of != f) if n_folds > 1 else kept
    target = kept & (fold_of == f) if n_folds > 1 else kept
    out = fit(ctx, fit_on, carries[f] if c.refine.warm_start else None, (iteration, f))
    scores = (out.own_scores if out.own_scores is not None  # only without folds (config_check)
              else mean_score(out.scorers, train_in[np.flatnonzero(target)]))
    train_scores[target] = robust_standardise(scores, scores)
    if len(val_scores):
      val_scores += robust_standardise(mean_score(out.scorers, val_in), scores) / n_folds
    new_carries.append(out.carry if c.refine.warm_start else None)
    infos.append(out.info)
  info = {k: float(np.mean([i[k] for i in infos])) for k in infos[0]} if infos and infos[0] else {}
  return new_carries, train_scores, val_scores, info


# ---------------------------------------------------------------------------------------------- controller

def refine(ctx: Context, checkpoint_dir: str, n_train: int, val_labels: np.ndarray, injected: np.ndarray,
           ids: tuple) -> RefineState:
  """The refinement loop, resumable from its last completed iteration; `injected` is used for the history's
  bookkeeping only, never by the cleaning."""
  c = ctx.config
  state = RefineState(np.ones(n_train, bool))
  fold_of = fold_assignment(c, n_train)
  carries = [None] * c.refine.folds
  like = {}  # the checkpoint's layout: the folds' carried params, only when they carry over
  if c.refine.warm_start:
    init = detector.init_params(ctx.flow, c.seed)
    like = {f"fold_{f}": init for f in range(c.refine.folds)}
  ckpt = Checkpointer(checkpoint_dir)
  restored = ckpt.restore_latest(like)
  if restored is not None:
    step, saved, meta = restored
    state = RefineState(np.asarray(meta["kept"], bool), meta["iteration"], meta["history"],
                        meta["best_iteration"], meta["best_val_auroc"], meta["stop_reason"])
    if c.refine.warm_start:
      carries = [saved[f"fold_{f}"] for f in range(c.refine.folds)]
    log(f"resumed refinement after iteration {step} ({int(state.kept.sum())} images kept)")
  r = c.refine
  if c.method == "one_shot":
    r = ml_collections.ConfigDict(r.to_dict())
    r.max_iterations = 1
  try:
    while not state.done:
      raise_if_stopped()
      t0 = time.time()
      carries, train_scores, val_scores, info = score_iteration(ctx, state.kept, fold_of, carries, state.iteration)
      if not (np.all(np.isfinite(train_scores)) and np.all(np.isfinite(val_scores))):
        raise FloatingPointError("refinement: non-finite scores; the last good checkpoint is kept")
      state = refine_step(state, train_scores, val_labels, val_scores, injected, ids, r,
                          fold_of if r.folds > 1 else None, min_fit_images(c))
      h = state.history[-1]
      h["seconds"] = round(time.time() - t0, 2)
      if info:  # refinement[i].meta: the inner loop's diagnostics (maml_iqr); .fit: the plain fits' loss
        h["meta" if c.method == "maml_iqr" else "fit"] = info
      ctx.writer.scalars(h["iteration"], {f"refine/{k}": h[k] for k in (
          "threshold", "n_removed", "n_kept", "removed_injected", "removed_good", "val_auroc")})
      ctx.writer.flush()
      log(f"refine iteration {h['iteration']}: threshold {h['threshold']:.4f}, removed {h['n_removed']} "
          f"({h['removed_injected']} injected, {h['removed_good']} good), kept {h['n_kept']}, "
          f"val AUROC {h['val_auroc']:.4f}{', stop: ' + state.stop_reason if state.done else ''}")
      ckpt.save(state.iteration, {f"fold_{f}": p for f, p in enumerate(carries)} if c.refine.warm_start else {},
                {"kept": state.kept.astype(int).tolist(), "iteration": state.iteration, "history": state.history,
                 "best_iteration": state.best_iteration, "best_val_auroc": state.best_val_auroc,
                 "stop_reason": state.stop_reason})
  finally:
    ckpt.close()
  return state
