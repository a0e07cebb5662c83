"""What an entry point sets up before JAX starts a backend: an XLA:CPU option, a compilation cache kept between
processes, and no TPU-probe noise.

Importing `maml_iqr` changes nothing in the environment. The entry points (`launch/main.py`, `launch/sweep.py`,
`benchmarks/*.py`) call `prepare_process()` in their `if __name__ == "__main__":` block, before any JAX
computation; a library user who wants the same does the same in their own script. JAX reads XLA_FLAGS once,
when it starts a backend, so a call after the first computation changes nothing.

`tune_cpu`: jaxlib 0.10's CPU compiler hands reductions to YNNPACK, which runs the ones this project needs
slowly: summing a (4, 512, 512) array over its first axis takes 6 ms there and 0.1 ms in XLA's own loops. MAML's
outer gradient sums per-task weight gradients like that for every weight matrix, and the backbones pool.
Keeping YNNPACK for matrix products only leaves every matmul as it was and makes a meta-step 1.3x and the
backbones 1.2-1.7x faster (BENCHMARKS.md, "XLA:CPU reductions"). Left alone when XLA_FLAGS already names the
option, when the installed jaxlib does not know it (an unknown flag would abort the process), or when
MAML_IQR_XLA_TUNING=0.

`compile_cache`: a process compiles every jitted program it runs from scratch (on 2 CPU cores a maml_iqr run
spends about 40 s in XLA's compiler), and a second run, a sweep's worker or `launch.predict` compiled the same
programs before. JAX's persistent compilation cache keeps them on disk, keyed by the program, the XLA flags and
the jax/jaxlib versions, so a changed program or version compiles anew and never reuses a stale executable. It
lives in $MAML_IQR_COMPILE_CACHE, else $XDG_CACHE_HOME/maml_iqr/jax (~/.cache/maml_iqr/jax); deleting it any time
is safe. MAML_IQR_COMPILE_CACHE=0 turns it off, and a JAX_COMPILATION_CACHE_DIR the user set is left as it is.
Child processes inherit it through the environment.

`quiet_tpu_probe`: with JAX_PLATFORMS unset, jax 0.10 tries every registered backend in turn and logs each one
that fails quietly at INFO (`xla_bridge.py`: "Unable to initialize backend 'tpu': ... Failed to open
libtpu.so"), so every CPU run under absl (whose default verbosity shows INFO) opened with that line. Where no
TPU library is installed (no `libtpu` package, no TPU_LIBRARY_PATH) the probe cannot succeed, and that one line
is dropped; every other JAX message, including its WARNING that a TPU seems present but libtpu is missing,
still shows. Setting JAX_PLATFORMS=cpu also skips the probe, but would hide a GPU, so it is not done here.
"""
import importlib.util
import logging
import mmap
import os

OPTION = "--xla_cpu_experimental_ynn_fusion_type"
FLAG = f"{OPTION}=individual_dot"
COMPILE_CACHE_ENV = "MAML_IQR_COMPILE_CACHE"
TPU_PROBE_MESSAGE = "Unable to initialize backend 'tpu'"
XLA_BRIDGE_LOGGER = "jax._src.xla_bridge"


def jaxlib_knows(option: str) -> bool:
  """Whether the installed jaxlib's XLA defines `option` (looked up in its shared library, without loading
  JAX's backend)."""
  try:
    import jaxlib  # pylint: disable=import-outside-toplevel
    path = os.path.join(os.path.dirname(jaxlib.__file__), "libjax_common.so")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
      return m.find(option.lstrip("-").encode()) >= 0
  except (ImportError, OSError, ValueError):
    return False


def tune_cpu() -> bool:
  """Adds FLAG to XLA_FLAGS where it is safe and wanted; returns whether it did."""
  flags = os.environ.get("XLA_FLAGS", "")
  if os.environ.get("MAML_IQR_XLA_TUNING", "1") == "0" or OPTION in flags or not jaxlib_knows(OPTION):
    return False
  os.environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
  return True


def compile_cache_dir() -> str | None:
  """The folder `compile_cache` uses, or None where it is turned off or the user chose JAX's own setting."""
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return None
  chosen = os.environ.get(COMPILE_CACHE_ENV)
  if chosen is not None:
    return None if chosen.strip() in ("", "0") else os.path.abspath(os.path.expanduser(chosen))
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "maml_iqr", "jax")


def compile_cache() -> str | None:
  """Turns on JAX's persistent compilation cache in `compile_cache_dir()` for this process and its children;
  returns the folder, or None where it stays off (also when the folder cannot be made: runs work without it)."""
  path = compile_cache_dir()
  if path is None:
    return None
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    logging.getLogger(__name__).warning("no compilation cache (%s cannot be made: %s); set %s to a writable "
                                        "folder, or 0 to silence this", path, e, COMPILE_CACHE_ENV)
    return None
  os.environ["JAX_COMPILATION_CACHE_DIR"] = path  # children (sweep workers, tests' subprocesses) start with it
  import jax  # pylint: disable=import-outside-toplevel  (importing JAX starts no backend)
  jax.config.update("jax_compilation_cache_dir", path)
  if not _CACHE_USE["listening"]:
    _CACHE_USE["listening"] = True
    jax.monitoring.register_event_listener(_count_hit)
    jax.monitoring.register_event_duration_secs_listener(_count_saved)
  return path


_CACHE_USE = {"listening": False, "hits": 0, "saved_s": 0.0}


def _count_hit(event: str, **_) -> None:
  if event == "/jax/compilation_cache/cache_hits":
    _CACHE_USE["hits"] += 1


def _count_saved(event: str, duration: float, **_) -> None:
  if event == "/jax/compilation_cache/compile_time_saved_sec":
    _CACHE_USE["saved_s"] += duration


def compile_cache_use() -> dict:
  """Programs this process read back from the compilation cache and the compile seconds that saved (JAX's own
  estimate), since `compile_cache()`; empty where it did not turn the cache on."""
  if not _CACHE_USE["listening"]:
    return {}
  return {"compile_cache_hits": _CACHE_USE["hits"], "compile_s_saved": round(_CACHE_USE["saved_s"], 1)}


def tpu_library_installed() -> bool:
  """Whether JAX could find a TPU runtime (the `libtpu` package, or a TPU_LIBRARY_PATH)."""
  return bool(os.environ.get("TPU_LIBRARY_PATH")) or importlib.util.find_spec("libtpu") is not None


class _DropTpuProbe(logging.Filter):
  """Drops jax's INFO record about a TPU backend that could not start; passes everything else."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno <= logging.INFO and record.getMessage().startswith(TPU_PROBE_MESSAGE))


_TPU_FILTER = _DropTpuProbe()


def quiet_tpu_probe() -> bool:
  """Drops the TPU-probe INFO line where no TPU library is installed; returns whether it did (idempotent)."""
  if tpu_library_installed():
    return False
  logging.getLogger(XLA_BRIDGE_LOGGER).addFilter(_TPU_FILTER)  # adding the same filter twice keeps one
  return True


def prepare_process() -> None:
  """What an entry point calls before JAX starts a backend: `tune_cpu()`, `compile_cache()` and
  `quiet_tpu_probe()`."""
  tune_cpu()
  compile_cache()
  quiet_tpu_probe()
