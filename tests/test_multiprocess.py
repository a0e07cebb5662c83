"""Item 8 of issue 15: more than one process (`jax.distributed`, CPU collectives over gloo on localhost).

Two processes of two CPU devices each run what one process of four devices runs: the meta-step's mesh spans
both processes' devices, each process feeds its own devices their rows of the (same) host tasks, and the
numbers agree with the single process. Process 1's copy of process 0's rows is garbage here, so a step that
ran on one process's devices alone, or mixed the copies, would give other numbers.

A whole `launch.main --distributed` run writes through process 0 only (an audit hook records every file the
other process opens for writing, creates, renames or deletes in the workdir; orbax's own per-process checkpoint
metadata is the one exception, as orbax coordinates its processes itself).

Checked against the code before this change (commit ab84591): its shard_map step insisted, with an all-gather
of the tasks at every step, that all processes pass identical tasks (so the garbage rows stopped it), its pmap
step ran on each process's local devices alone (so process 1 trained on its garbage rows), and process 1 wrote
results.json, report.md, the plots, the feature cache and the workdir probe.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(n_devices: int) -> dict:
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}",
              PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]))


META_TRAINING = r'''
import json, sys, warnings
import jax, numpy as np, optax
process_id, port = int(sys.argv[1]), sys.argv[2]
if process_id >= 0:
  jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=process_id)
import test_maml as t
from maml_iqr import maml
warnings.filterwarnings("ignore", message=".*donated buffers.*")
cfg = maml.MamlConfig(inner_lr=0.05, inner_steps=3, first_order=False)
opt = optax.adam(0.1)
out = {"devices": jax.device_count(), "local": jax.local_device_count()}
for parallel in ("shard_map", "pmap"):
  step = maml.parallel_meta_step(maml.make_meta_step(t.affine_nll, opt, cfg), parallel)
  params = jax.jit(lambda p: p)(t.affine_params())  # committed, as parameters a jitted function returned are
  state = opt.init(params)
  losses = []
  for seed in range(3):
    tasks = t.affine_tasks(seed, 8)
    if process_id == 1:  # rows for process 0's devices (the first half): process 1's copy must not be used
      other = t.affine_tasks(seed + 100, 8)
      tasks = jax.tree.map(lambda a, b: np.concatenate([b[:4], a[4:]]), tasks, other)
    params, state, metrics = step(params, state, tasks)
    losses.append(float(metrics["loss"]))
  out[parallel] = {"losses": losses, "params": {k: np.asarray(v).tolist() for k, v in params.items()},
                   "devices_used": len(params["mu"].sharding.device_set)}
print("RESULT " + json.dumps(out), flush=True)
'''


def _result(text: str) -> dict:
  line = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
  assert line, text[-3000:]
  return json.loads(line[-1][len("RESULT "):])


def test_meta_steps_across_two_processes_equal_one_process():
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, "-c", META_TRAINING, str(i), str(port)], cwd=REPO, env=_env(2),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
  single = subprocess.Popen([sys.executable, "-c", META_TRAINING, "-1", "0"], cwd=REPO, env=_env(4),  # meanwhile
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  outs = [p.communicate(timeout=300)[0] for p in procs]
  single_out, single_err = single.communicate(timeout=300)
  assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
  assert single.returncode == 0, single_err[-3000:]
  want = _result(single_out)
  assert want["devices"] == 4
  for out in outs:
    got = _result(out)
    assert (got["devices"], got["local"]) == (4, 2)
    assert got["shard_map"]["devices_used"] == 4  # the parameters live on both processes' devices
    for parallel in ("shard_map", "pmap"):
      np.testing.assert_allclose(got[parallel]["losses"], want[parallel]["losses"], rtol=1e-6)
      for name in ("mu", "log_sigma"):  # gloo sums in another order: the last bits may differ
        np.testing.assert_allclose(got[parallel]["params"][name], want[parallel]["params"][name], rtol=1e-6)
  assert _result(outs[0]) == _result(outs[1])  # both processes hold the same parameters


# Runs launch.main, recording every path under the workdir that this process opens for writing, creates,
# renames or deletes (a Python audit hook), into the file named by the first argument.
RECORDED_LAUNCH = r'''
import atexit, json, os, runpy, sys
record, workdir = sys.argv[1], os.path.realpath(sys.argv[2])
touched = set()
WRITES = ("os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.unlink", "shutil.rmtree",
          "os.truncate")
def hook(event, args):
  if event == "open" and args and isinstance(args[0], (str, bytes)):
    mode, flags = args[1], args[2]
    writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
        isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
  elif event in WRITES and args and isinstance(args[0], (str, bytes)):
    writing = True
  else:
    return
  path = os.path.realpath(os.path.abspath(os.fsdecode(args[0])))
  if writing and (path == workdir or path.startswith(workdir + os.sep)):
    touched.add(f"{event} {os.path.relpath(path, workdir)}")
sys.addaudithook(hook)
atexit.register(lambda: open(record, "w").write(json.dumps(sorted(touched))))
sys.argv = ["launch.main", *sys.argv[3:]]
runpy.run_module("launch.main", run_name="__main__", alter_sys=True)
'''


def test_launch_main_distributed_writes_through_process_zero_and_matches_one_process(folders, tmp_path):
  w, ref = tmp_path / "shared_workdir", tmp_path / "single"
  args = ["--config=configs/folder.py:quick", f"--config.data.root={folders / 'good'}",
          f"--config.data.defective_root={folders / 'bad'}", "--config.noise.ratio=0.5", "--config.refine.k=0.5",
          "--config.refine.min_kept=4", "--config.maml.meta_epochs=1", "--config.refine.max_iterations=1"]
  port = _free_port()
  logs = [tmp_path / f"process_{i}.txt" for i in (0, 1)]
  procs = [subprocess.Popen([sys.executable, "-c", RECORDED_LAUNCH, str(tmp_path / f"touched_{i}.json"), str(w),
                             *args, f"--workdir={w}", "--distributed", f"--coordinator_address=localhost:{port}",
                             "--num_processes=2", f"--process_id={i}"],
                            cwd=REPO, env=_env(2), stdout=open(logs[i], "w"), stderr=subprocess.STDOUT)
           for i in (0, 1)]
  single = subprocess.Popen([sys.executable, "-m", "launch.main", *args, f"--workdir={ref}"], cwd=REPO, env=_env(4),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  codes = [p.wait(timeout=900) for p in procs]
  log0 = logs[0].read_text()
  if "Cannot serialize host local jax.Array" in log0:
    pytest.fail("saved_model.save: in a multi-process run orbax refuses host-local arrays; save numpy copies "
                "from process 0 alone (ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0})) "
                "and let the other processes wait for it")
  assert codes == [0, 0], "\n".join(log.read_text()[-3000:] for log in logs)
  assert single.wait(timeout=900) == 0

  touched_by_1 = json.loads((tmp_path / "touched_1.json").read_text())
  orbax_own = [t for t in touched_by_1 if t.split(" ", 1)[1].startswith("checkpoints/") and "process_1" in t]
  assert touched_by_1 == orbax_own, touched_by_1  # nothing but orbax's own per-process metadata
  touched_by_0 = json.loads((tmp_path / "touched_0.json").read_text())
  assert any("run_config.json" in t for t in touched_by_0) and any("results.json" in t for t in touched_by_0)

  got = json.loads((w / "results.json").read_text())
  want = json.loads((ref / "results.json").read_text())
  assert got["status"] == want["status"] == "done"
  for key in ("injected_ids", "removal", "n_final_train", "auroc"):
    assert got[key] == want[key], key
  assert [h["removed_ids"] for h in got["refinement"]] == [h["removed_ids"] for h in want["refinement"]]
  np.testing.assert_allclose(got["test_scores"], want["test_scores"], rtol=1e-4)
