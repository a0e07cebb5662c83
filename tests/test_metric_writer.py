"""TensorBoard event files: the scalars written are read back with their steps from the raw records.

The reader below parses the TFRecord framing (length, masked CRC of the length, payload, masked CRC of the
payload) and the Event protobuf itself, so it checks the file TensorBoard would read, not the writer's memory.
Checked to fail when broken: with `open_writer` writing on every process, test_only_process_zero_writes fails;
with `scalar` passing its arguments in the wrong order or not flushing, the round-trip tests fail.
"""
import glob
import os
import struct

import jax.numpy as jnp
import numpy as np
from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c

from maml_iqr import metric_writer


def read_scalars(logdir: str) -> dict:
  """{tag: [(step, value), ...]} from every event file under logdir."""
  out = {}
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      header = data[pos:pos + 8]
      (length,) = struct.unpack("<Q", header)
      assert struct.unpack("<I", data[pos + 8:pos + 12])[0] == masked_crc32c(header)
      payload = data[pos + 12:pos + 12 + length]
      assert struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])[0] == masked_crc32c(payload)
      pos += 16 + length
      event = event_pb2.Event.FromString(payload)
      for v in event.summary.value:
        out.setdefault(v.tag, []).append((event.step, v.simple_value))
  return out


def test_scalars_round_trip_with_steps(tmp_path):
  with metric_writer.open_writer(str(tmp_path), process_index=0) as writer:
    for epoch, loss in enumerate([2.5, 1.25, -0.5]):
      writer.scalar("detector/loss", loss, step=epoch)
    writer.scalars(7, {"refine/threshold": np.float32(3.75), "refine/removed": 12, "refine/val_auroc": jnp.array(0.5)})
  got = read_scalars(os.path.join(str(tmp_path), metric_writer.SUBDIR))
  assert got == {"detector/loss": [(0, 2.5), (1, 1.25), (2, -0.5)], "refine/threshold": [(7, 3.75)],
                 "refine/removed": [(7, 12.0)], "refine/val_auroc": [(7, 0.5)]}


def test_flush_makes_points_readable_before_close(tmp_path):
  """What a killed run leaves: everything up to the last flush."""
  writer = metric_writer.open_writer(str(tmp_path), process_index=0)
  writer.scalar("maml/meta_loss", 0.25, step=3)
  writer.flush()
  assert read_scalars(writer.logdir) == {"maml/meta_loss": [(3, 0.25)]}
  writer.close()


def test_only_process_zero_writes(tmp_path):
  writer = metric_writer.open_writer(str(tmp_path), process_index=1)
  writer.scalar("detector/loss", 1.0, step=0)
  writer.flush()
  writer.close()
  assert not os.path.exists(os.path.join(str(tmp_path), metric_writer.SUBDIR))
  # This test process is process 0 of 1: the default asks JAX and writes.
  with metric_writer.open_writer(str(tmp_path)) as writer:
    writer.scalar("detector/loss", 1.0, step=0)
  assert read_scalars(os.path.join(str(tmp_path), metric_writer.SUBDIR)) == {"detector/loss": [(0, 1.0)]}
