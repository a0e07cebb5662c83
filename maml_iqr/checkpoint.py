"""Orbax checkpoints of the refinement state: parameters as a pytree, the controller's state as JSON.

Orbax writes each step to a temporary folder and renames it when complete, so a kill never leaves a step that
looks finished. A step that fails to restore (truncated, corrupted) is skipped with a warning and the previous
one is used; the bad step is moved aside to `<directory>.unreadable/` (kept for inspection), so that the
resumed run can save that step again.
"""
from __future__ import annotations

import os
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from maml_iqr.common import log
from maml_iqr.workdir import deferred_stop


_EMPTY = {"empty": np.zeros((1,), np.float32)}


class Checkpointer:
  def __init__(self, directory: str, max_to_keep: int = 3):
    self._directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(self._directory,
                                          options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                                                               create=True))

  def save(self, step: int, params, meta: dict) -> None:
    """Saves a params pytree (may be empty) and JSON metadata as `step`."""
    # as host numpy: orbax refuses process-local jax.Arrays in a multi-process run; an empty tree it cannot
    # save at all (it waits forever for a signal)
    params = jax.tree.map(np.asarray, params) if params else _EMPTY
    with deferred_stop():
      self._manager.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                                       meta=ocp.args.JsonSave(meta)), force=True)
      self._manager.wait_until_finished()

  def restore_latest(self, params_like):
    """(step, params, meta) of the newest readable step, or None when there is none."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, params_like or _EMPTY)
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        out = self._manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract),
                                                                  meta=ocp.args.JsonRestore()))
        return step, (out["params"] if params_like else {}), out["meta"]
      except Exception as e:  # noqa: BLE001 - any failure means this step cannot be trusted
        moved = self._move_aside(step)
        log(f"WARNING: checkpoint step {step} in {self._manager.directory} is unreadable "
              f"({type(e).__name__}: {str(e)[:200]}); falling back to the previous one"
              f"{f' (the bad step is now {moved})' if moved else ''}")
    return None

  def _move_aside(self, step: int) -> str | None:
    """Moves an unreadable step out of the manager's folder; without this, saving that step again fails with
    StepAlreadyExistsError and a resumed run dies."""
    src = os.path.join(self._directory, str(step))
    if not os.path.isdir(src):
      return None
    dst = os.path.join(self._directory + ".unreadable", f"{step}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    os.replace(src, dst)
    self._manager.reload()
    return dst

  def close(self) -> None:
    self._manager.close()
