"""The model folder: a round trip, the operating threshold's two rules, and one named error per way it can be
unusable (missing folder or file, unreadable or malformed detector.json, another format version, other backbone
weights, parameters that do not fit the flow described).

Checked against broken code: with load's weights-identity comparison removed, the wrong-identity tests fail
(load succeeds); with the format-version check removed, the version test fails; with the shape comparison
removed and restore given no target (orbax then restores whatever is stored), the does-not-fit test fails.
"""
import json
import os

import jax
import numpy as np
import pytest

from configs.base import base
from maml_iqr import detector, metrics, saved_model
from maml_iqr.models import backbones

THRESHOLD = {"value": 1.5, "rule": "kept_train_quantile", "quantile": 0.99, "n_train": 10}


def _config(hidden=16):
  c = base()
  c.flow.hidden, c.flow.n_blocks, c.flow.zero_init = hidden, 2, False
  c.score.n_views = 4
  c.seed = 3
  return c


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """A model folder of an efficientnet_lite0 detector with a small random flow, and its params."""
  c = _config()
  bb = backbones.get_backbone("efficientnet_lite0")
  params = detector.init_params(detector.make_flow(c, bb.feature_dim), 7)
  path = str(tmp_path_factory.mktemp("models") / "model")
  saved_model.save(path, c, bb, params, THRESHOLD, {"dataset": "synthetic"})
  return path, params


def _copy(path, tmp_path, edit=None):
  """A copy of the model folder, with detector.json edited by `edit(spec)`."""
  import shutil
  dst = str(tmp_path / "copy")
  shutil.copytree(path, dst)
  if edit is not None:
    json_path = os.path.join(dst, saved_model.DETECTOR_JSON)
    with open(json_path) as f:
      spec = json.load(f)
    edit(spec)
    with open(json_path, "w") as f:
      json.dump(spec, f)
  return dst


def test_round_trip_restores_the_flow_and_settings(saved):
  path, params = saved
  det = saved_model.load(path)
  assert jax.tree.structure(det.params) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(det.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert det.threshold == 1.5 and det.score_kind == "z2" and det.input_size == 224
  assert det.flow.permutation_seed == 3 and det.flow.hidden == 16  # the permutations depend on the seed
  assert det.view_params(2).shape == (2, 4, 4)
  np.testing.assert_allclose(det.view_params(1)[0, :, 0], [45, 135, 225, 315])  # base.py's half-step offset
  assert det.spec["trained_on"] == {"dataset": "synthetic"}


def test_saving_again_replaces_the_folder(saved, tmp_path):
  path, params = saved
  dst = _copy(path, tmp_path)
  c = _config()
  saved_model.save(dst, c, backbones.get_backbone("efficientnet_lite0"), params, dict(THRESHOLD, value=2.5))
  assert saved_model.load(dst).threshold == 2.5
  assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []  # no staging folder left behind


def test_missing_folder(tmp_path):
  with pytest.raises(saved_model.ModelError, match="model folder not found"):
    saved_model.load(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("missing", [saved_model.DETECTOR_JSON, saved_model.PARAMS_DIR])
def test_missing_file(saved, tmp_path, missing):
  import shutil
  dst = _copy(saved[0], tmp_path)
  target = os.path.join(dst, missing)
  shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
  with pytest.raises(saved_model.ModelError, match="missing"):
    saved_model.load(dst)


def test_unreadable_detector_json(saved, tmp_path):
  dst = _copy(saved[0], tmp_path)
  with open(os.path.join(dst, saved_model.DETECTOR_JSON), "w") as f:
    f.write("{not json")
  with pytest.raises(saved_model.ModelError, match="unreadable"):
    saved_model.load(dst)


def test_malformed_detector_json(saved, tmp_path):
  dst = _copy(saved[0], tmp_path, lambda s: s.pop("views"))
  with pytest.raises(saved_model.ModelError, match="malformed"):
    saved_model.load(dst)


def test_other_format_version(saved, tmp_path):
  dst = _copy(saved[0], tmp_path, lambda s: s.update(format_version=saved_model.FORMAT_VERSION + 1))
  with pytest.raises(saved_model.ModelError, match="format version"):
    saved_model.load(dst)


def test_other_backbone_weights(saved, tmp_path):
  dst = _copy(saved[0], tmp_path, lambda s: s["backbone"].update(weights_identity="0123456789abcdef"))
  with pytest.raises(saved_model.ModelError, match="trained on efficientnet_lite0 weights 0123456789abcdef"):
    saved_model.load(dst)


def test_weights_path_flag_must_point_at_the_same_weights(saved, tmp_path):
  other = tmp_path / "other.pth"
  other.write_bytes(b"not the weights the detector was trained with")
  with pytest.raises(saved_model.ModelError, match="pass --weights_path"):
    saved_model.load(saved[0], weights_path=str(other))


def test_missing_alexnet_weights_file(saved, tmp_path):
  def to_alexnet(s):
    s["backbone"].update(name="alexnet", weights_path=str(tmp_path / "gone.pth"), stages=None)
  dst = _copy(saved[0], tmp_path, to_alexnet)
  with pytest.raises(saved_model.ModelError, match="AlexNet weights file not found; pass --weights_path"):
    saved_model.load(dst)


def test_parameters_that_do_not_fit_the_flow(saved, tmp_path):
  dst = _copy(saved[0], tmp_path, lambda s: s["flow"]["settings"].update(hidden=32))
  with pytest.raises(saved_model.ModelError, match="do not fit the flow"):
    saved_model.load(dst)


def test_threshold_is_f1_max_on_labelled_validation():
  labels = np.array([0, 0, 0, 1, 1, 0, 1])
  scores = np.array([0.1, 0.4, 0.2, 0.9, 0.6, 0.7, 0.8])
  t = saved_model.operating_threshold(labels, scores, np.arange(10.0))
  assert t["rule"] == "f1_max_validation"
  assert 0.4 < t["value"] < 0.6  # flags 0.6 and up (F1 6/7), not only 0.8 and up (F1 0.8) nor also 0.4 (0.75)
  flagged = scores > t["value"]
  f1 = 2 * (flagged & (labels == 1)).sum() / (flagged.sum() + labels.sum())
  assert f1 == pytest.approx(metrics.f1_max(labels, scores)) == pytest.approx(t["validation_f1"])


def test_threshold_without_labelled_defects_is_a_quantile_of_kept_training_scores():
  train = np.arange(1000.0)
  for labels, scores in (([], []), ([0, 0], [1.0, 2.0]), ([1, 1], [1.0, 2.0])):
    t = saved_model.operating_threshold(np.array(labels), np.array(scores), train)
    assert t["rule"] == "kept_train_quantile" and t["quantile"] == saved_model.TRAIN_QUANTILE
    assert t["value"] == pytest.approx(np.quantile(train, saved_model.TRAIN_QUANTILE))
