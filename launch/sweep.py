"""Reproduce a table: datasets x categories x noise levels x seeds x methods, resumable, with progress.

  python -m launch.sweep --sweep=configs/sweeps/mtd_table.py --workdir=runs/mtd_table

Each cell runs in `<workdir>/<category>/<method>/noise_<r>/seed_<s>` and is skipped when its results.json says
done, so a killed sweep started again continues (a killed cell resumes from its own checkpoints). Cells of
one dataset share one feature cache. `--parallel=N` runs N worker processes on disjoint cells, one device
each where there are several (CUDA_VISIBLE_DEVICES); on one device, cells run one after another in this
process so that compiled steps are reused. At the end (and with `--tables_only`) it writes tables.md,
results.csv and auroc_vs_noise.png into the workdir.
"""
from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
import time

from absl import app, flags
from ml_collections import config_flags

from maml_iqr import run, tables, xla_flags

config_flags.DEFINE_config_file("sweep", None, "Sweep config (configs/sweeps/*.py).", lock_config=False)
flags.DEFINE_string("workdir", None, "Root folder of the sweep's cells and tables.")
flags.DEFINE_integer("parallel", 1, "Worker processes (one per device where there are several).")
flags.DEFINE_string("shard", "", "Internal: 'i/n' runs every n-th cell starting at i.")
flags.DEFINE_bool("tables_only", False, "Only (re)write the tables from finished cells.")
flags.mark_flags_as_required(["sweep", "workdir"])
FLAGS = flags.FLAGS


def load_experiment(spec: str):
  """get_config of 'configs/x.py[:arg]'."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("experiment_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def cells(sweep) -> list[dict]:
  """Every cell; `sweep.variants` (name -> overrides), when present, adds an axis such as k or the views."""
  variants = list(sweep.get("variants", {}).keys()) or [""]
  return [dict(category=c, method=m, noise=n, seed=s, variant=v)
          for c, v, n, s, m in itertools.product(sweep.categories, variants, sweep.noise, sweep.seeds,
                                                 sweep.methods)]


def cell_dir(root: str, cell: dict) -> str:
  method = cell["method"] + (f"_{cell['variant']}" if cell["variant"] else "")
  return os.path.join(root, str(cell["category"]), method, f"noise_{cell['noise']:g}", f"seed_{cell['seed']}")


def is_done(folder: str) -> bool:
  try:
    with open(os.path.join(folder, "results.json")) as f:
      return json.load(f).get("status") == "done"
  except (OSError, ValueError):
    return False


def cell_config(sweep, cell: dict, root: str):
  c = load_experiment(sweep.experiment)
  c.update(sweep.overrides.to_dict())
  if cell["variant"]:
    c.update(sweep.variants[cell["variant"]].to_dict())
    c.tag = cell["variant"]
  if cell["category"] != "-":
    c.data.category = cell["category"]
  c.method, c.noise.ratio, c.seed = cell["method"], float(cell["noise"]), int(cell["seed"])
  c.cache_dir = os.path.join(root, "cache")
  return c


def run_cells(sweep, root: str, todo: list[dict]) -> None:
  total, start, done_now = len(todo), time.time(), 0
  for k, cell in enumerate(todo):
    folder = cell_dir(root, cell)
    if is_done(folder):
      continue
    t = time.time()
    result = run.train_and_evaluate(cell_config(sweep, cell, root), folder)
    done_now += 1
    left = sum(not is_done(cell_dir(root, c)) for c in todo[k + 1:])
    per_cell = (time.time() - start) / done_now
    print(f"[sweep] cell {k + 1}/{total} {cell} AUROC {result['auroc']:.4f} in {time.time() - t:.0f} s; "
          f"{left} left, about {left * per_cell / 60:.1f} min", flush=True)


def main(argv):
  del argv
  sweep, root = FLAGS.sweep, FLAGS.workdir
  os.makedirs(root, exist_ok=True)
  todo = cells(sweep)
  if not FLAGS.tables_only:
    finished = sum(is_done(cell_dir(root, c)) for c in todo)
    print(f"[sweep] {len(todo)} cells, {finished} already done", flush=True)
    if FLAGS.shard:
      i, n = map(int, FLAGS.shard.split("/"))
      run_cells(sweep, root, todo[i::n])
      return
    if FLAGS.parallel > 1:
      import jax
      n_dev = len(jax.devices())
      procs = []
      for i in range(FLAGS.parallel):
        env = dict(os.environ)
        if n_dev > 1 and jax.devices()[0].platform == "gpu":
          env["CUDA_VISIBLE_DEVICES"] = str(i % n_dev)
        procs.append(subprocess.Popen([sys.executable, "-m", "launch.sweep", *sys.argv[1:],
                                       f"--shard={i}/{FLAGS.parallel}", "--parallel=1"], env=env))
      if any(p.wait() for p in procs):
        raise SystemExit("a sweep worker failed; run the same command again to continue")
    else:
      run_cells(sweep, root, todo)
  written = tables.write(root, root)
  print(f"[sweep] wrote {', '.join(written)} in {root}", flush=True)


if __name__ == "__main__":
  xla_flags.prepare_process()  # before JAX starts a backend (maml_iqr/xla_flags.py)
  app.run(main)
