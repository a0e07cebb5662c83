"""XLA:CPU tuning, applied when `maml_iqr` is imported (JAX reads XLA_FLAGS when it starts a backend).

jaxlib 0.10's CPU compiler hands reductions to YNNPACK, which runs the ones this project needs slowly: summing
a (4, 512, 512) array over its first axis takes 6 ms there and 0.1 ms in XLA's own loops. MAML's outer
gradient sums per-task weight gradients like that for every weight matrix, and the backbones pool. Keeping
YNNPACK for matrix products only leaves every matmul as it was and makes a meta-step 1.3x and the backbones
1.2-1.7x faster (BENCHMARKS.md, "XLA:CPU reductions").

Left alone when XLA_FLAGS already names the option, when the installed jaxlib does not know it (an unknown
flag would abort the process), or when MAML_IQR_XLA_TUNING=0.
"""
import mmap
import os

OPTION = "--xla_cpu_experimental_ynn_fusion_type"
FLAG = f"{OPTION}=individual_dot"


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
