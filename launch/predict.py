"""Scores new images with a saved detector.

  python -m launch.predict --model=W/model --images=DIR_OR_FILES --out=O [--maps]

`--images` takes folders and image files, comma-separated; a folder contributes the images directly in it (not
in its subfolders; hidden files and thumbnails skipped). Writes `O/scores.csv` (path, score, decision at the
model's operating threshold: 1 = defective) and, with `--maps`, `O/maps/<index>_<name>.png`: each image at the
backbone's input size with its anomaly map over it. Where the training folder named its parts
(`data.object_pattern`, kept in detector.json) or `--object_pattern` names them, also `O/parts.csv`: each part
scored by its highest image, defective when any of its images is. Prints images/s and latency, measured over the
batches after the first (which compiles).
"""
from __future__ import annotations

import csv
import io
import os
import time

import numpy as np
from absl import app, flags

from maml_iqr import anomaly_maps, review, saved_model, xla_flags
from maml_iqr.data import readers
from maml_iqr.data.images import DataError, list_images, load_image
from maml_iqr.io import write_atomic

flags.DEFINE_string("model", None, "Model folder a run wrote (W/model).")
flags.DEFINE_list("images", None, "Image folders and/or files, comma-separated (folders are not searched "
                  "recursively).")
flags.DEFINE_string("out", None, "Output folder for scores.csv (and maps/ with --maps).")
flags.DEFINE_bool("maps", False, "Also write each image with its anomaly map over it (one backward pass per view "
                  "and image: several times the cost of scoring).")
flags.DEFINE_string("weights_path", None, "Where the backbone's weights are, when not where training read them "
                    "(e.g. AlexNet's .pth moved); they must be the same weights.")
flags.DEFINE_integer("batch_images", 8, "Images per batch (the last batch is padded). Any size gives the same "
                     "scores; 1 measures single-image latency.")
flags.DEFINE_integer("flow_rows", saved_model.RUN_FLOW_ROWS, "Rows per flow call (padded). The default, the "
                     "run's, reproduces the run's scores bit for bit; the batch size instead is faster for small "
                     "batches (2x for single images) and may change scores in the last bit.")
flags.DEFINE_string("object_pattern", None, "Regular expression whose first group in a file name names the part "
                    "it shows (default: the training run's data.object_pattern; '' for none): writes parts.csv.")
flags.DEFINE_float("sigma", None, "Gaussian smoothing of the anomaly maps, in pixels of the backbone's input "
                   "(default: anomaly_maps.SIGMA_FRACTION of it, 16 pixels at 224).")


def image_paths(inputs: list[str]) -> list[str]:
  """Folders expanded to their images (sorted, not recursive), files kept as given, in the order given."""
  paths = []
  for item in inputs:
    if os.path.isdir(item):
      found = list_images(item)
      if not found:
        raise DataError(f"{item}: no images found (png/jpg/bmp/tif/webp); pass a folder of images or files")
      paths.extend(found)
    elif os.path.isfile(item):
      paths.append(item)
    else:
      raise DataError(f"{item}: no such file or folder; pass --images=FOLDER or --images=FILE1,FILE2")
  if not paths:
    raise DataError("--images: nothing to score; pass a folder of images or image files")
  return paths


def map_name(index: int, path: str) -> str:
  return f"{index:05d}_{os.path.splitext(os.path.basename(path))[0]}.png"


def predict(model: str, inputs: list[str], out: str, with_maps: bool = False, weights_path: str | None = None,
            batch_images: int = 8, sigma: float | None = None, flow_rows: int = saved_model.RUN_FLOW_ROWS,
            log=print, object_pattern: str | None = None) -> dict:
  """Scores the images, writes O/scores.csv (and O/maps/, O/parts.csv), returns {'paths', 'scores', 'decisions',
  'timing'}."""
  for flag, value in (("--batch_images", batch_images), ("--flow_rows", flow_rows)):
    if value < 1:
      raise DataError(f"{flag}={value}: expected an integer >= 1")
  det = saved_model.load(model, weights_path)
  paths = image_paths(inputs)
  pattern = det.spec.get("object_pattern", "") if object_pattern is None else object_pattern
  source = ("the training run's data.object_pattern (detector.json; --object_pattern='' for none)"
            if object_pattern is None else "--object_pattern")
  objects = readers.folder_objects(paths, pattern, source) if pattern else None  # a name it misses stops it here
  size = det.input_size
  log(f"scoring {len(paths)} images with {model} ({det.spec['backbone']['name']}, "
      f"{det.spec['views']['n_views']} views, threshold {det.threshold:.6g} by {det.spec['threshold']['rule']})")
  scores = np.zeros(len(paths), np.float32)
  batch_s, load_s, map_s = [], [], []
  if with_maps:
    from PIL import Image  # noqa: PLC0415
    os.makedirs(os.path.join(out, "maps"), exist_ok=True)
  for start in range(0, len(paths), batch_images):
    batch = paths[start:start + batch_images]
    t = time.perf_counter()
    images = np.stack([load_image(p, size)[0] for p in batch])
    load_s.append(time.perf_counter() - t)
    t = time.perf_counter()
    scores[start:start + len(batch)] = saved_model.score_images(det, images, batch_images, flow_rows)
    batch_s.append(time.perf_counter() - t)
    if with_maps:
      t = time.perf_counter()
      for i, (image, amap) in enumerate(zip(images, anomaly_maps.maps(det, images, sigma))):
        Image.fromarray(anomaly_maps.overlay(image, amap)).save(
            os.path.join(out, "maps", map_name(start + i, paths[start + i])))
      map_s.append(time.perf_counter() - t)
  decisions = (scores > det.threshold).astype(int)
  rows = [["path", "score", "decision"] + (["map"] if with_maps else [])]
  for i, (p, s, d) in enumerate(zip(paths, scores, decisions)):
    rows.append([p, f"{float(s):.9g}", int(d)] + ([os.path.join("maps", map_name(i, p))] if with_maps else []))
  os.makedirs(out, exist_ok=True)
  text = io.StringIO()
  csv.writer(text).writerows(rows)
  write_atomic(os.path.join(out, "scores.csv"), text.getvalue())
  if objects is not None:
    write_parts(out, [objects[p] for p in paths], scores, det.threshold, log)
  timing = timing_summary(batch_s, load_s, map_s, len(paths), batch_images)
  log(timing["text"])
  log(f"{int(decisions.sum())} of {len(paths)} images above the threshold; scores in {os.path.join(out, 'scores.csv')}")
  return {"paths": paths, "scores": scores, "decisions": decisions, "timing": timing}


def write_parts(out: str, objects: list[str], scores: np.ndarray, threshold: float, log) -> None:
  """O/parts.csv: each part by its highest image score (`review.part_scores`), with its decision at the threshold."""
  parts = review.part_scores(objects, scores)
  rows = [["object", "score", "images", "decision"]]
  rows += [[name, f"{top:.9g}", objects.count(name), int(top > threshold)] for name, top in parts]
  text = io.StringIO()
  csv.writer(text).writerows(rows)
  write_atomic(os.path.join(out, "parts.csv"), text.getvalue())
  log(f"{sum(top > threshold for _, top in parts)} of {len(parts)} parts above the threshold; in "
      f"{os.path.join(out, 'parts.csv')}")


def timing_summary(batch_s: list[float], load_s: list[float], map_s: list[float], n_images: int,
                   batch_images: int) -> dict:
  """Images/s and latency over the batches after the first (which compiles); every batch costs a full one, so
  the padded last batch counts as `batch_images` images."""
  steady = batch_s[1:]
  if not steady:
    return {"text": f"one batch only: {batch_s[0]:.2f} s including compilation; score more than "
                    f"{batch_images} images to measure throughput", "images_per_s": None,
            "batch_latency_s": None}
  latency = float(np.mean(steady))
  out = {"images_per_s": batch_images / latency, "batch_latency_s": latency,
         "image_latency_s": latency / batch_images, "load_s_per_image": float(np.sum(load_s) / n_images),
         "first_batch_s": batch_s[0]}
  text = (f"scoring: {out['images_per_s']:.2f} images/s; latency {latency * 1e3:.0f} ms per batch of "
          f"{batch_images} ({out['image_latency_s'] * 1e3:.0f} ms per image), mean over {len(steady)} batches "
          f"after the first ({batch_s[0]:.1f} s with compilation); decoding {out['load_s_per_image'] * 1e3:.1f} ms "
          "per image")
  if map_s[1:]:
    out["maps_s_per_image"] = float(np.mean(map_s[1:])) / batch_images
    text += f"; anomaly maps {out['maps_s_per_image']:.2f} s per image"
  out["text"] = text
  return out


def main(argv):
  del argv
  f = flags.FLAGS
  try:
    predict(f.model, f.images, f.out, f.maps, f.weights_path, f.batch_images, f.sigma, f.flow_rows,
            object_pattern=f.object_pattern)
  except (saved_model.ModelError, DataError) as e:
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  flags.mark_flags_as_required(["model", "images", "out"])
  xla_flags.prepare_process()  # before JAX starts a backend (maml_iqr/xla_flags.py)
  app.run(main)
