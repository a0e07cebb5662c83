"""What the run and the method both need, below both: the seeded host RNG per stage, and progress logging."""
from __future__ import annotations

import numpy as np
from absl import logging


def stage_rng(seed: int, *stage) -> np.random.Generator:
  """An independent, reproducible host RNG per (seed, stage...), so no RNG state needs checkpointing: a resumed
  run draws the same numbers for the same stage."""
  return np.random.default_rng([seed, *stage])


def log(message: str) -> None:
  """A progress line (absl INFO: shown by `launch` entry points, silenced by --verbosity=-1); a message that
  starts with WARNING goes out at warning level."""
  if message.startswith("WARNING"):
    logging.warning("%s", message)
  else:
    logging.info("%s", message)
