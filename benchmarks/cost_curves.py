"""How the run's cost grows with its sizes: time vs images N, views K and MAML tasks T.

  python -m benchmarks.cost_curves --out=curves.json [--quick]

Every curve uses the project's own host-side entry points (`detector.score`, `detector.train`,
`cleaning.meta_train`) at configs/default.py:table's flow (472-d Lite0 features, hidden 512, 8 blocks), so the figures
include what the host adds: the last batch of an epoch is filled to the full batch size, `detector.train` runs
16-step chunks plus single steps for the remainder, and `detector.score` pads its last batch. Each curve gets a
least-squares line (intercept + slope * x) as a cost model. Compilation is excluded (one untimed call per shape
first) and reported apart.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from configs import default as default_config
from maml_iqr import cleaning, detector, saved_model, xla_flags


def _config(quick: bool):
  c = default_config.get_config("table")
  if quick:
    c.flow.hidden, c.flow.n_blocks = 64, 1
  return c


def _feats(rng, n, k, dim):
  return rng.normal(size=(n, k, dim)).astype(np.float32)


def _timed(fn, repeats: int) -> tuple[float, float]:
  """(first call s, median of `repeats` later calls s) of a host-side call that returns numpy."""
  t = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return first, float(np.median(times))


def curve_score_vs_n(c, flow, params, rng, ns, repeats) -> dict:
  """`detector.score` of N images at the config's views and batch: one compile serves every N."""
  k, dim = c.score.n_views, flow.dim
  detector.score(flow, params, _feats(rng, 1, k, dim), c.score.kind)  # compile
  pts = []
  for n in ns:
    f = _feats(rng, n, k, dim)
    _, t = _timed(lambda: detector.score(flow, params, f, c.score.kind), repeats)
    pts.append({"n_images": n, "seconds": t, "images_per_s": n / t})
  return {"views": k, "batch_size": saved_model.RUN_FLOW_ROWS, "points": pts,
          "fit_vs_n": common.linear_fit(ns, [p["seconds"] for p in pts])}


def curve_score_vs_k(c, flow, params, rng, ks, n, repeats) -> dict:
  """Scoring time of N images vs views K (each K is a new shape: compile time reported apart)."""
  pts = []
  for k in ks:
    f = _feats(rng, n, k, flow.dim)
    first, t = _timed(lambda: detector.score(flow, params, f, c.score.kind), repeats)
    pts.append({"views": k, "seconds": t, "images_per_s": n / t, "compile_s": max(first - t, 0.0)})
  return {"n_images": n, "points": pts, "fit_vs_k": common.linear_fit(ks, [p["seconds"] for p in pts])}


def _train_epoch(c, flow, params, feats, rng):
  optimizer = detector.make_optimizer(c.train)
  p = jax.tree.map(jnp.copy, params)  # the training step donates its params
  _, _, losses = detector.train(flow, p, optimizer, feats, np.arange(feats.shape[0]), 1, rng, c.train,
                                log_every=1e9)
  return losses


def curve_train_vs_n(c, flow, params, rng, ns, repeats) -> dict:
  """One `detector.train` epoch over N images (24 images x 4 views per step)."""
  k_cached = c.train.n_cached_views
  _train_epoch(c, flow, params, jnp.asarray(_feats(rng, c.train.batch_size, k_cached, flow.dim)), rng)  # compile
  pts = []
  for n in ns:
    f = jnp.asarray(_feats(rng, n, k_cached, flow.dim))
    _, t = _timed(lambda: _train_epoch(c, flow, params, f, rng), repeats)
    steps = -(-n // c.train.batch_size)
    pts.append({"n_images": n, "steps": steps, "seconds": t, "s_per_step": t / steps, "images_per_s": n / t})
  return {"batch_images": c.train.batch_size, "views_per_image": c.train.n_views, "points": pts,
          "fit_vs_n": common.linear_fit(ns, [p["seconds"] for p in pts]),
          "fit_vs_steps": common.linear_fit([p["steps"] for p in pts], [p["seconds"] for p in pts])}


def curve_train_vs_k(c, flow, params, rng, ks, n, repeats) -> dict:
  """One training epoch over N images vs views per image K (samples per step = batch * K)."""
  pts = []
  f = jnp.asarray(_feats(rng, n, c.train.n_cached_views, flow.dim))
  for k in ks:
    ck = c.copy_and_resolve_references()
    ck.train.n_views = k
    first, t = _timed(lambda: _train_epoch(ck, flow, params, f, rng), repeats)
    pts.append({"views": k, "samples_per_step": ck.train.batch_size * k, "seconds": t,
                "compile_s": max(first - t, 0.0)})
  return {"n_images": n, "points": pts, "fit_vs_k": common.linear_fit(ks, [p["seconds"] for p in pts])}


def curve_maml_vs_t(c, flow, params, rng, ts, n, repeats) -> dict:
  """`cleaning.meta_train` for one meta-epoch over N images vs tasks per meta-batch T.

  One meta-epoch is ceil(N / (T * task_size)) steps, so larger T means fewer, bigger steps.
  """
  feats = jnp.asarray(_feats(rng, n, c.train.n_cached_views, flow.dim))
  kept = np.ones(n, bool)
  pts = []
  for t_tasks in ts:
    ct = c.copy_and_resolve_references()
    ct.maml.tasks_per_batch, ct.maml.meta_epochs, ct.maml.pretrain_epochs = t_tasks, 1, 0  # MAML steps only

    def call():
      p = jax.tree.map(jnp.copy, params)  # the meta step donates its params
      return cleaning.meta_train(cleaning.Context(ct, flow, {"train": feats}, {}), kept, p, (0,))[1]

    first, t = _timed(call, repeats)
    n_tasks = -(-t_tasks // jax.device_count()) * jax.device_count()
    steps = max(1, -(-n // (n_tasks * ct.maml.task_size)))
    pts.append({"tasks": n_tasks, "steps": steps, "seconds": t, "step_s": t / steps,
                "compile_s": max(first - t, 0.0)})
  return {"n_images": n, "inner_steps": c.maml.inner_steps, "task_size": c.maml.task_size, "points": pts,
          "fit_step_s_vs_t": common.linear_fit(ts, [p["step_s"] for p in pts])}


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", default="curves.json")
  p.add_argument("--quick", action="store_true", help="tiny flow and few points: seconds on a 2-core CPU")
  args = p.parse_args(argv)
  q = args.quick
  start = time.time()
  c = _config(q)
  if q:
    c.maml.inner_steps = 1
  flow = detector.make_flow(c, 472)
  params = detector.init_params(flow, c.seed)
  rng = np.random.default_rng(0)
  reps = 1 if q else 2
  out = {"machine": common.machine_info(),
         "settings": {"quick": q, "dim": 472, "hidden": c.flow.hidden, "n_blocks": c.flow.n_blocks}}
  print(f"flow 472/{c.flow.hidden}/{c.flow.n_blocks}; machine {out['machine']['cpu_model']}, "
        f"{out['machine']['cpu_usable']} CPUs, jax {out['machine']['jax_version']}")
  out["score_vs_n"] = curve_score_vs_n(c, flow, params, rng, [16, 64] if q else [32, 128, 512, 1024], reps)
  out["score_vs_k"] = curve_score_vs_k(c, flow, params, rng, [1, 8] if q else [1, 8, 16, 64], 32, reps)
  out["train_epoch_vs_n"] = curve_train_vs_n(c, flow, params, rng, [24, 48] if q else [24, 96, 384, 768],
                                             reps)
  out["train_epoch_vs_k"] = curve_train_vs_k(c, flow, params, rng, [1, 4] if q else [1, 2, 4, 8],
                                             48 if q else 96, reps)
  out["maml_epoch_vs_t"] = curve_maml_vs_t(c, flow, params, rng, [1, 2] if q else [1, 2, 4, 8, 16],
                                           20 if q else 40, reps)
  out["memory"] = {"host_peak_rss_mb": common.host_peak_rss_mb(), "device_memory_stats": common.device_memory()}
  out["wall_s"] = time.time() - start

  common.print_table("scoring vs N (detector.score)", ["N", "s", "images/s"],
                     [[x["n_images"], x["seconds"], x["images_per_s"]] for x in out["score_vs_n"]["points"]])
  common.print_table(f"scoring vs K (N={out['score_vs_k']['n_images']})", ["K", "s", "images/s", "compile s"],
                     [[x["views"], x["seconds"], x["images_per_s"], x["compile_s"]]
                      for x in out["score_vs_k"]["points"]])
  common.print_table("training one epoch vs N (detector.train)", ["N", "steps", "s", "s/step", "images/s"],
                     [[x["n_images"], x["steps"], x["seconds"], x["s_per_step"], x["images_per_s"]]
                      for x in out["train_epoch_vs_n"]["points"]])
  common.print_table(f"training one epoch vs views K (N={out['train_epoch_vs_k']['n_images']})",
                     ["K", "samples/step", "s", "compile s"],
                     [[x["views"], x["samples_per_step"], x["seconds"], x["compile_s"]]
                      for x in out["train_epoch_vs_k"]["points"]])
  common.print_table(f"MAML one meta-epoch vs tasks T (cleaning.meta_train, N={out['maml_epoch_vs_t']['n_images']})",
                     ["T", "steps", "s", "s/step", "compile s"],
                     [[x["tasks"], x["steps"], x["seconds"], x["step_s"], x["compile_s"]]
                      for x in out["maml_epoch_vs_t"]["points"]])
  print(f"\nwall {out['wall_s']:.1f} s; JSON in {args.out}")
  common.write_json(args.out, out)
  return out


if __name__ == "__main__":
  xla_flags.prepare_process()  # before JAX starts a backend (maml_iqr/xla_flags.py)
  main()
