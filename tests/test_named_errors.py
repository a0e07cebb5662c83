"""Items 3-5 of issue 15: settings that cannot work fail before the backbone runs, with one line that names the
flag and the fix; bad command lines and weights files are named errors, not tracebacks; the weight reader never
asks for more memory than the file holds.

Checked against the code before this change (commit ab84591): every feasibility case ran the backbone (the
patched `feature_cache.features` failed the test) and then died after all the training or, for
val_fraction=0, wrote no warning; the launch cases printed tracebacks with exit code 1; the crafted weights
raised MemoryError or read wrong-shaped weights without a word.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import folder as folder_config
from configs.base import UnknownVariantError
from maml_iqr import config_check, feature_cache, run
from maml_iqr.config_check import ConfigError, FeasibilityError
from maml_iqr.models import backbones, efficientnet_lite, torch_weights
from tests.conftest import REPO
from tests.test_torch_weights import Payload, Storage, Tensor, contiguous, write_legacy, write_zip


def _config(folders, **overrides):
  c = folder_config.get_config("quick")
  c.data.root = str(folders / "good")
  c.data.defective_root = str(folders / "bad")
  c.noise.ratio = 0.5
  c.refine.folds = 2  # cross-fitted flows (configs/folder.py's 1 is gaussian_iqr's form)
  for k, v in overrides.items():
    section, name = k.split(".") if "." in k else (None, k)
    (c[section] if section else c)[name] = v
  return c


@pytest.fixture
def no_backbone(monkeypatch):
  """Fails the test if any backbone feature is computed (the first backbone work of a run)."""
  monkeypatch.setattr(feature_cache, "features", lambda *a, **k: pytest.fail("the backbone ran before the check"))


# 24 good images (12 train, 12 test) and 10 defective (2 to validation, 8 to inject) in `folders`.
INFEASIBLE = [
    ({"noise.ratio": 1.0}, r"--config.noise.ratio=1.0 and noise.overlap=False move every defective test image "
                           r"\(8\) into training.*set --config.noise.overlap=True"),
    ({"noise.ratio": 1.0, "noise.mode": "train_share", "noise.on_shortage": "cap"},
     r"--config.noise.ratio=1.0 with --config.noise.on_shortage=cap .*no defective test image is left"),
    ({"data.test_fraction": 0.0}, r"the test set has no good images .*raise --config.data.test_fraction"),
    ({"method": "maml_iqr", "maml.task_size": 9},
     r"--config.maml.task_size=9: .* the smallest fit set of these 16 training images holds 8; lower "
     r"--config.maml.task_size to at most 8"),
    ({"method": "one_shot", "train.init": "meta", "refine.min_kept": 2, "refine.max_remove_total": 0.9},
     r"--config.maml.task_size=5: train.init=meta .* as few as 2"),
    ({"method": "iterative", "refine.folds": 17}, r"--config.refine.folds=17: the training set has only 16"),
    ({"method": "iterative", "noise.val_fraction": 0.0, "refine.auto_k_quantile": 0.9},
     r"--config.refine.auto_k_quantile=0.9 .* the validation set has none"),
]


@pytest.mark.parametrize("overrides, message", INFEASIBLE, ids=[",".join(o) for o, _ in INFEASIBLE])
def test_infeasible_settings_fail_before_the_backbone_runs(folders, tmp_path, no_backbone, overrides, message):
  with pytest.raises(FeasibilityError, match=message):
    run.train_and_evaluate(_config(folders, **overrides), str(tmp_path))
  assert not (tmp_path / "run_config.json").exists()  # the workdir stays free for the corrected config


def _started(config, tmp_path, monkeypatch) -> dict:
  """results.json of a run stopped where its features would be computed: after every check, before any work."""
  class Stop(Exception):
    pass

  def stop(*a, **k):
    raise Stop()

  monkeypatch.setattr(feature_cache, "features", stop)
  with pytest.raises(Stop):
    run.train_and_evaluate(config, str(tmp_path))
  return json.loads((tmp_path / "results.json").read_text())


def test_no_validation_auroc_is_said_in_the_log_and_in_results(folders, tmp_path, monkeypatch, caplog):
  """val_fraction=0 with a method that removes images: allowed, but said (the documented choice)."""
  caplog.set_level("INFO")
  started = _started(_config(folders, method="maml_iqr", **{"noise.val_fraction": 0.0}), tmp_path, monkeypatch)
  assert started["status"] == "data"
  assert len(started["warnings"]) == 1 and "no validation AUROC" in started["warnings"][0]
  assert "WARNING: no validation AUROC" in caplog.text


@pytest.mark.parametrize("method,folds,warned", [("maml_iqr", 1, True), ("iterative", 1, True),
                                                 ("maml_iqr", 2, False), ("gaussian_iqr", 1, False)])
def test_a_flow_that_scores_the_images_it_was_fitted_on_is_said(folders, tmp_path, monkeypatch, method, folds,
                                                                warned):
  """A flow-scored method with refine.folds=1 runs, and says its scores come from flows fitted on the scored
  images; the Gaussian's measured form (folds=1) and cross-fitted flows say nothing."""
  started = _started(_config(folders, method=method, **{"refine.folds": folds}), tmp_path, monkeypatch)
  assert any("refine.folds=1" in w for w in started["warnings"]) == warned, started["warnings"]


def _launch(*args, timeout=120):
  cmd = [sys.executable, "-m", "launch.main", *args]
  p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
  return p.returncode, p.stdout + p.stderr, p.stderr


def _error_lines(stderr: str) -> list[str]:
  return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


def test_launch_infeasible_run_is_one_line_exit_2_and_status_failed(folders, tmp_path):
  code, out, err = _launch("--config=configs/folder.py:quick", f"--workdir={tmp_path}",
                           f"--config.data.root={folders / 'good'}", f"--config.data.defective_root={folders / 'bad'}",
                           "--config.noise.ratio=1.0")
  assert code == 2 and "Traceback" not in out, out
  lines = _error_lines(err)
  assert len(lines) == 1 and "--config.noise.ratio=1.0" in lines[0] and "noise.overlap=True" in lines[0], err
  failed = json.loads((tmp_path / "results.json").read_text())
  assert failed["status"] == "failed" and "--config.noise.ratio=1.0" in failed["error"]


@pytest.mark.parametrize("args, expected", [
    (["--config=configs/folder.py:quick", "--config.refine.kk=1"],
     "error: --config.refine.kk: refine has no key 'kk'"),
    (["--config=configs/folder.py:quick", "--config.refin.k=1"],
     "error: --config.refin.k: config has no key 'refin' (did you mean 'refine'?)"),
    (["--config=configs/mvtec.py:quik"], "error: --config=configs/mvtec.py:quik: unknown config variant 'quik'"),
])
def test_launch_bad_command_line_is_one_line_exit_2(tmp_path, args, expected):
  code, out, err = _launch(*args, f"--workdir={tmp_path / 'w'}", timeout=60)
  assert code == 2 and "Traceback" not in out, out
  assert _error_lines(err) == [ln for ln in err.splitlines() if ln.strip()] and expected in err, err
  assert not (tmp_path / "w").exists()  # nothing ran


def test_sweep_bad_command_line_is_one_line_exit_2(tmp_path):
  p = subprocess.run([sys.executable, "-m", "launch.sweep", "--sweep=configs/sweeps/mtd_table.py",
                      f"--workdir={tmp_path / 'w'}", "--sweep.seedz=(0,)"], cwd=REPO, capture_output=True, text=True,
                     timeout=60)
  assert p.returncode == 2 and "Traceback" not in p.stdout + p.stderr, p.stderr
  assert "error: --sweep.seedz: sweep has no key 'seedz' (did you mean 'seeds'?)" in p.stderr
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("name", ["default", "elpv", "folder", "ksdd2", "mtd", "mvtec"])
def test_every_config_refuses_an_unknown_variant(name):
  path = os.path.join(REPO, "configs", f"{name}.py")
  full, quick = config_check.load_config_file(path), config_check.load_config_file(path + ":quick")
  assert quick.flow.hidden < full.flow.hidden  # ':quick' still shrinks
  with pytest.raises(UnknownVariantError, match="unknown config variant 'quik'") as refused:
    config_check.load_config_file(path + ":quik")
  assert ("configs/<name>.py:table" in str(refused.value)) == (name == "default")  # it lists what the config takes


# --- weights -------------------------------------------------------------------------------------------------

ALEXNET_SHAPES = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3),
                  10: (256, 256, 3, 3)}


def _alexnet_state(wrong=None, missing=None):
  state = {}
  for i, shape in ALEXNET_SHAPES.items():
    state[f"features.{i}.weight"] = contiguous(f"w{i}", np.zeros(shape, np.float32))
    state[f"features.{i}.bias"] = contiguous(f"b{i}", np.zeros(shape[:1], np.float32))
  if wrong:
    state[wrong] = contiguous("x", np.zeros((7, 7), np.float32))
  if missing:
    del state[missing]
  return state


@pytest.mark.parametrize("wrong, missing, message", [
    ("features.3.weight", None, r"features.3.weight has shape \(7, 7\), expected \(192, 64, 5, 5\)"),
    (None, "features.10.bias", "features.10.bias is missing"),
])
def test_alexnet_weights_with_wrong_keys_or_shapes(tmp_path, wrong, missing, message):
  path = tmp_path / "alexnet.pth"
  write_zip(path, _alexnet_state(wrong, missing))
  with pytest.raises(torch_weights.WeightsError, match=f"{path}: not torchvision AlexNet weights .*{message}"):
    backbones.get_backbone("alexnet", str(path)).load()


def test_alexnet_weights_with_the_right_layout_load(tmp_path):
  path = tmp_path / "alexnet.pth"
  write_zip(path, _alexnet_state())
  params = backbones.get_backbone("alexnet", str(path)).load()
  assert params["conv1"]["kernel"].shape == (5, 5, 64, 192)


def test_efficientnet_weights_of_another_network(tmp_path):
  path = tmp_path / "other.pth"
  write_zip(path, _alexnet_state())
  with pytest.raises(torch_weights.WeightsError, match=f"{path}: not EfficientNet-Lite0 weights .*_conv_stem.weight "
                                                       "is missing"):
    efficientnet_lite.load_params(str(path))


def test_efficientnet_weights_path_that_does_not_exist_is_a_config_error(folders, tmp_path):
  c = _config(folders, **{"backbone.weights_path": str(tmp_path / "missing.pth")})
  with pytest.raises(ConfigError, match=r"--config.backbone.weights_path=.*missing.pth.*an existing "
                                        r"EfficientNet-Lite0 .pth file"):
    config_check.validate(c)


def test_launch_refused_pickle_is_one_line_exit_2(folders, tmp_path):
  marker = tmp_path / "marker"
  evil = tmp_path / "evil.pth"
  write_zip(evil, {**_alexnet_state(), "x": Payload(os.system, f"touch {marker}")})
  code, out, err = _launch("--config=configs/folder.py:quick", f"--workdir={tmp_path / 'w'}",
                           f"--config.data.root={folders / 'good'}", "--config.backbone.name=alexnet",
                           f"--config.backbone.weights_path={evil}")
  assert code == 2 and "Traceback" not in out, out
  lines = _error_lines(err)
  assert len(lines) == 1 and "refused global posix.system" in lines[0] and str(evil) in lines[0], err
  assert not marker.exists()
  assert json.loads((tmp_path / "w" / "results.json").read_text())["status"] == "failed"


class _LyingFlat:
  """A storage that says it holds 2**40 floats and brings 4 bytes."""
  dtype, size = np.dtype(np.float32), 2 ** 40

  def astype(self, dtype):
    del dtype
    return np.ones(1, np.float32)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_zero_strides_cannot_ask_for_terabytes(tmp_path, fmt):
  """2**24 x 2**24 floats (1 PiB) viewed from a one-element storage with zero strides."""
  path = tmp_path / "tiny.pth"
  (write_zip if fmt == "zip" else write_legacy)(
      path, {"w": Tensor(Storage("0", np.ones(1, np.float32)), 0, (2 ** 24, 2 ** 24), (0, 0))})
  assert path.stat().st_size < 1024
  with pytest.raises(torch_weights.WeightsError, match=r"tiny.pth: .*has 281474976710656 elements but its storage "
                                                       r"holds 1"):
    torch_weights.load_state_dict(path)


def test_legacy_storage_longer_than_the_file_is_refused_before_reading(tmp_path):
  path = tmp_path / "liar.pth"
  storage = Storage("0", np.ones(1, np.float32))
  storage.flat = _LyingFlat()
  write_legacy(path, {"w": Tensor(storage, 0, (1,), (1,))})
  assert path.stat().st_size < 1024
  with pytest.raises(torch_weights.WeightsError, match=r"liar.pth: .*file is truncated: 4398046511104 bytes "
                                                       r"expected, 4 left"):
    torch_weights.load_state_dict(path)
