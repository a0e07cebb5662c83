"""A workdir belongs to one config and one run at a time, and never loses a finished result.

* `claim(workdir, config)` takes an exclusive lock on `<workdir>/.lock` (`fcntl.flock`: the OS drops it when the
  process dies, however it dies) and compares the config with the one recorded in `<workdir>/run_config.json`.
  Another run on the same workdir stops with `WorkdirInUseError`; another config stops with
  `WorkdirConfigError`, which lists what differs and says how to proceed: a new `--workdir`, or `--overwrite`
  (`clear` deletes the run's outputs, keeping the content-keyed feature cache).
* `bind(workdir, config)` records the config (as JSON, with its hash) right before the run starts work that a
  resume would reuse; a run that fails its checks before that leaves the workdir free for a corrected config.
  Workdirs made before `run_config.json` existed are compared with the config in their results.json.
* `write_results` never replaces a finished results.json (status done) with an unfinished one, and
  `record_failure` marks a failed run `status: failed` with its error, unless the results are finished.
* `stop_on_signals()` turns SIGTERM and SIGINT (how schedulers preempt) into an `Interrupted` exception in the
  main thread: the run stops at once, the checkpoints written so far stay valid (every write is atomic), and the
  same command resumes it.

In a multi-process run only process 0 locks and writes (`io.is_writer`); its verdict on the workdir is sent to
every process, so all of them stop together.

The fingerprint leaves out what cannot change results: `cache_dir` (the feature cache is keyed by content).
Paths are compared expanded and absolute, so `~/data` and `/home/me/data/` are one config.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import sys
import time

import numpy as np

from maml_iqr.common import log
from maml_iqr.io import is_writer, write_json

RUN_CONFIG = "run_config.json"
RESULTS = "results.json"
LOCK = ".lock"
IGNORED_KEYS = ("cache_dir", "maml.diagnostics")  # cannot change results: the feature cache is keyed by
                                                  # content; diagnostics only measure
# Keys added after runs were recorded, with the value that reproduces what those runs did: a recorded config
# without the key reads as having it at this value, so a new option does not orphan every earlier workdir.
ADDED_KEYS = {"refine.leave_one_out": False, "data.mtd_split": "differnet", "data.object_pattern": ""}
PATH_KEYS = ("data.root", "data.defective_root", "backbone.weights_path", "cache_dir")
# What `clear` (--overwrite) deletes: the outputs of a run, never the feature cache or files it does not know.
OUTPUTS = ("checkpoints", "model", "tensorboard", RESULTS, RUN_CONFIG, "report.md", "suspicious.csv",
           "parts.csv")
OUTPUT_PATTERNS = ("*.png", ".model.*")  # the plots and review sheet; a model folder a kill left half-staged


class WorkdirError(RuntimeError):
  """The workdir cannot be used by this run: the message names it and says what to do."""


class WorkdirInUseError(WorkdirError):
  """Another process holds the workdir's lock."""


class WorkdirConfigError(WorkdirError):
  """The workdir was made by another config."""


class Interrupted(KeyboardInterrupt):
  """SIGTERM or SIGINT arrived: the run stops where it is (a BaseException, so no `except Exception` hides it)."""

  def __init__(self, signum: int):
    self.signum = signum
    super().__init__(f"stopped by {signal.Signals(signum).name}")


# ------------------------------------------------------------------------------------------------ the config

def expand_path(path: str) -> str:
  """`~` expanded (a literal './~' folder is never created); empty stays empty."""
  return os.path.expanduser(path) if path else path


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _normal_path(value):
  if not isinstance(value, str) or not value or value == "random":
    return value
  return os.path.normpath(os.path.abspath(os.path.expanduser(value)))


def comparable(config) -> dict:
  """The config as the fingerprint sees it: flat 'section.key' -> JSON value, without `IGNORED_KEYS`, paths
  expanded and absolute. Accepts a ConfigDict or the nested dict a results.json holds."""
  d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  flat = _flat(d)
  for key in IGNORED_KEYS:
    flat.pop(key, None)
  for key, before in ADDED_KEYS.items():
    flat.setdefault(key, before)
  for key in PATH_KEYS:
    if key in flat:
      flat[key] = _normal_path(flat[key])
  return json.loads(json.dumps(flat, sort_keys=True, default=str))  # tuples -> lists, as read back from disk


def fingerprint(config) -> str:
  """SHA-256 (16 hex digits) of `comparable(config)`."""
  return hashlib.sha256(json.dumps(comparable(config), sort_keys=True).encode()).hexdigest()[:16]


def differences(recorded: dict, wanted: dict, limit: int = 6) -> str:
  """'key: recorded -> wanted' for the first `limit` keys that differ."""
  keys = sorted(set(recorded) | set(wanted))
  diff = [f"{k}: {recorded.get(k, '(absent)')!r} -> {wanted.get(k, '(absent)')!r}" for k in keys
          if recorded.get(k, "(absent)") != wanted.get(k, "(absent)")]
  more = f" and {len(diff) - limit} more" if len(diff) > limit else ""
  return "; ".join(diff[:limit]) + more


def _read_json(path: str):
  with open(path) as f:
    return json.load(f)


def recorded_config(workdir: str) -> dict | None:
  """The comparable config that made the workdir: run_config.json, else (workdirs from before it existed) the
  config in a results.json that did not fail before its work began; None when there is neither."""
  path = os.path.join(workdir, RUN_CONFIG)
  if os.path.exists(path):
    try:
      return comparable(_read_json(path)["config"])
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise WorkdirConfigError(f"--workdir={workdir}: {RUN_CONFIG} is unreadable ({type(e).__name__}: {e}); "
                               "use a new --workdir, or pass --overwrite to clear its checkpoints and results"
                               ) from None
  try:
    results = _read_json(os.path.join(workdir, RESULTS))
  except (OSError, ValueError):
    return None
  if isinstance(results, dict) and results.get("status") != "failed" and isinstance(results.get("config"), dict):
    return comparable(results["config"])
  return None


def _has_checkpoints(workdir: str) -> bool:
  ckpt = os.path.join(workdir, "checkpoints")
  return os.path.isdir(ckpt) and any(os.scandir(ckpt))


def check_config(workdir: str, config) -> None:
  """Raises WorkdirConfigError when the workdir was made by another config (or by an unknown one)."""
  fix = "use a new --workdir, or pass --overwrite to clear its checkpoints and results first"
  recorded = recorded_config(workdir)
  if recorded is None:
    if _has_checkpoints(workdir):
      raise WorkdirConfigError(f"--workdir={workdir} holds checkpoints but no record of the config that made "
                               f"them; {fix}")
    return
  wanted = comparable(config)
  if recorded != wanted:
    raise WorkdirConfigError(f"--workdir={workdir} was made by another config ({differences(recorded, wanted)}); "
                             f"{fix}")


def bind(workdir: str, config) -> None:
  """Records the config that makes this workdir (process 0), before the run starts work a resume would reuse."""
  view = comparable(config)
  write_json(os.path.join(workdir, RUN_CONFIG), {"fingerprint": fingerprint(config), "config": view,
                                                "written": time.strftime("%Y-%m-%d %H:%M:%S")})


def clear(workdir: str) -> list[str]:
  """Deletes the run outputs in `workdir` (`OUTPUTS`, `OUTPUT_PATTERNS`); keeps the feature cache. Returns the
  names deleted."""
  gone = []
  names = [n for n in OUTPUTS if os.path.lexists(os.path.join(workdir, n))]
  names += sorted({os.path.basename(p) for pattern in OUTPUT_PATTERNS
                   for p in glob.glob(os.path.join(glob.escape(workdir), pattern))})
  for name in names:
    path = os.path.join(workdir, name)
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    else:
      os.remove(path)
    gone.append(name)
  return gone


# ------------------------------------------------------------------------------------------------- the lock

_HELD: dict[str, int] = {}  # realpath of a workdir -> the descriptor holding its lock


def holds(workdir: str) -> bool:
  """Whether this process holds the workdir's lock."""
  return os.path.realpath(workdir) in _HELD


def _lock(workdir: str) -> None:
  key = os.path.realpath(workdir)
  if key in _HELD:
    return
  release()  # a process runs one workdir at a time: claiming the next one ends its hold on the last
  path = os.path.join(workdir, LOCK)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes (PEP 446)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
    os.close(fd)
    if e.errno in (errno.EAGAIN, errno.EACCES):
      raise WorkdirInUseError(f"--workdir={workdir} is in use by another run ({holder or 'unknown process'}); wait "
                              "for it to end, or use a new --workdir") from None
    log(f"WARNING: cannot lock {path} ({e.strerror}); this filesystem does not stop two runs on one workdir")
    return
  os.ftruncate(fd, 0)
  os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
            .encode(), 0)
  _HELD[key] = fd


def release(workdir: str | None = None) -> None:
  """Drops this process's lock on `workdir` (None: on every workdir)."""
  keys = list(_HELD) if workdir is None else [os.path.realpath(workdir)]
  for key in keys:
    fd = _HELD.pop(key, None)
    if fd is not None:
      os.close(fd)  # closing the descriptor releases the flock


def _process_zero_says(ok: bool) -> bool:
  """Process 0's verdict, on every process of a multi-process run (all of them call this at the same point)."""
  jax = sys.modules.get("jax")
  if jax is None or not jax.distributed.is_initialized() or jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils  # noqa: PLC0415
  return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))


def claim(workdir: str, config, overwrite: bool = False) -> None:
  """Locks the workdir for this run and checks that it was made by this config (see the module docstring).
  `overwrite` first deletes the outputs of the run that made it. Only process 0 locks, clears and reads."""
  error = None
  if is_writer():
    try:
      _lock(workdir)
      if overwrite:
        gone = clear(workdir)
        if gone:
          log(f"--overwrite: deleted {', '.join(gone)} in {workdir}")
      check_config(workdir, config)
    except WorkdirError as e:
      error = e
  if not _process_zero_says(error is None):
    raise error or WorkdirError(f"--workdir={workdir}: process 0 refused this workdir (its log says why)")


# ---------------------------------------------------------------------------------------------- the results

def results_status(workdir: str) -> str | None:
  try:
    results = _read_json(os.path.join(workdir, RESULTS))
  except (OSError, ValueError):
    return None
  return results.get("status") if isinstance(results, dict) else None


def write_results(workdir: str, results: dict) -> bool:
  """Writes results.json unless that would replace a finished run's results with unfinished ones."""
  if results.get("status") != "done" and results_status(workdir) == "done":
    log(f"{os.path.join(workdir, RESULTS)} holds a finished run; left as it is (status {results.get('status')!r} "
        "not written)")
    return False
  write_json(os.path.join(workdir, RESULTS), results)
  return True


def record_failure(workdir: str, error: BaseException) -> None:
  """Marks this run's results.json `status: failed` with the error (kept with what the run had written), unless
  it holds a finished run. Only for a workdir this process has claimed: never another run's results."""
  if not holds(workdir):
    return
  path = os.path.join(workdir, RESULTS)
  try:
    partial = _read_json(path)
  except (OSError, ValueError):
    partial = {}
  if not isinstance(partial, dict):
    partial = {}
  write_results(workdir, dict(partial, status="failed", error=str(error)))


# ---------------------------------------------------------------------------------------------- the signals

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stop_on_signals(on_signal=None):
  """Inside, the first SIGTERM or SIGINT raises `Interrupted` in the main thread (after `on_signal(signum)`,
  e.g. forwarding it to worker processes); later ones are ignored so that cleanup (closing checkpoints) ends.
  The previous handlers come back on exit.

  A signal can land while Python runs code whose exceptions it cannot propagate (a `__del__`, a weakref
  finalizer, a garbage-collection callback: jax and orbax have all three); Python would print the `Interrupted`
  as "Exception ignored in ..." with a traceback and drop it. Inside, such a dropped `Interrupted` is not
  printed: the stop stays recorded, and the next `raise_if_stopped` (long loops call it every step, and leaving
  this block does) raises it."""
  previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
  previous_hook = sys.unraisablehook

  def handler(signum, frame):
    del frame
    for s in STOP_SIGNALS:
      signal.signal(s, lambda *_: None)
    _stop_requested.append(signum)
    if on_signal is not None:
      on_signal(signum)
    if _deferring:  # `deferred_stop` raises on leaving
      return
    raise Interrupted(signum)

  def unraisable_hook(unraisable):
    if not isinstance(unraisable.exc_value, Interrupted):
      previous_hook(unraisable)

  for s in STOP_SIGNALS:
    signal.signal(s, handler)
  sys.unraisablehook = unraisable_hook
  try:
    yield
    raise_if_stopped()  # a signal whose exception was dropped after the last loop's check: still a stop
  finally:
    _stop_requested.clear()
    sys.unraisablehook = previous_hook
    for s, h in previous.items():
      signal.signal(s, h)


_stop_requested: list[int] = []  # the signal that arrived inside `stop_on_signals`, until it is left
_deferring: list[bool] = []  # non-empty inside `deferred_stop`


@contextlib.contextmanager
def deferred_stop():
  """Inside, a stop signal is only recorded; it raises `Interrupted` when the block ends. For writes that must
  finish once begun: an exception raised in orbax's wait for its save thread is logged by orbax as a failed
  save (with a traceback) and can leave the step unfinalised, though the save itself completes in milliseconds."""
  _deferring.append(True)
  try:
    yield
  finally:
    _deferring.pop()
  raise_if_stopped()


def raise_if_stopped() -> None:
  """Raises `Interrupted` when a stop signal arrived but its exception was dropped (raised inside a `__del__`,
  a finalizer or a garbage-collection callback, which is where a signal often lands during feature extraction).
  Long loops call this once per step."""
  if _stop_requested:
    raise Interrupted(_stop_requested[0])


def exit_code(e: Interrupted) -> int:
  """The shell's code for death by that signal (143 for SIGTERM, 130 for SIGINT)."""
  return 128 + e.signum


def user_errors() -> tuple[type[BaseException], ...]:
  """Failures a user fixes (config, data, weights, workdir, a diverging loss): each ends the run with one line
  naming the thing and the fix, exit code 2 and results.json `status: failed`, never with a traceback."""
  from maml_iqr.config_check import ConfigError  # noqa: PLC0415 - kept out of this module's import time
  from maml_iqr.data.images import DataError  # noqa: PLC0415
  from maml_iqr.models.torch_weights import WeightsError  # noqa: PLC0415
  return (ConfigError, DataError, WeightsError, WorkdirError, FloatingPointError)
