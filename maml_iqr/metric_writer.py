"""TensorBoard event files for a run's curves, written without TensorFlow (tensorboardX's record writer).

  writer = open_writer(workdir)          # <workdir>/tensorboard/events.out.tfevents.*
  writer.scalar("detector/loss", 1.23, step=epoch)
  writer.flush()                         # also every FLUSH_SECS, at the next scalar
  writer.close()

`tensorboard --logdir W` then shows them (tensorboard itself is not a dependency: `pip install tensorboard` where
you want to look). Only process 0 writes (`jax.process_index() == 0`): on a multi-host run the other processes
get a writer that does nothing, so one run never has several competing event files. A resumed run adds a new
event file beside the old one; TensorBoard reads both.

Events are written in the calling thread, so `flush()` really puts every point so far on disk (tensorboardX's
SummaryWriter queues events for a background thread, and its flush does not wait for that queue: a run killed
right after a flush lost its last points), and no thread or multiprocessing queue is left behind in a sweep.
"""
from __future__ import annotations

import itertools
import os
import time

SUBDIR = "tensorboard"
FLUSH_SECS = 30  # a killed run loses at most this much of its curves
_FILE_NUMBER = itertools.count()  # two writers opened in one second never share a file name


class EventWriter:
  """Scalars into one new event file under `logdir`."""

  def __init__(self, logdir: str):
    from tensorboardX.event_file_writer import EventsWriter  # imported here: only process 0 needs it
    os.makedirs(logdir, exist_ok=True)
    self.logdir = logdir
    self._events = EventsWriter(os.path.join(logdir, "events"), f".{os.getpid()}.{next(_FILE_NUMBER)}")
    self._last_flush = time.time()

  def scalar(self, tag: str, value, step: int) -> None:
    """One point of the curve `tag` (value: any real number, numpy or JAX scalar; stored as float32)."""
    from tensorboardX.proto import event_pb2, summary_pb2  # pylint: disable=import-outside-toplevel
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))])
    self._events.write_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))
    if time.time() - self._last_flush > FLUSH_SECS:
      self.flush()

  def scalars(self, step: int, values: dict) -> None:
    """Several curves at one step: {tag: value}."""
    for tag, value in values.items():
      self.scalar(tag, value, step)

  def flush(self) -> None:
    self._events.flush()
    self._last_flush = time.time()

  def close(self) -> None:
    self._events.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc) -> None:
    self.close()


class NullWriter(EventWriter):
  """The writer of processes other than 0: the same calls, nothing written."""

  def __init__(self):  # pylint: disable=super-init-not-called
    self.logdir = None

  def scalar(self, tag: str, value, step: int) -> None:
    del tag, value, step

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


def open_writer(workdir: str, process_index: int | None = None) -> EventWriter:
  """The run's writer: event files in `<workdir>/tensorboard` on process 0, a NullWriter elsewhere.

  `process_index` defaults to `jax.process_index()` (which starts JAX's backend: call it after the entry point's
  `xla_flags.prepare_process()`).
  """
  if process_index is None:
    import jax  # pylint: disable=import-outside-toplevel
    process_index = jax.process_index()
  if process_index != 0:
    return NullWriter()
  return EventWriter(os.path.join(workdir, SUBDIR))
