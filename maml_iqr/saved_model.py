"""The final detector as a folder a production line can load tomorrow: `W/model/`.

  W/model/detector.json   format version, flow settings, backbone name and weights identity, feature and score
                          settings (the evaluation views), the operating threshold and the rule that chose it
  W/model/params/         the final flow parameters (orbax); the backbone is frozen, so only the flow is saved

`load` checks everything it can before scoring anything (the file layout, the format version, that the
installed backbone weights are the ones the flow was trained on, that the parameters fit the flow described)
and raises one named error, `ModelError`, whose message says what to do. `score_images` reproduces the run's own
test scores for the same images bit for bit: it uses the same jitted feature extractor on the same views (whose
numbers do not depend on the batch: measured for batches of 1, 2, 3 and 8 images) and scores with the flow in
the run's batch shape, `detector.score`'s 64 rows, padded. Other flow batch shapes are not exact on XLA:CPU: 8 or
16 rows gave 1 of 34 scores 1 ulp apart, 1 row several; the row's place within a batch of 64 never mattered.
The padding costs little for batches of 8 images (11 % of a batch's time) but more than doubles the time of a
single image (1.7 s of flow for 1.5 s of backbone on the shared 2-core CPU), so `flow_rows` can trade the last
bit for latency.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import os
import shutil
import tempfile
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from maml_iqr import detector as detector_lib
from maml_iqr import features as features_lib
from maml_iqr import metrics
from maml_iqr.feature_cache import weights_identity
from maml_iqr.io import is_writer, write_atomic
from maml_iqr.workdir import deferred_stop
from maml_iqr.models import backbones
from maml_iqr.models import flow as flow_lib

FORMAT_VERSION = 2  # bump when detector.json or the parameter layout changes: other versions are refused
DETECTOR_JSON = "detector.json"
PARAMS_DIR = "params"
# Without labelled defects the threshold is this quantile of the kept training images' scores. Those images
# trained the flow, so their scores run lower than those of new good images: expect somewhat more than 1 % of
# new good images to be flagged.
TRAIN_QUANTILE = 0.99
# Rows per flow call when scoring: the run's (detector.score's default), which reproduces its scores exactly.
RUN_FLOW_ROWS = inspect.signature(detector_lib.score).parameters["batch_size"].default


class ModelError(ValueError):
  """A model folder that cannot be used: the message names the file or flag and says what to do."""


@dataclasses.dataclass(frozen=True)
class Detector:
  """A loaded detector: everything needed to score images (uint8 (N, S, S, 3) at `input_size`)."""
  path: str
  spec: dict
  flow: flow_lib.Flow
  params: Any
  backbone: backbones.Backbone
  backbone_params: Any

  @property
  def threshold(self) -> float:
    return float(self.spec["threshold"]["value"])

  @property
  def input_size(self) -> int:
    return int(self.spec["backbone"]["input_size"])

  @property
  def score_kind(self) -> str:
    return self.spec["score"]["kind"]

  @property
  def dtype(self) -> str:
    return self.spec["backbone"]["dtype"]

  def view_params(self, n_images: int) -> np.ndarray:
    """The fixed evaluation views the run scored its test images with (`features.fixed_view_params`)."""
    v = self.spec["views"]
    return features_lib.fixed_view_params(n_images, v["n_views"], v["offset"], v["brightness"], v["contrast"],
                                          v["saturation"])


def operating_threshold(val_labels, val_scores, kept_train_scores) -> dict:
  """The decision threshold (defective when score > value) and the rule that chose it: F1-max on the labelled
  validation images when they hold both classes, else the `TRAIN_QUANTILE` quantile of the kept training
  images' scores (an array, or a function returning it, called only when needed)."""
  val_labels = np.asarray(val_labels)
  n_bad = int((val_labels == 1).sum())
  n_good = int((val_labels == 0).sum())
  if n_bad and n_good:
    value, f1 = metrics.f1_max_threshold(val_labels, val_scores)
    return {"value": value, "rule": "f1_max_validation", "validation_f1": f1, "n_good": n_good,
            "n_defective": n_bad}
  if callable(kept_train_scores):
    kept_train_scores = kept_train_scores()
  kept_train_scores = np.asarray(kept_train_scores, np.float64)
  if not len(kept_train_scores):
    raise ValueError("operating_threshold needs labelled validation images of both classes or kept training "
                     "images, got neither")
  return {"value": float(np.quantile(kept_train_scores, TRAIN_QUANTILE)), "rule": "kept_train_quantile",
          "quantile": TRAIN_QUANTILE, "n_train": int(len(kept_train_scores))}


def describe(config, backbone: backbones.Backbone, threshold: dict, trained_on: dict | None = None) -> dict:
  """detector.json's content for a run's config and backbone."""
  b = config.backbone
  return {
      "format_version": FORMAT_VERSION,
      "flow": {"dim": backbone.feature_dim, "seed": config.seed, "settings": config.flow.to_dict()},
      "backbone": {"name": b.name, "weights_path": b.weights_path,
                   "weights_identity": weights_identity(b.name, b.weights_path),
                   "stages": list(b.stages) if b.name != "alexnet" else None, "dtype": b.dtype,
                   "input_size": backbone.input_size},
      "views": {"n_views": config.score.n_views, "offset": config.score.view_offset,
                "brightness": config.train.brightness, "contrast": config.train.contrast,
                "saturation": config.train.saturation},
      "score": {"kind": config.score.kind},
      "threshold": threshold,
      "object_pattern": config.data.get("object_pattern", ""),  # launch.predict's parts.csv, where parts are named
      "trained_on": trained_on or {},
  }


def save(path: str, config, backbone: backbones.Backbone, params, threshold: dict,
         trained_on: dict | None = None) -> dict:
  """Writes the model folder at `path`, replacing any older one only once the new one is complete (a kill
  leaves either the old folder or the new one, never a mix). Returns detector.json's content.

  In a multi-process run only process 0 writes (host numpy: orbax refuses process-local arrays), and every
  process waits until it has, so that a `load` right after reads the finished folder."""
  spec = describe(config, backbone, threshold, trained_on)
  if jax.process_count() > 1:
    if is_writer():
      _save(path, spec, jax.tree.map(np.asarray, params))
    multihost_utils.sync_global_devices("maml_iqr model saved")
    return spec
  _save(path, spec, params)
  return spec


def _checkpointer() -> ocp.StandardCheckpointer:
  """Orbax for this process alone: a model folder is written by one process and read by each on its own."""
  me = jax.process_index()
  return ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(
      primary_host=me, active_processes={me}))


def _save(path: str, spec: dict, params) -> None:
  path = os.path.abspath(path)
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.")
  try:
    with deferred_stop(), _checkpointer() as checkpointer:
      checkpointer.save(os.path.join(staging, PARAMS_DIR), params)
      checkpointer.wait_until_finished()
    write_atomic(os.path.join(staging, DETECTOR_JSON), json.dumps(spec, indent=2) + "\n")
    if os.path.exists(path):
      old = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.old.")
      os.replace(path, os.path.join(old, "model"))
      os.replace(staging, path)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(staging, path)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise


def read_spec(path: str) -> dict:
  """detector.json of the model folder `path`, checked for layout and format version."""
  if not os.path.isdir(path):
    raise ModelError(f"{path}: model folder not found; pass --model=W/model, the folder a run wrote")
  json_path = os.path.join(path, DETECTOR_JSON)
  if not os.path.isfile(json_path):
    raise ModelError(f"{json_path}: file missing; the model folder is incomplete: run the training again")
  if not os.path.isdir(os.path.join(path, PARAMS_DIR)):
    raise ModelError(f"{os.path.join(path, PARAMS_DIR)}: flow parameters missing; the model folder is "
                     "incomplete: run the training again")
  try:
    with open(json_path) as f:
      spec = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ModelError(f"{json_path}: unreadable ({type(e).__name__}: {e}); run the training again") from None
  if not isinstance(spec, dict) or "format_version" not in spec:
    raise ModelError(f"{json_path}: not a detector description (no format_version); run the training again")
  if spec["format_version"] != FORMAT_VERSION:
    raise ModelError(f"{json_path}: format version {spec['format_version']!r}, but this maml_iqr reads version "
                     f"{FORMAT_VERSION}; use the maml_iqr version that trained it, or train again")
  try:
    _check_fields(spec)
  except (KeyError, TypeError, ValueError) as e:
    raise ModelError(f"{json_path}: malformed ({type(e).__name__}: {e}); run the training again") from None
  return spec


def _check_fields(spec: dict) -> None:
  """Raises KeyError/TypeError/ValueError when a field `load` reads is missing or of the wrong kind."""
  f, b, v = spec["flow"], spec["backbone"], spec["views"]
  int(f["dim"]), int(f["seed"]), dict(f["settings"])
  str(b["name"]), str(b["weights_identity"]), str(b["dtype"]), int(b["input_size"])
  int(v["n_views"]), float(v["offset"]), float(v["brightness"]), float(v["contrast"]),
  float(v["saturation"])
  if spec["score"]["kind"] not in ("z2", "nll"):
    raise ValueError(f"score kind {spec['score']['kind']!r}")
  if not np.isfinite(float(spec["threshold"]["value"])):
    raise ValueError("threshold is not finite")


def _backbone(spec: dict, json_path: str, weights_path: str | None):
  """The backbone described, with its weights, after checking that they are the weights the flow saw."""
  b = spec["backbone"]
  path = b["weights_path"] if weights_path is None else weights_path
  flag = "--weights_path"
  if b["name"] == "alexnet" and path not in ("random",) and not os.path.isfile(path or ""):
    raise ModelError(f"{path or '(none)'}: AlexNet weights file not found; pass {flag}=<the torchvision "
                     f"alexnet .pth this detector was trained with> ({backbones.ALEXNET_URL})")
  try:
    identity = weights_identity(b["name"], path)
  except (ImportError, OSError) as e:
    raise ModelError(f"{b['name']} weights {path or '(packaged)'}: cannot be read ({type(e).__name__}: {e}); "
                     f"install them or pass {flag}") from None
  if identity != b["weights_identity"]:
    raise ModelError(f"{json_path}: the detector was trained on {b['name']} weights {b['weights_identity']}, but "
                     f"{path or 'the installed package'} has {identity}; pass {flag} to the weights it was trained "
                     "with (its features would not mean the same)")
  try:
    backbone = backbones.get_backbone(b["name"], path or None, tuple(b["stages"]) if b["stages"] else None)
  except ValueError as e:
    raise ModelError(f"{json_path}: backbone not usable ({e})") from None
  if backbone.input_size != b["input_size"] or backbone.feature_dim != spec["flow"]["dim"]:
    raise ModelError(f"{json_path}: {b['name']} now takes {backbone.input_size}-pixel images and gives "
                     f"{backbone.feature_dim} features, the detector expects {b['input_size']} and "
                     f"{spec['flow']['dim']}; train again")
  return backbone, backbone.load()


def load(path: str, weights_path: str | None = None) -> Detector:
  """Loads the model folder `path`. `weights_path` overrides where the backbone's weights are read (AlexNet's
  .pth moved, or efficientnet's packaged file replaced); their identity must still match."""
  path = os.path.abspath(path)
  spec = read_spec(path)
  json_path = os.path.join(path, DETECTOR_JSON)
  try:
    flow = detector_lib.make_flow(ml_collections.ConfigDict({"flow": spec["flow"]["settings"],
                                                             "seed": spec["flow"]["seed"]}), spec["flow"]["dim"])
    like = jax.eval_shape(lambda: detector_lib.init_params(flow, 0))
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    raise ModelError(f"{json_path}: flow settings unusable ({type(e).__name__}: {e}); train again") from None
  params_dir = os.path.join(path, PARAMS_DIR)
  checkpointer = _checkpointer()
  try:
    stored = _stored_shapes(checkpointer, params_dir)
    expected = _shapes(like)
    if stored != expected:
      differ = sorted(set(stored.items()) ^ set(expected.items()))[0][0]
      raise ModelError(f"{params_dir}: the flow parameters do not fit the flow in {DETECTOR_JSON} (first "
                       f"difference at {differ}); train again")
    params = checkpointer.restore(params_dir, jax.tree.map(ocp.utils.to_shape_dtype_struct, like))
  except ModelError:
    raise
  except Exception as e:  # noqa: BLE001 - orbax raises many types for missing, truncated or mismatched trees
    raise ModelError(f"{params_dir}: the flow parameters do not fit the flow in {DETECTOR_JSON} or are damaged "
                     f"({type(e).__name__}: {str(e)[:200]}); train again") from None
  finally:
    checkpointer.close()
  backbone, bparams = _backbone(spec, json_path, weights_path)
  return Detector(path, spec, flow, params, backbone, bparams)


def _shapes(tree) -> dict:
  """{'params/s1_0/fc0/kernel': ((shape), 'float32'), ...} of a pytree of arrays or array metadata."""
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): (tuple(leaf.shape), str(np.dtype(leaf.dtype)))
          for path, leaf in leaves}


def _stored_shapes(checkpointer, params_dir: str) -> dict:
  """Shapes of the saved parameters, read from orbax's metadata without reading (or failing on) the arrays."""
  metadata = checkpointer.metadata(params_dir).item_metadata
  return _shapes(getattr(metadata, "tree", metadata))


def score_images(det: Detector, images: np.ndarray, batch_images: int = 8,
                 flow_rows: int = RUN_FLOW_ROWS) -> np.ndarray:
  """Scores uint8 images (N, S, S, 3) as the run scores its test images: backbone features of the fixed
  evaluation views in batches of `batch_images` (the last padded by wrapping), then the flow's multi-view score
  in calls of `flow_rows` rows (padded). The default is the run's batch shape, which reproduces its scores bit
  for bit; fewer rows are faster for small batches and may differ in the last bit (module docstring)."""
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[1:] != (det.input_size, det.input_size, 3) or images.dtype != np.uint8:
    raise ValueError(f"images must be uint8 (N, {det.input_size}, {det.input_size}, 3), got {images.dtype} "
                     f"{images.shape}")
  feats = features_lib.extract(det.backbone, det.backbone_params, images, det.view_params(len(images)),
                               batch_images=batch_images, dtype=det.dtype)
  return detector_lib.score(det.flow, det.params, feats, det.score_kind, batch_size=flow_rows)
