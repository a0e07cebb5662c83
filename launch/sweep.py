"""Reproduce a table: datasets x categories x noise levels x seeds x methods, resumable, with progress.

  python -m launch.sweep --sweep=configs/sweeps/mtd_table.py --workdir=runs/mtd_table

Each cell runs in `<workdir>/<category>/<method>/noise_<r>/seed_<s>` and is skipped when its results.json says
done and its workdir was made by the cell's config, so a killed sweep started again continues (a killed cell
resumes from its own checkpoints). A cell made by another config (the sweep file or its overrides changed)
fails with a line saying so; `--overwrite` reruns such cells from scratch. A cell that fails (bad data, a
diverging loss) is marked `status: failed` and the sweep goes on; it exits with code 2 when any cell failed.

Cells of one dataset share one feature cache. `--parallel=N` runs N worker processes on disjoint cells, one GPU
each where there are several (`--gpus`, else CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`: this process never
starts JAX itself, which would take device memory from the workers); on one device, cells run one after another
in this process so that compiled steps are reused. SIGTERM or SIGINT stop the sweep (and its workers) within
seconds, exit code 128 + the signal; the same command resumes it. At the end (and with `--tables_only`) it
writes tables.md, results.csv and auroc_vs_noise.png into the workdir.
"""
from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import time

from absl import app, flags
from ml_collections import config_flags

from maml_iqr import config_check, run, tables, workdir, xla_flags

config_flags.DEFINE_config_file("sweep", None, "Sweep config (configs/sweeps/*.py).", lock_config=False)
flags.DEFINE_string("workdir", None, "Root folder of the sweep's cells and tables.")
flags.DEFINE_integer("parallel", 1, "Worker processes (one per GPU where there are several).")
flags.DEFINE_string("gpus", None, "With --parallel: the GPU ids to spread workers over (e.g. '0,1,2,3'); "
                    "default CUDA_VISIBLE_DEVICES, else what `nvidia-smi -L` lists.")
flags.DEFINE_string("shard", "", "Internal: 'i/n' runs every n-th cell starting at i.")
flags.DEFINE_bool("tables_only", False, "Only (re)write the tables from finished cells.")
flags.DEFINE_bool("overwrite", False, "Rerun from scratch the cells whose workdir was made by another config.")
FLAGS = flags.FLAGS

WORKER_GRACE_S = 60  # after forwarding SIGTERM, how long workers get to stop before they are killed


class SweepError(config_check.ConfigError):
  """A sweep file that cannot make its cells (e.g. an override key the experiment config does not have)."""


def load_experiment(spec: str):
  """get_config of 'configs/x.py[:arg]'."""
  return config_check.load_config_file(spec)


def cells(sweep) -> list[dict]:
  """Every cell. `sweep.variants` (name -> overrides), when present, adds an axis such as k or the views,
  crossed with `sweep.methods`. `sweep.arms` (name -> overrides that include `method`) replaces both: one
  cell per arm, for ablations whose arms differ in method and settings together."""
  if "arms" in sweep:  # seed by seed, every arm and noise level each: a sweep cut short still compares arms
    return [dict(category=c, method=sweep.arms[a].method, noise=n, seed=s, variant="", arm=a)
            for c, s, n, a in itertools.product(sweep.categories, sweep.seeds, sweep.noise,
                                                list(sweep.arms.keys()))]
  variants = list(sweep.get("variants", {}).keys()) or [""]
  return [dict(category=c, method=m, noise=n, seed=s, variant=v)
          for c, v, n, s, m in itertools.product(sweep.categories, variants, sweep.noise, sweep.seeds,
                                                 sweep.methods)]


def cell_dir(root: str, cell: dict) -> str:
  method = cell.get("arm") or cell["method"] + (f"_{cell['variant']}" if cell["variant"] else "")
  return os.path.join(root, str(cell["category"]), method, f"noise_{cell['noise']:g}", f"seed_{cell['seed']}")


def unknown_keys(config, overrides: dict, prefix: str = "") -> list[str]:
  """Dotted keys of `overrides` that `config` does not have (an update would add them, silently unused)."""
  out = []
  for key, value in overrides.items():
    if key not in config:
      out.append(prefix + key)
    elif isinstance(value, dict) and hasattr(config[key], "keys"):
      out += unknown_keys(config[key], value, f"{prefix}{key}.")
  return out


def _apply(c, overrides: dict, what: str) -> None:
  unknown = unknown_keys(c, overrides)
  if unknown:
    raise SweepError(f"{what} sets {', '.join(unknown)}, which the experiment config does not have; check the "
                     "spelling in the sweep file or on the command line")
  c.update(overrides)


def cell_config(sweep, cell: dict, root: str):
  c = load_experiment(sweep.experiment)
  _apply(c, sweep.overrides.to_dict(), "--sweep.overrides")
  if cell["variant"]:
    _apply(c, sweep.variants[cell["variant"]].to_dict(), f"sweep variant {cell['variant']!r}")
    c.tag = cell["variant"]
  if cell.get("arm"):
    arm = {k: v for k, v in sweep.arms[cell["arm"]].to_dict().items() if k != "method"}
    _apply(c, arm, f"sweep arm {cell['arm']!r}")
    c.tag = "" if cell["arm"] == cell["method"] else cell["arm"]
  if cell["category"] != "-":
    c.data.category = cell["category"]
  c.method, c.noise.ratio, c.seed = cell["method"], float(cell["noise"]), int(cell["seed"])
  c.cache_dir = sweep.get("cache_dir") or os.path.join(root, "cache")  # content-keyed: sweeps may share one
  return c


def made_by(folder: str, config) -> bool:
  """Whether the cell's workdir is free for `config` or was made by it."""
  try:
    workdir.check_config(folder, config)
  except workdir.WorkdirError:
    return False
  return True


def is_done(folder: str, config=None) -> bool:
  """results.json says done (and, given the cell's config, that config made it)."""
  return workdir.results_status(folder) == "done" and (config is None or made_by(folder, config))


def done_by_this_sweep(sweep, root: str, cell: dict) -> bool:
  """The cell is finished and was made by the config this sweep gives it (a cell another config made is rerun)."""
  try:
    return is_done(cell_dir(root, cell), cell_config(sweep, cell, root))
  except workdir.user_errors():
    return False


def run_cells(sweep, root: str, todo: list[dict], overwrite: bool = False) -> list[str]:
  """Runs the cells not done yet, one after another in this process. A cell that fails with a user's error
  is marked failed and the sweep goes on; returns one line per failed cell."""
  total, start, done_now, failed = len(todo), time.time(), 0, []
  for k, cell in enumerate(todo):
    folder = cell_dir(root, cell)
    t = time.time()
    try:
      config = cell_config(sweep, cell, root)
      if is_done(folder, config):
        continue
      os.makedirs(folder, exist_ok=True)
      result = run.train_and_evaluate(config, folder, overwrite=overwrite and not made_by(folder, config))
    except workdir.user_errors() as e:
      workdir.record_failure(folder, e)
      failed.append(f"{folder}: {e}")
      print(f"[sweep] cell {k + 1}/{total} {cell} failed: {e}", flush=True)
      continue
    finally:
      workdir.release(folder)
    done_now += 1
    left = sum(not done_by_this_sweep(sweep, root, c) for c in todo[k + 1:])
    per_cell = (time.time() - start) / done_now
    print(f"[sweep] cell {k + 1}/{total} {cell} AUROC {result['auroc']:.4f} in {time.time() - t:.0f} s; "
          f"{left} left, about {left * per_cell / 60:.1f} min", flush=True)
  return failed


def gpu_ids(given: str | None = None) -> list[str]:
  """The GPUs to spread workers over, found without starting JAX here: `given` ('0,1'), else
  CUDA_VISIBLE_DEVICES, else the GPUs `nvidia-smi -L` lists; [] where there are none (CPU)."""
  listed = given if given is not None else os.environ.get("CUDA_VISIBLE_DEVICES")
  if listed is not None:
    return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
  if not shutil.which("nvidia-smi"):
    return []
  try:
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return []
  return [line.split(":")[0].split()[1] for line in out.splitlines() if line.startswith("GPU ")]


def worker_env(i: int, n_workers: int, gpus: list[str], base: dict) -> dict:
  """Worker i's environment: its own GPU when there are several; when workers share GPUs, JAX must not
  preallocate most of a GPU's memory in each of them."""
  env = dict(base)
  if gpus:
    env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
    if n_workers > len(gpus):
      env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  return env


def run_workers(n: int, argv: list[str], gpus: list[str]) -> list[int]:
  """Runs `n` workers (`--shard=i/n`) and returns their exit codes. A SIGTERM or SIGINT here is forwarded to
  every worker, which stops at once (its cell resumable); those still running after `WORKER_GRACE_S` are
  killed; then `workdir.Interrupted` is raised."""
  procs = [subprocess.Popen([sys.executable, "-m", "launch.sweep", *argv, f"--shard={i}/{n}", "--parallel=1"],
                            env=worker_env(i, n, gpus, os.environ)) for i in range(n)]

  def forward(signum):
    del signum
    for p in procs:
      if p.poll() is None:
        p.send_signal(signal.SIGTERM)

  try:
    with workdir.stop_on_signals(forward):
      return [p.wait() for p in procs]
  except workdir.Interrupted:
    deadline = time.time() + WORKER_GRACE_S
    for p in procs:
      try:
        p.wait(timeout=max(0.0, deadline - time.time()))
      except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    raise


def sweep_main() -> int:
  """The sweep; returns the exit code."""
  sweep, root = FLAGS.sweep, workdir.expand_path(FLAGS.workdir)
  os.makedirs(root, exist_ok=True)
  todo = cells(sweep)
  failed: list[str] = []
  if not FLAGS.tables_only:
    finished = sum(done_by_this_sweep(sweep, root, c) for c in todo)
    print(f"[sweep] {len(todo)} cells, {finished} already done", flush=True)
    if FLAGS.shard:
      i, n = map(int, FLAGS.shard.split("/"))
      failed = run_cells(sweep, root, todo[i::n], FLAGS.overwrite)
      return 2 if failed else 0
    if FLAGS.parallel > 1:
      codes = run_workers(FLAGS.parallel, sys.argv[1:], gpu_ids(FLAGS.gpus))
      if any(code not in (0, 2) for code in codes):
        print(f"error: sweep workers ended with codes {codes}; run the same command again to continue",
              file=sys.stderr, flush=True)
        return max(codes)
      failed = ["(see the workers' lines above)"] if any(codes) else []
    else:
      failed = run_cells(sweep, root, todo, FLAGS.overwrite)
  written = tables.write(root, root, sweep.get("note", ""))
  print(f"[sweep] wrote {', '.join(written)} in {root}", flush=True)
  if failed:
    print(f"error: {len(failed)} cells failed: {failed[0]}; fix it and run the same command again (finished "
          "cells are skipped)", file=sys.stderr, flush=True)
    return 2
  return 0


def parse_flags(argv):
  """absl's parsing, with an unknown --sweep key, a config typo or a bad value as one line and exit code 2."""
  try:
    return FLAGS(argv)
  except Exception as e:  # noqa: BLE001 - absl raises flags.Error; ml_collections AttributeError for unknown keys
    load = lambda spec: config_check.load_config_file(spec)  # noqa: E731
    print(f"error: {config_check.flag_error_line(e, argv, load, flag='sweep')}", file=sys.stderr)
    raise SystemExit(2) from None


def main(argv):
  del argv
  try:
    with workdir.stop_on_signals():
      code = sweep_main()
  except workdir.Interrupted as e:
    print(f"[sweep] {e}: finished cells are kept and killed cells resume; run the same command again",
          flush=True)
    raise SystemExit(workdir.exit_code(e)) from None
  except workdir.user_errors() as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None
  raise SystemExit(code)


if __name__ == "__main__":
  flags.mark_flags_as_required(["sweep", "workdir"])  # here, so that a script may import cell_config
  xla_flags.prepare_process()  # before JAX starts a backend (maml_iqr/xla_flags.py)
  app.run(main, flags_parser=parse_flags)
