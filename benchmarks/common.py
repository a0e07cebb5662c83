"""Shared timing, FLOP-count, machine-info and output helpers for the benchmark scripts.

Timings are steady-state: the first call (trace + compile + one run) is timed apart, then the median of
several blocked calls is the figure; `compile_s` is first call minus that median.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def measure(fn, repeats: int = 5, warmup: int = 1, budget_s: float | None = None) -> dict:
  """Times `fn()` (its result is blocked on). Stops early past `budget_s` once 2 repeats are in.

  `fn` may carry state (donated params): it is called first once, then `warmup` times, then timed.
  """
  t = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times, start = [], time.perf_counter()
  while len(times) < max(repeats, 1):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
    if budget_s is not None and len(times) >= 2 and time.perf_counter() - start > budget_s:
      break
  med = statistics.median(times)
  return {"first_call_s": first, "median_s": med, "min_s": min(times), "max_s": max(times),
          "repeats": len(times), "compile_s": max(first - med, 0.0)}


def measure_jitted(jitted, args, repeats: int = 5, budget_s: float | None = None) -> tuple[dict, float, bool]:
  """Compiles `jitted` for `args` explicitly, then times the executable (`measure`'s fields).

  Returns (timings, XLA flops of one call, whether that count is exact: False when the program has a loop,
  whose body XLA counts once). `first_call_s` includes lower + compile; `lower_compile_s` is that part alone.
  """
  t = time.perf_counter()
  lowered = jitted.lower(*args)
  compiled = lowered.compile()
  lower_compile = time.perf_counter() - t
  t = time.perf_counter()
  jax.block_until_ready(compiled(*args))
  first_run = time.perf_counter() - t
  timings = measure(lambda: compiled(*args), repeats=repeats, warmup=0, budget_s=budget_s)
  timings["first_call_s"] = lower_compile + first_run
  timings["compile_s"] = max(timings["first_call_s"] - timings["median_s"], 0.0)
  timings["lower_compile_s"] = lower_compile
  ca = compiled.cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else {}
  return timings, float((ca or {}).get("flops", 0.0)), "while" not in compiled.as_text()


def xla_flops(jitted, *args) -> float:
  """FLOPs XLA's cost analysis counts for one call (loop bodies, e.g. `lax.map`/`scan`, counted ONCE)."""
  ca = jitted.lower(*args).compile().cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else {}
  return float((ca or {}).get("flops", 0.0))


def host_peak_rss_mb() -> float:
  """Peak resident set size of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
  r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def device_memory() -> dict | None:
  """`memory_stats()` of device 0 (None on CPU, where XLA keeps none)."""
  try:
    stats = jax.devices()[0].memory_stats()
  except Exception:  # noqa: BLE001 - some backends raise instead of returning None
    return None
  return {k: int(v) for k, v in stats.items()} if stats else None


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def machine_info() -> dict:
  """What the figures were measured on: they mean nothing without it."""
  import jaxlib  # pylint: disable=g-import-not-at-top
  d = jax.devices()[0]
  try:
    usable = len(os.sched_getaffinity(0))
  except AttributeError:
    usable = os.cpu_count()
  return {"jax_version": jax.__version__, "jaxlib_version": jaxlib.__version__,
          "backend": jax.default_backend(), "devices": [str(x) for x in jax.devices()],
          "device_kind": d.device_kind, "device_count": jax.device_count(),
          "platform": platform.platform(), "python": platform.python_version(), "cpu_model": _cpu_model(),
          "cpu_count": os.cpu_count(), "cpu_usable": usable,
          "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
          "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def measure_peak(quick: bool) -> dict:
  """The machine's own attainable GFLOP/s: a big f32 matmul and a 3x3 conv, jitted."""
  n = 1024 if quick else 2048
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  mm = jax.jit(jnp.matmul)
  t_mm = measure(lambda: mm(a, b), repeats=3 if quick else 7)
  mm_flops = 2.0 * n ** 3
  batch, hw, c = (8 if quick else 32), 56, 128
  x = jax.random.normal(jax.random.key(2), (batch, hw, hw, c), jnp.float32)
  k = jax.random.normal(jax.random.key(3), (3, 3, c, c), jnp.float32)
  conv = jax.jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                          dimension_numbers=("NHWC", "HWIO", "NHWC")))
  t_conv = measure(lambda: conv(x, k), repeats=3 if quick else 7)
  conv_flops = 2.0 * batch * hw * hw * c * c * 9
  out = {"matmul": {"shape": f"{n}x{n}@{n}x{n}", "flops": mm_flops, **t_mm,
                    "gflops_per_s": mm_flops / t_mm["median_s"] / 1e9},
         "conv": {"shape": f"{batch}x{hw}x{hw}x{c} * 3x3x{c}x{c} SAME", "flops": conv_flops, **t_conv,
                  "gflops_per_s": conv_flops / t_conv["median_s"] / 1e9}}
  # Attainable peak: the best repeat, not the median (other jobs on a shared machine only slow it down).
  for k in ("matmul", "conv"):
    out[k]["best_gflops_per_s"] = out[k]["flops"] / out[k]["min_s"] / 1e9
  out["peak_gflops_per_s"] = max(out["matmul"]["best_gflops_per_s"], out["conv"]["best_gflops_per_s"])
  return out


def matmul_gflops(m: int, k: int, n: int, quick: bool = False, reps: int = 16) -> float:
  """Best-repeat GFLOP/s of f32 (m, k) @ (k, n): the ceiling for a layer of that shape, which for few rows is
  far below the big-matmul peak. `reps` matmuls run in one jitted loop, so a small one is not charged the
  cost of a call (inside the flow's programs it is not either)."""
  a = jax.random.normal(jax.random.key(0), (m, k), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (k, n), jnp.float32)

  @jax.jit
  def loop(a, b):  # a + i: each product differs, so nothing is hoisted out of the loop
    return jax.lax.fori_loop(0, reps, lambda i, acc: acc + (a + i.astype(a.dtype)) @ b, jnp.zeros((m, n)))

  t = measure(lambda: loop(a, b), repeats=3 if quick else 10)
  return 2.0 * m * k * n * reps / t["min_s"] / 1e9


def rate_fields(flops: float, seconds: float, peak_gflops: float) -> dict:
  """Achieved GFLOP/s and its share of the measured peak."""
  g = flops / seconds / 1e9
  return {"flops_per_call": flops, "gflops_per_s": g, "fraction_of_peak": g / peak_gflops}


def linear_fit(xs, ys) -> dict:
  """time ~= intercept + slope * x by least squares: a cost model to extrapolate from."""
  xs, ys = np.asarray(xs, float), np.asarray(ys, float)
  if len(xs) < 2 or np.ptp(xs) == 0:
    return {"slope_s": float("nan"), "intercept_s": float("nan")}
  slope, intercept = np.polyfit(xs, ys, 1)
  return {"slope_s": float(slope), "intercept_s": float(intercept)}


def print_table(title: str, header: list[str], rows: list[list]) -> None:
  """A plain fixed-width table on stdout."""
  def fmt(v):
    if isinstance(v, float):
      return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    return str(v)
  cells = [[fmt(v) for v in r] for r in rows]
  widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
  print(f"\n== {title}")
  print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
  for r in cells:
    print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
  sys.stdout.flush()


def write_json(path: str, obj) -> None:
  """Writes `obj` (NaN/inf become null so the file stays strict JSON)."""
  def clean(o):
    if isinstance(o, dict):
      return {str(k): clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
      return [clean(v) for v in o]
    if isinstance(o, (np.floating, float)):
      return float(o) if np.isfinite(o) else None
    if isinstance(o, np.integer):
      return int(o)
    return o
  d = os.path.dirname(os.path.abspath(path))
  os.makedirs(d, exist_ok=True)
  with open(path, "w") as f:
    json.dump(clean(obj), f, indent=1)


def real_features(c):
  """What the real-data benchmarks share: the config's backbone, its noisy split (seed, noise of `c`), the
  split's features from the cache (`run.split_features`, training views on the device) and a fresh flow module.
  Returns (split, feats, flow)."""
  from maml_iqr import detector, run  # noqa: PLC0415 - jax-heavy, only the real-data benchmarks need it
  from maml_iqr.data import readers  # noqa: PLC0415
  from maml_iqr.data.contamination import contaminate  # noqa: PLC0415
  from maml_iqr.models import backbones  # noqa: PLC0415
  backbone = backbones.from_config(c.backbone)
  bparams = backbone.load()
  dataset = readers.read_config(c, backbone.input_size)
  split = contaminate(dataset, c.noise.ratio, c.noise.mode, c.noise.overlap, c.seed, c.noise.on_shortage,
                      c.noise.val_fraction)
  feats = run.split_features(c, backbone, bparams, dataset, split)
  return split, dict(feats, train=jnp.asarray(feats["train"])), detector.make_flow(c, backbone.feature_dim)


def cell_split(cell: dict, dataset):
  """The split a table cell ran on, rebuilt from its recorded noise settings, or a ValueError if it is not."""
  from maml_iqr.data.contamination import contaminate  # noqa: PLC0415
  n = cell["config"]["noise"]
  split = contaminate(dataset, float(n["ratio"]), n["mode"], n["overlap"], int(cell["seed"]), n["on_shortage"],
                      n["val_fraction"])
  if sorted(split.injected_ids) != sorted(cell["injected_ids"]) or list(split.test.labels) != cell["test_labels"]:
    raise ValueError(f"{cell['method']} at {n['ratio']:.0%} seed {cell['seed']}: the rebuilt split does not match the "
                     "cell's recorded injected images and test labels")
  return split
