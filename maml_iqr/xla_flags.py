"""What an entry point sets up before JAX starts a backend: an XLA:CPU option, and no TPU-probe noise.

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
  """What an entry point calls before JAX starts a backend: `tune_cpu()` and `quiet_tpu_probe()`."""
  tune_cpu()
  quiet_tpu_probe()
