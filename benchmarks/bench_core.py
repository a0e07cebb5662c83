"""Throughput, compile time, memory and share of the machine's peak for the pipeline's hot paths.

  python -m benchmarks.bench_core --out=bench.json [--quick] [--only=peak,backbone,train,score,maml]

Sections: (g) `peak` measured matmul/conv GFLOP/s, the yardstick for every other figure; (a) `backbone`
views/s through `features.extract`'s jitted call (view generation included) and through the raw
`backbone.features`; (b) `train` flow samples/s via `detector.make_train_chunk` (what `detector.train`
runs); (c) `score` images/s via `detector.score` at 64 views; (d) `maml` one meta-step (`cleaning._meta_step`) vs
tasks and inner steps; (e) compile time of each jitted function; (f) host/device peak memory.
FLOPs: backbones by XLA's cost analysis of one view (no `lax.map` loop, so nothing is under-counted), the
flow analytically (6 * params * samples per train step, 2 * params * samples to score).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from benchmarks import common
from configs.base import base
from maml_iqr import cleaning, detector, maml, xla_flags
from maml_iqr import features as features_lib
from maml_iqr.models import alexnet, backbones
from maml_iqr.models import flow as flow_lib

SECTIONS = ("peak", "backbone", "train", "score", "maml")
# (name, dim, hidden, n_blocks): DifferNet's flow on AlexNet features, and configs/default.py:table's on Lite0.
FLOW_SIZES = (("differnet", 768, 2048, 8), ("default", 472, 512, 8))
QUICK_FLOW_SIZES = (("differnet", 768, 128, 1), ("default", 472, 64, 1))


def alexnet_flops_per_view() -> float:
  """Analytic conv FLOPs (2 * MACs, bias/ReLU/pool ignored) of DifferNet's 3-scale AlexNet at 448."""
  total = 0.0
  for size in (448, 224, 112):
    s = size
    for _, c_in, c_out, k, stride, pad, pool in alexnet._CONVS:  # pylint: disable=protected-access
      s = (s + 2 * pad - k) // stride + 1
      total += 2.0 * s * s * k * k * c_in * c_out
      if pool:
        s = (s - 3) // 2 + 1
  return total


def flow_config(dim_hidden_blocks, batch_size=24, n_views=4):
  """A base() config with the flow at the given size (make_flow/make_optimizer read it)."""
  _, _, hidden, blocks = dim_hidden_blocks
  c = base()
  c.flow.hidden, c.flow.n_blocks = hidden, blocks
  c.train.batch_size, c.train.n_views = batch_size, n_views
  return c


def bench_backbones(args, peak) -> list[dict]:
  """(a) views/s of each backbone, with the view generation of `features.extract` and without it."""
  rows = []
  plans = {"efficientnet_lite0": [(1, 2)] if args.quick else [(2, 4), (8, 4), (8, 16)],
           "alexnet": [(1, 2)] if args.quick else [(2, 4), (8, 4)]}
  rng = np.random.default_rng(0)
  for name, weights in (("efficientnet_lite0", None), ("alexnet", "random")):
    bb = backbones.get_backbone(name, weights)
    params = bb.load()
    s = bb.input_size
    analytic = alexnet_flops_per_view() if name == "alexnet" else None
    note = "real ImageNet weights" if weights is None else \
        "weights_path='random' (untrained; throughput does not depend on weight values)"
    with_views = features_lib._jitted(bb.features, "float32")  # pylint: disable=protected-access  # what extract calls
    raw = jax.jit(bb.features)
    per_view = {}  # mode -> XLA flops of one view, from a compile without loops
    for n_img, n_views in plans[name]:
      images = jnp.asarray(rng.integers(0, 256, (n_img, s, s, 3), np.uint8))
      views = jnp.asarray(features_lib.random_view_params(rng, n_img, n_views, 180.0, 0.1, 0.1, 0.1))
      floats = jnp.asarray(rng.random((n_img * n_views, s, s, 3), np.float32))
      b = n_img * n_views
      for mode, fn, fargs in (("with_views", with_views, (params, images, views)),
                              ("raw_features", raw, (params, floats))):
        t, flops, exact = common.measure_jitted(fn, fargs, repeats=2 if args.quick else 5,
                                                budget_s=args.budget_s)
        if exact:
          per_view.setdefault(mode, flops / b)
        elif mode not in per_view:  # lax.map micro-batches: count one view on its own
          one = (params, images[:1], views[:1, :1]) if mode == "with_views" else (params, floats[:1])
          per_view[mode] = common.xla_flops(fn, *one)
        rows.append({"backbone": name, "weights": note, "mode": mode, "images": n_img, "views_per_image": n_views,
                     "batch_views": b, "input_size": s, "feature_dim": bb.feature_dim, **t,
                     "views_per_s": b / t["median_s"], "xla_flops_per_view": per_view[mode],
                     "analytic_flops_per_view": analytic,
                     **common.rate_fields(per_view[mode] * b, t["median_s"], peak)})
  common.print_table(
      "(a) backbone throughput (alexnet: random weights; speed does not depend on weight values)",
      ["backbone", "mode", "img x views", "views/s", "ms/call", "compile s", "GFLOP/view", "GFLOP/s", "% peak"],
      [[r["backbone"], r["mode"], f"{r['images']}x{r['views_per_image']}", r["views_per_s"],
        1e3 * r["median_s"], r["compile_s"], r["xla_flops_per_view"] / 1e9, r["gflops_per_s"],
        100 * r["fraction_of_peak"]] for r in rows])
  return rows


def masked_chunk(flow, optimizer):
  """The design `detector.train` replaced, kept here to show why: a scan whose padding steps were made no-ops
  by `jnp.where(valid, new, old)` on every weight and Adam moment."""
  adam_step = detector._adam_step(flow, optimizer, detector.gather_cached)  # pylint: disable=protected-access

  def step(carry, inputs):
    params, opt_state, data = carry
    ix, valid = inputs
    new_params, new_opt, loss = adam_step(params, opt_state, data, ix)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(valid, a, b), new, old)
    return (keep(new_params, params), keep(new_opt, opt_state), data), loss

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def chunk(params, opt_state, data, idx, valid):
    (params, opt_state, _), losses = jax.lax.scan(step, (params, opt_state, data), (idx, valid))
    return params, opt_state, losses

  return chunk


def bench_train(args, peak) -> list[dict]:
  """(b) flow training samples/s through `detector.make_train_chunk` (the scan of steps `detector.train` runs),
  beside one call per step (`make_train_step`, its remainder path), the masked scan it replaced, the optimiser
  update alone, and the matmul ceiling at the flow's own shapes (a 96-row matmul cannot reach the big-matmul
  peak)."""
  rows = []
  rng = np.random.default_rng(0)
  for size in (QUICK_FLOW_SIZES if args.quick else FLOW_SIZES):
    name, dim = size[0], size[1]
    config = flow_config(size)
    t_cfg = config.train
    flow = detector.make_flow(config, dim)
    n_params = flow_lib.num_params(dim, config.flow.n_blocks, config.flow.hidden)
    optimizer = detector.make_optimizer(t_cfg)
    n_images = 64
    feats = jnp.asarray(rng.normal(size=(n_images, t_cfg.n_cached_views, dim)).astype(np.float32))
    steps = 2 if args.quick else (4 if name == "differnet" else 16)
    epochs = -(-steps * t_cfg.batch_size // n_images)  # enough epochs of indices for `steps` steps
    idx = np.concatenate([detector.epoch_indices(rng, np.arange(n_images), t_cfg.batch_size, t_cfg.n_views,
                                                 t_cfg.n_cached_views) for _ in range(epochs)])[:steps]
    samples = t_cfg.batch_size * t_cfg.n_views
    chunk, step = detector.make_train_chunk(flow, optimizer), detector.make_train_step(flow, optimizer)
    old = masked_chunk(flow, optimizer)
    state = {"p": detector.init_params(flow, 0)}
    state["o"] = optimizer.init(state["p"])

    def per_step():
      losses = []
      for ix in idx:
        state["p"], state["o"], loss = step(state["p"], state["o"], feats, ix)  # donated: keep the new ones
        losses.append(loss)
      return losses

    def scanned():
      state["p"], state["o"], losses = chunk(state["p"], state["o"], feats, jnp.asarray(idx))
      return losses

    def masked():
      state["p"], state["o"], losses = old(state["p"], state["o"], feats, jnp.asarray(idx), jnp.ones(steps, bool))
      return losses

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def update(p, o):  # the step's optimiser part alone (a constant gradient)
      updates, o = optimizer.update(jax.tree.map(jnp.ones_like, p), o, p)
      return optax.apply_updates(p, updates), o

    def update_only():
      state["p"], state["o"] = update(state["p"], state["o"])
      return state["p"]

    repeats = 2 if args.quick else 3
    t = common.measure(scanned, repeats=repeats, budget_s=args.budget_s)
    t_step = common.measure(per_step, repeats=repeats, budget_s=args.budget_s)
    t_masked = common.measure(masked, repeats=repeats, budget_s=args.budget_s)
    t_update = common.measure(update_only, repeats=repeats, budget_s=args.budget_s)
    ceiling = common.matmul_gflops(samples, config.flow.hidden, config.flow.hidden, quick=args.quick)
    rate = common.rate_fields(6.0 * n_params * samples * steps, t["median_s"], peak)
    rows.append({"size": name, "dim": dim, "hidden": config.flow.hidden, "n_blocks": config.flow.n_blocks,
                 "params": n_params, "batch_images": t_cfg.batch_size, "views_per_image": t_cfg.n_views,
                 "samples_per_step": samples, "steps_per_call": steps, **t,
                 "samples_per_s": samples * steps / t["median_s"], "step_s": t["median_s"] / steps,
                 "one_call_per_step_s": t_step["median_s"] / steps,
                 "masked_scan_step_s": t_masked["median_s"] / steps, "optimizer_update_s": t_update["median_s"],
                 "shape_ceiling_gflops_per_s": ceiling,
                 "fraction_of_shape_ceiling": rate["gflops_per_s"] / ceiling, **rate})
  common.print_table("(b) flow training (Adam, batch 24 images x 4 views = 96 samples/step)",
                     ["size", "params", "samples/s", "s/step", "1 call/step s", "masked s", "Adam s", "compile s",
                      "GFLOP/s", "% peak", "shape GFLOP/s", "% shape"],
                     [[r["size"], r["params"], r["samples_per_s"], r["step_s"], r["one_call_per_step_s"],
                       r["masked_scan_step_s"],
                       r["optimizer_update_s"], r["compile_s"], r["gflops_per_s"], 100 * r["fraction_of_peak"],
                       r["shape_ceiling_gflops_per_s"], 100 * r["fraction_of_shape_ceiling"]] for r in rows])
  return rows


def bench_score(args, peak) -> list[dict]:
  """(c) images/s of `detector.score` (host loop + jitted scorer) at 64 fixed views."""
  rows = []
  rng = np.random.default_rng(0)
  n_views = 64
  for size in (QUICK_FLOW_SIZES if args.quick else FLOW_SIZES):
    name, dim = size[0], size[1]
    config = flow_config(size)
    flow = detector.make_flow(config, dim)
    n_params = flow_lib.num_params(dim, config.flow.n_blocks, config.flow.hidden)
    params = detector.init_params(flow, 0)
    batch = 2 if args.quick else 8
    feats = rng.normal(size=(batch, n_views, dim)).astype(np.float32)
    t = common.measure(lambda: detector.score(flow, params, feats, "z2", batch_size=batch),
                       repeats=2 if args.quick else 5, budget_s=args.budget_s)
    rows.append({"size": name, "dim": dim, "hidden": config.flow.hidden, "n_blocks": config.flow.n_blocks,
                 "params": n_params, "views_per_image": n_views, "batch_images": batch, **t,
                 "images_per_s": batch / t["median_s"],
                 **common.rate_fields(2.0 * n_params * batch * n_views, t["median_s"], peak)})
  common.print_table("(c) scoring (z2, 64 views per image)",
                     ["size", "batch", "images/s", "ms/call", "compile s", "GFLOP/s", "% peak"],
                     [[r["size"], r["batch_images"], r["images_per_s"], 1e3 * r["median_s"], r["compile_s"],
                       r["gflops_per_s"], 100 * r["fraction_of_peak"]] for r in rows])
  return rows


def dense_maml_objective(loss_fn, params, task, cfg):
  """MAML with the adapted weights written at every inner step (`maml.adapt`): what the meta-step ran before the
  low-rank inner loop (`maml_iqr/lowrank.py`), and what it runs for second order or other models."""
  adapted = maml.adapt(loss_fn, params, task["support"], cfg.inner_lr, cfg.inner_steps, cfg.first_order,
                       cfg.normalized)
  return loss_fn(adapted, task["query"])


def bench_maml(args, peak) -> list[dict]:
  """(d) one meta-step (`cleaning._meta_step`, as `cleaning.meta_train` builds it) vs tasks and inner steps, with
  the low-rank inner loop it runs and with the dense one (`dense_maml_objective`) side by side."""
  rows = []
  rng = np.random.default_rng(0)
  size = QUICK_FLOW_SIZES[1] if args.quick else dict((f[0], f) for f in FLOW_SIZES)[args.maml_flow]
  dim = size[1]
  config = flow_config(size)
  flow = detector.make_flow(config, dim)
  n_params = flow_lib.num_params(dim, config.flow.n_blocks, config.flow.hidden)
  m = config.maml
  n_views = config.train.n_views  # views per task image, as cleaning.meta_train draws them
  n_images = 64
  feats = jnp.asarray(rng.normal(size=(n_images, n_views, dim)).astype(np.float32))
  t_key = tuple(sorted(dict(config.train.to_dict(), lr=m.meta_lr).items()))
  support_rows = maml.support_size(m.task_size, m.query_fraction) * n_views
  ceiling = common.matmul_gflops(support_rows, config.flow.hidden, config.flow.hidden, quick=args.quick)
  if args.quick:
    plan = [(1, 1), (2, 2)]
  elif args.maml_flow == "differnet":  # seconds per step: one meta-batch is enough
    plan = [(m.tasks_per_batch, m.inner_steps)]
  else:
    plan = [(t, m.inner_steps) for t in (1, 2, 4, 8, 16)] + [(m.tasks_per_batch, 1)]
  loss_fn = cleaning._task_loss(flow)  # pylint: disable=protected-access
  # Second order runs the dense inner loop only (the low-rank one is first-order); timed last, so the host's peak
  # memory after it is its own.
  runs = [(p, loop, True) for p, loop in itertools.product(plan, ("low_rank", "dense"))]
  runs += [(p, "dense", False) for p in plan] if args.second_order else []
  for (n_tasks, inner), inner_loop, first_order in runs:
    n_tasks = -(-n_tasks // jax.device_count()) * jax.device_count()
    cfg = dataclasses.replace(cleaning.maml_config(config), inner_steps=inner, tasks_per_step=n_tasks,
                              first_order=first_order)
    if inner_loop == "low_rank":  # what cleaning.meta_train runs
      optimizer, step = cleaning._meta_step(flow, cfg, t_key)  # pylint: disable=protected-access
    else:
      optimizer = detector.make_optimizer(ml_collections.ConfigDict(dict(t_key)))
      step = maml.parallel_meta_step(maml.make_meta_step(loss_fn, optimizer, cfg,
                                                         meta_objective=dense_maml_objective))
    s_idx, q_idx = maml.sample_tasks(rng, n_images, n_tasks, m.task_size, m.query_fraction)
    tasks = maml.gather_tasks(feats, s_idx, q_idx)
    state = {"p": detector.init_params(flow, 0)}
    state["o"] = optimizer.init(state["p"])

    def call():
      state["p"], state["o"], out = step(state["p"], state["o"], tasks)
      return out["loss"]

    t = common.measure(call, repeats=2 if args.quick else 3, budget_s=args.budget_s)
    support, query = s_idx.shape[1] * n_views, q_idx.shape[1] * n_views
    flops = 6.0 * n_params * n_tasks * (inner * support + query)  # first order: inner grads + query grad
    rate = common.rate_fields(flops, t["median_s"], peak)
    rows.append({"tasks": n_tasks, "inner_steps": inner, "inner_loop": inner_loop, "first_order": first_order,
                 "host_peak_rss_mb_after": common.host_peak_rss_mb(),
                 "dim": dim, "hidden": config.flow.hidden, "n_blocks": config.flow.n_blocks, "params": n_params,
                 "support_samples": support, "query_samples": query, **t, "step_s": t["median_s"],
                 "s_per_task": t["median_s"] / n_tasks, **rate,
                 "fraction_of_shape_ceiling": rate["gflops_per_s"] / ceiling})
  common.print_table(f"(d) MAML meta-step (flow {dim}/{config.flow.hidden}/{config.flow.n_blocks}, "
                     f"task {m.task_size} images x {n_views} views; a {support}-row matmul at the hidden width "
                     f"runs at {ceiling:.0f} GFLOP/s here)",
                     ["tasks", "inner", "inner loop", "order", "step s", "s/task", "compile s", "GFLOP/s",
                      "% peak", "% shape", "peak RSS MB"],
                     [[r["tasks"], r["inner_steps"], r["inner_loop"], 1 if r["first_order"] else 2, r["step_s"],
                       r["s_per_task"], r["compile_s"],
                       r["gflops_per_s"], 100 * r["fraction_of_peak"], 100 * r["fraction_of_shape_ceiling"],
                       r["host_peak_rss_mb_after"]] for r in rows])
  return rows


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", default="bench.json")
  p.add_argument("--quick", action="store_true", help="tiny sizes: under a minute on a 2-core CPU")
  p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
  p.add_argument("--maml_flow", default="default", choices=[f[0] for f in FLOW_SIZES],
                 help="flow of the maml section: default (472/512, every task count) or differnet (768/2048, 4 tasks)")
  p.add_argument("--second_order", action="store_true",
                 help="maml section: also time second-order MAML (dense inner loop), after the first-order rows")
  p.add_argument("--budget_s", type=float, default=None,
                 help="stop repeating a measurement past this many seconds (at least 2 repeats)")
  args = p.parse_args(argv)
  only = [s for s in args.only.split(",") if s]
  unknown = set(only) - set(SECTIONS)
  if unknown:
    p.error(f"unknown sections {sorted(unknown)}; known {SECTIONS}")
  start = time.time()
  result = {"machine": common.machine_info(),
            "settings": {"quick": args.quick, "sections": only, "maml_flow": args.maml_flow,
                         "second_order": args.second_order},
            "memory": {"host_peak_rss_mb_by_section": {}}}
  print(f"machine: {result['machine']['cpu_model']}, {result['machine']['cpu_usable']} usable CPUs, "
        f"jax {result['machine']['jax_version']} on {result['machine']['devices']}")
  result["peak"] = common.measure_peak(args.quick)  # always: every other figure is a share of it
  peak = result["peak"]["peak_gflops_per_s"]
  common.print_table("(g) measured peak (best repeat)", ["kernel", "shape", "GFLOP/s", "median ms"],
                     [[k, result["peak"][k]["shape"], result["peak"][k]["best_gflops_per_s"],
                       1e3 * result["peak"][k]["median_s"]] for k in ("matmul", "conv")])
  result["memory"]["host_peak_rss_mb_by_section"]["peak"] = common.host_peak_rss_mb()
  benches = {"backbone": bench_backbones, "train": bench_train, "score": bench_score, "maml": bench_maml}
  for name in only:
    if name in benches:
      result[name] = benches[name](args, peak)
      result["memory"]["host_peak_rss_mb_by_section"][name] = common.host_peak_rss_mb()
  # Re-measured at the end: on a shared machine a single early measurement can be low (fractions > 1).
  result["peak_end"] = common.measure_peak(args.quick)
  result["peak_gflops_start_end"] = [peak, result["peak_end"]["peak_gflops_per_s"]]
  result["compile_s"] = {f"{sec}/{i}": r["compile_s"] for sec in benches if sec in result
                         for i, r in enumerate(result[sec])}
  result["memory"]["host_peak_rss_mb"] = common.host_peak_rss_mb()
  result["memory"]["device_memory_stats"] = common.device_memory()
  result["wall_s"] = time.time() - start
  print(f"\n(f) peak host RSS {result['memory']['host_peak_rss_mb']:.0f} MB; device memory stats: "
        f"{result['memory']['device_memory_stats']}; (e) compile times are the 'compile s' columns")
  end = result["peak_end"]["peak_gflops_per_s"]
  print(f"peak GFLOP/s at start {peak:.0f}, at end {end:.0f} (fractions use the start value; a large gap "
        "means other jobs shared the CPU)")
  print(f"wall {result['wall_s']:.1f} s; JSON in {args.out}")
  common.write_json(args.out, result)
  return result


if __name__ == "__main__":
  xla_flags.prepare_process()  # before JAX starts a backend (maml_iqr/xla_flags.py)
  main()
