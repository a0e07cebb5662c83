"""Reliability: bad configs fail at start-up, numerics stay finite, faults (corrupt checkpoints, unwritable
folders, failed writes, SIGKILL) never cost results, and runs are deterministic.

Heavy pieces are shared: one in-process reference run (run twice: the determinism check) serves the
corrupt-checkpoint, NaN-failure and SIGKILL tests.
"""
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from maml_iqr import config_check, detector, io as io_lib, run
from maml_iqr import features as features_lib
from maml_iqr.checkpoint import Checkpointer
from maml_iqr.config_check import ConfigError
from maml_iqr.data import readers
from maml_iqr.data.contamination import contaminate
from maml_iqr.models import backbones
from maml_iqr.models import flow as flow_lib
from tests.conftest import REPO, resumable_args, resumable_config

# The run every heavy test shares (conftest.py's, which test_preemption.py resumes to as well): 3 refinement
# iterations (removing 2, 2, 0 images), several checkpoints, warm-started fold fits in them, and
# "train.meta_epochs": 40, a final training of seconds, so a kill can land inside it.
NUMBERS = ("auroc", "aupr", "removal", "test_scores", "injected_ids", "n_final_train")
_config = resumable_config
_args = resumable_args


@pytest.fixture(scope="module")
def folders(session_folders):
  """The session's synthetic folders: the shared run's config names them."""
  return session_folders


def _same_numbers(a: dict, b: dict) -> None:
  for key in NUMBERS:
    assert a[key] == b[key], key
  assert [h["removed_ids"] for h in a["refinement"]] == [h["removed_ids"] for h in b["refinement"]]


@pytest.fixture(scope="module")
def reference(folders, resumable_reference, synthetic_feature_cache, tmp_path_factory):
  """The shared run, done twice in this process: (first results, second results, first workdir). The first is the
  session's (it extracted its own features); the second reads those of conftest.py's in-process extraction, so
  the determinism check still compares two extractions."""
  res_a, a = resumable_reference
  res_b = run.train_and_evaluate(_config(folders, cache_dir=synthetic_feature_cache),
                                 str(tmp_path_factory.mktemp("ref_b")))
  return res_a, res_b, a


# --- 1. config validation ------------------------------------------------------------------------------------

BAD_VALUES = [
    ("seed", -1, "integer >= 0"), ("seed", 1.5, "integer >= 0"), ("method", "nonsense", "one of"),
    ("data.name", "imagenet", "one of"), ("data.root", "", "required"), ("data.root", "/nonexistent/x", "existing"),
    ("data.defective_root", "/nonexistent/y", "existing folder"), ("data.test_fraction", -0.1, "[0, 1)"),
    ("data.test_fraction", 1.0, "[0, 1)"), ("data.split_seed", -3, "integer >= 0"),
    ("noise.ratio", -0.1, "[0, 1]"), ("noise.ratio", 1.5, "[0, 1]"), ("noise.ratio", float("nan"), "finite"),
    ("noise.mode", "random", "defect_share or train_share"), ("noise.on_shortage", "ignore", "fail or cap"),
    ("noise.val_fraction", 1.5, "[0, 1]"), ("noise.overlap", "yes", "True or False"),
    ("backbone.name", "resnet", "one of"), ("backbone.stages", ("stride8", "stride64"), "non-empty tuple of"),
    ("backbone.stages", (), "non-empty tuple of"), ("flow.n_blocks", 0, "positive integer"),
    ("flow.hidden", -64, "positive integer"), ("flow.clamp", 0.0, "positive"), ("flow.zero_init", 1, "True or False"),
    ("train.lr", 0.0, "positive"), ("train.lr", float("inf"), "finite"), ("train.eps", -1e-4, "positive"),
    ("train.b1", 1.0, "[0, 1)"), ("train.b1", -0.1, "[0, 1)"), ("train.b2", 1.0, "[0, 1)"),
    ("train.weight_decay", -1e-5, ">= 0"), ("train.meta_epochs", 0, "positive integer"),
    ("train.sub_epochs", -1, "positive integer"), ("train.batch_size", 0, "positive integer"),
    ("train.n_views", 0, "positive integer"), ("train.n_views", 3, "at most train.n_cached_views"),
    ("train.n_cached_views", 0, "positive integer"), ("train.recompute_features", "false", "True or False"),
    ("train.view_seed", -1, "integer >= 0"), ("train.max_angle", 181.0, "[0, 180]"),
    ("train.max_angle", -1.0, "[0, 180]"), ("train.brightness", 1.0, "[0, 1)"), ("train.contrast", -0.5, "[0, 1)"),
    ("train.saturation", 2.0, "[0, 1)"), ("score.kind", "l2", "z2 or nll"), ("score.n_views", 0, "positive integer"),
    ("maml.inner_lr", 0.0, "positive"), ("maml.meta_lr", -1.0, "positive"),
    ("maml.inner_steps", 0, "positive integer"), ("maml.tasks_per_batch", 0, "positive integer"),
    ("maml.task_size", 1, "at least 2"), ("maml.task_size", 0, "positive integer"),
    ("maml.query_fraction", 0.0, "(0, 1)"), ("maml.query_fraction", 1.0, "(0, 1)"),
    ("maml.meta_epochs", 0, "positive integer"), ("maml.first_order", "True", "True or False"),
    ("refine.warm_start", None, "True or False"), ("maml.objective", "mamll", "registered meta-objective"),
    ("maml.score_tasks", 0, "positive integer"), ("train.init", "metta", "fresh or meta"),
    ("refine.k", 0.0, "positive"), ("refine.k", -1.5, "positive"),
    ("refine.k", "1.5", "finite number"), ("refine.max_iterations", 0, "positive integer"),
    ("refine.min_kept", 0, "positive integer"), ("refine.score_epochs", 0, "positive integer"),
    ("refine.patience", 0, "positive integer"), ("refine.max_remove_per_iteration", 0.0, "(0, 1]"),
    ("refine.max_remove_per_iteration", 1.5, "(0, 1]"), ("refine.max_remove_total", 0.0, "(0, 1]"),
    ("refine.max_remove_total", 1.01, "(0, 1]"), ("refine.leave_one_out", "yes", "True or False"),
    ("data.object_pattern", 3, "a string"), ("data.object_pattern", "^(part", "a regular expression (missing )"),
    ("data.object_pattern", r"(lot\d+)_(part\d+)", "at most one group"),
]


@pytest.mark.parametrize("flag, value, expected", BAD_VALUES, ids=[f"{f}={v!r}" for f, v, _ in BAD_VALUES])
def test_each_bad_value_is_one_config_error_naming_the_flag(folders, flag, value, expected):
  c = ml_collections.ConfigDict(_config(folders).to_dict(), type_safe=False)  # wrong types too (sweeps, code)
  section, name = flag.split(".") if "." in flag else (None, flag)
  (c[section] if section else c)[name] = value
  with pytest.raises(ConfigError) as e:
    config_check.validate(c)
  assert f"--config.{flag}=" in str(e.value) and expected in str(e.value), str(e.value)


@pytest.mark.parametrize("others", [{"method": "iterative"}, {"refine.folds": 2}])
def test_leave_one_out_is_refused_where_it_would_be_ignored(folders, others):
  """Only gaussian_iqr without folds reads refine.leave_one_out; elsewhere it would change nothing, silently."""
  c = _config(folders)
  c.refine.leave_one_out = True
  for flag, value in others.items():
    section, name = flag.split(".") if "." in flag else (None, flag)
    (c[section] if section else c)[name] = value
  with pytest.raises(ConfigError, match=r"--config.refine.leave_one_out=True: .*method=gaussian_iqr and "
                                        r"refine.folds=1"):
    config_check.validate(c)
  c.method, c.refine.folds, c.refine.warm_start = "gaussian_iqr", 1, False
  config_check.validate(c)  # the control: where it is read, it is accepted


@pytest.mark.parametrize("dataset, flag, value, expected", [
    ("mvtec", "data.category", "all", "MVTec-AD category"), ("elpv", "data.category", "quad", "mono or poly"),
    ("elpv", "data.elpv_one_third", "maybe", "drop, good or defective"),
    ("elpv", "data.elpv_two_thirds", "", "drop, good or defective"),
    ("elpv", "data.mtd_split", "by_tile", "differnet unless data.name=magnetic_tile"),
    ("elpv", "data.mtd_split", "by_part", "one of .'differnet', 'by_tile'."),
    ("elpv", "data.object_pattern", r"^(part\d+)_", "empty unless data.name=folder"),
])
def test_dataset_specific_values(folders, dataset, flag, value, expected):
  c = _config(folders)
  c.data.name = dataset
  c.data[flag.split(".")[1]] = value
  with pytest.raises(ConfigError, match=f"--config.{flag}=.*{expected}"):
    config_check.validate(c)


def test_a_folder_may_name_its_objects(folders):
  """The control for data.object_pattern's refusals: one group, a folder dataset."""
  c = _config(folders)
  c.data.object_pattern = r"^(part\d+)_"
  config_check.validate(c)


def test_gaussian_iqr_refuses_a_warm_start(folders):
  """A Gaussian has no params to carry to the next iteration; the same flag is fine for a flow method."""
  c = _config(folders)
  c.refine.warm_start = True
  config_check.validate(c)
  c.method = "gaussian_iqr"
  with pytest.raises(ConfigError, match=r"--config.refine.warm_start=True.*gaussian_iqr"):
    config_check.validate(c)


def test_alexnet_without_weights_file(folders, tmp_path):
  c = _config(folders)
  c.backbone.name = "alexnet"
  for path in ("", str(tmp_path / "missing.pth")):
    c.backbone.weights_path = path
    with pytest.raises(ConfigError, match=r"--config.backbone.weights_path=.*alexnet-owt"):
      config_check.validate(c)


def test_unwritable_cache_dir_and_workdir_fail_before_training(folders, tmp_path, monkeypatch):
  """Tests run as root, where chmod does not stop writes: the folders sit under a regular file instead."""
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  c = _config(folders)
  c.cache_dir = str(blocker / "cache")
  with pytest.raises(ConfigError, match=r"--config.cache_dir=.*cannot write there"):
    config_check.validate(c)
  monkeypatch.setattr(backbones, "get_backbone", lambda *a: pytest.fail("work started before the check"))
  for workdir in (blocker / "sub" / "dir", blocker):
    with pytest.raises(ConfigError, match=r"--workdir=.*cannot write there"):
      run.train_and_evaluate(_config(folders), str(workdir))
  with pytest.raises(ConfigError, match="--workdir is required"):
    run.train_and_evaluate(_config(folders), "")


def test_launch_with_a_bad_flag_exits_quickly_without_traceback(folders, tmp_path):
  start = time.time()
  p = subprocess.run([sys.executable, "-m", "launch.main", "--config=configs/folder.py:quick",
                      f"--workdir={tmp_path / 'w'}", f"--config.data.root={folders / 'good'}",
                      "--config.refine.k=-1.0"], cwd=REPO, capture_output=True, text=True, timeout=60)
  out = p.stdout + p.stderr
  assert p.returncode != 0 and time.time() - start < 30, out
  assert "error: --config.refine.k=-1.0: expected a positive number" in out
  assert "Traceback" not in out
  assert not (tmp_path / "w" / "results.json").exists()


# --- 2. numerics ---------------------------------------------------------------------------------------------

EXTREMES = [0.0, 1e4, -1e4, 1e-30, 1e10, -1e10]


@pytest.mark.parametrize("zero_init", [True, False])
@pytest.mark.parametrize("n_blocks", [2, 8])
def test_flow_and_scores_stay_finite_on_extreme_features(zero_init, n_blocks):
  flow = flow_lib.Flow(472, n_blocks=n_blocks, hidden=64, zero_init=zero_init)
  params = flow.init(jax.random.key(0), jnp.zeros((1, 472)))
  mixed = np.random.default_rng(0).choice(EXTREMES, (2, 472)).astype(np.float32)
  x = np.concatenate([np.stack([np.full(472, v, np.float32) for v in EXTREMES]), mixed])
  if n_blocks == 2:  # the raw flow, unguarded, is already finite on +-1e4 at this size
    z, logdet = flow.apply(params, x[:4])
    assert np.isfinite(z).all() and np.isfinite(logdet).all()
  z, logdet = flow.apply(params, detector.bound_features(jnp.asarray(x)))
  assert np.isfinite(z).all() and np.isfinite(logdet).all()
  for kind in ("z2", "nll"):
    s = detector.score(flow, params, np.repeat(x[:, None], 2, 1), kind)
    assert np.isfinite(s).all(), (kind, s)
  assert np.isfinite(detector.loss_fn(flow, params, jnp.asarray(x)))


def test_feature_bound_is_what_keeps_huge_inputs_finite():
  """Without the guard an 8-block PyTorch-init flow scores 1e10 features as inf; with it, as 1e4 features."""
  flow = flow_lib.Flow(472, n_blocks=8, hidden=64, zero_init=False)
  params = flow.init(jax.random.key(0), jnp.zeros((1, 472)))
  huge = np.full((1, 472), 1e10, np.float32)
  z, _ = flow.apply(params, huge)
  assert not np.isfinite(flow_lib.z2_score(z)).all()  # documents why FEATURE_BOUND exists
  s = detector.score(flow, params, huge[:, None], "z2")
  assert np.isfinite(s).all()
  assert s[0] == detector.score(flow, params, np.full((1, 1, 472), detector.FEATURE_BOUND, np.float32), "z2")[0]
  nan = detector.score(flow, params, np.full((1, 1, 472), np.nan, np.float32), "z2")
  assert np.isnan(nan).all()  # NaN is not hidden by the clip: refinement still refuses it


def test_efficientnet_features_of_constant_images_are_finite():
  bb = backbones.get_backbone("efficientnet_lite0")
  images = np.stack([np.full((bb.input_size, bb.input_size, 3), v, np.uint8) for v in (0, 255, 128)])
  images[2, ::2] = 255  # saturated stripes on grey
  feats = features_lib.extract(bb, bb.load(), images, features_lib.fixed_view_params(3, 2, 0.0), batch_images=4)
  assert feats.shape == (3, 2, bb.feature_dim) and np.isfinite(feats).all()
  flow = flow_lib.Flow(bb.feature_dim, n_blocks=2, hidden=64, zero_init=False)
  params = flow.init(jax.random.key(0), jnp.zeros((1, bb.feature_dim)))
  assert np.isfinite(detector.score(flow, params, feats, "nll")).all()


def _tiny_train(flow, data, epochs=3, seed=0):
  t = ml_collections.ConfigDict(dict(lr=1e-3, b1=0.8, b2=0.8, eps=1e-4, weight_decay=0.0, batch_size=2, n_views=1))
  params = detector.init_params(flow, 0)
  return detector.train(flow, params, detector.make_optimizer(t), jnp.asarray(data), np.arange(len(data)), epochs,
                        np.random.default_rng(seed), t, label="tiny")


def test_train_raises_on_nan_features():
  flow = flow_lib.Flow(6, n_blocks=2, hidden=8)
  data = np.random.default_rng(0).normal(size=(8, 2, 6)).astype(np.float32)
  data[5, :, 0] = np.nan
  with pytest.raises(FloatingPointError, match=r"flow training tiny: the loss became non-finite .* at step \d+ "
                                               r"of \d+; lower --config.train.lr or check the features for NaN"):
    _tiny_train(flow, data)


def test_train_names_the_first_step_whose_loss_is_not_finite(monkeypatch):
  """A loss that turns NaN only on batches holding image 7 (marked by a large value): the step is exact."""
  original = detector.loss_fn
  monkeypatch.setattr(detector, "loss_fn",
                      lambda f, p, x: jnp.where(jnp.max(x) > 50, jnp.nan, original(f, p, x)))
  detector.make_train_chunk.cache_clear()
  detector.make_train_step.cache_clear()
  try:
    flow = flow_lib.Flow(6, n_blocks=2, hidden=8, permutation_seed=7)
    data = np.random.default_rng(0).normal(size=(8, 2, 6)).astype(np.float32)
    data[7] = 100.0
    rng = np.random.default_rng(0)
    idx = np.concatenate([detector.epoch_indices(rng, np.arange(8), 2, 1, 2) for _ in range(3)])
    first = int(np.argmax((idx[:, :, 0] == 7).any(-1)))
    with pytest.raises(FloatingPointError, match=f"at step {first} of {len(idx)};"):
      _tiny_train(flow, data)
  finally:
    detector.make_train_chunk.cache_clear()
    detector.make_train_step.cache_clear()


def test_nan_in_final_training_fails_cleanly_and_keeps_checkpoints(folders, reference, tmp_path, monkeypatch,
                                                                   capsys):
  real_train = detector.train

  def poisoned(flow, params, optimizer, data, *a, **kw):
    if kw.get("label") == "5":  # the final detector
      data = data.at[0, :, 0].set(jnp.nan)
    return real_train(flow, params, optimizer, data, *a, **kw)

  monkeypatch.setattr(detector, "train", poisoned)
  c = _config(folders, cache_dir=str(reference[2] / "cache"))  # the shared features: no extraction
  with pytest.raises(SystemExit) as e:
    run.main(c, str(tmp_path))
  assert e.value.code == 2  # one line on stderr, exit code 2 (issue 15)
  assert "error: flow training 5: the loss became non-finite" in capsys.readouterr().err
  failed = json.loads((tmp_path / "results.json").read_text())
  assert failed["status"] == "failed" and "non-finite" in failed["error"]  # not mistaken for a killed run
  flow = detector.make_flow(c, backbones.get_backbone("efficientnet_lite0").feature_dim)
  ckpt = Checkpointer(str(tmp_path / "checkpoints" / "refine"))
  init = detector.init_params(flow, c.seed)
  step, params, meta = ckpt.restore_latest({f"fold_{f}": init for f in range(c.refine.folds)})
  ckpt.close()
  assert step == 3 and meta["stop_reason"] == reference[0]["stop_reason"]
  assert [h["removed_ids"] for h in meta["history"]] == [h["removed_ids"] for h in reference[0]["refinement"]]
  assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(params))


# --- 3. faults -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_newest_checkpoint_falls_back_and_rerun_completes(folders, reference, tmp_path, capsys, caplog,
                                                                  damage):
  caplog.set_level(logging.INFO)
  workdir = tmp_path / "w"
  shutil.copytree(reference[2], workdir)
  newest = workdir / "checkpoints" / "refine" / "3"
  files = [p for p in newest.rglob("*") if p.is_file()]
  assert files
  for p in files:
    b = p.read_bytes()
    p.write_bytes(b[:len(b) // 2] if damage == "truncate" else b"\x00garbage" * 7)
  c = _config(folders)
  flow = detector.make_flow(c, backbones.get_backbone("efficientnet_lite0").feature_dim)
  ckpt = Checkpointer(str(workdir / "checkpoints" / "refine"))
  init = detector.init_params(flow, c.seed)
  step, _, meta = ckpt.restore_latest({f"fold_{f}": init for f in range(c.refine.folds)})
  ckpt.close()
  assert step == 2 and meta["iteration"] == 2
  assert "WARNING: checkpoint step 3" in capsys.readouterr().out + caplog.text
  assert not newest.exists() and len(list((workdir / "checkpoints" / "refine.unreadable").iterdir())) == 1
  if damage == "garbage":  # one rerun suffices: it redoes iteration 2 and overwrites the damaged step
    res = run.train_and_evaluate(c, str(workdir))
    out = capsys.readouterr().out + caplog.text
    assert "resumed refinement after iteration 2" in out
    _same_numbers(reference[0], res)


def test_write_atomic_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
  path = tmp_path / "results.json"
  io_lib.write_json(str(path), {"old": 1})

  def fail(*a, **kw):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(os, "replace", fail)
  with pytest.raises(OSError, match="No space"):
    io_lib.write_json(str(path), {"new": 2})
  monkeypatch.undo()

  real_fdopen = os.fdopen

  class HalfFile:  # the write itself dies midway: half the bytes reach the disk, then ENOSPC
    def __init__(self, *a, **kw):
      self._f = real_fdopen(*a, **kw)

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self._f.close()

    def write(self, data):
      self._f.write(data[:len(data) // 2])
      self._f.flush()
      raise OSError(28, "No space left on device (midway)")

  monkeypatch.setattr(os, "fdopen", HalfFile)
  with pytest.raises(OSError, match="midway"):
    io_lib.write_atomic(str(path), b"y" * 10_000)
  monkeypatch.undo()
  monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(5, "Input/output error")))
  with pytest.raises(OSError, match="Input/output"):
    io_lib.write_atomic(str(path), b"x" * 10_000)
  assert json.loads(path.read_text()) == {"old": 1}
  assert os.listdir(tmp_path) == ["results.json"]  # no temporary files left behind


def _launch(workdir, log, args):
  cmd = [sys.executable, "-m", "launch.main", "--config=configs/folder.py:quick", f"--workdir={workdir}", *args]
  return subprocess.Popen(cmd, cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def _kill_when(p, ready, what, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline and p.poll() is None and not ready():
    time.sleep(0.05)
  assert p.poll() is None, f"the run ended before it could be killed {what}"
  p.send_signal(signal.SIGKILL)
  p.wait()


def test_sigkill_at_three_points_then_resume_gives_the_reference_results(folders, reference, tmp_path):
  """One workdir killed during feature extraction, right after the first checkpoint and during the final
  training, resumed each time; the last resume must finish with the uninterrupted run's numbers."""
  workdir, args = tmp_path / "run", _args(folders)
  logs = [tmp_path / f"log{i}.txt" for i in range(4)]
  ckpt = workdir / "checkpoints" / "refine"
  text = lambda i: logs[i].read_text() if logs[i].exists() else ""

  p = _launch(workdir, logs[0], args)
  _kill_when(p, lambda: "computing features" in text(0), "during feature extraction")
  assert not list((workdir / "cache").glob("*.npz")), "the features finished before the kill"

  p = _launch(workdir, logs[1], args)
  _kill_when(p, lambda: ckpt.exists() and any(d.name.isdigit() for d in ckpt.iterdir()), "after checkpoint 1")
  assert "computing features" in text(1)  # the killed extraction left nothing to trust
  assert json.loads((workdir / "results.json").read_text())["status"] == "data"

  p = _launch(workdir, logs[2], args)
  _kill_when(p, lambda: "training the final detector" in text(2), "during the final training")
  assert "resumed refinement after iteration 1" in text(2) and "features from cache" in text(2)
  assert json.loads((workdir / "results.json").read_text())["status"] == "data"

  p = _launch(workdir, logs[3], args)
  assert p.wait(timeout=300) == 0, text(3)
  assert "resumed refinement after iteration 3" in text(3)
  _same_numbers(reference[0], json.loads((workdir / "results.json").read_text()))


# --- 4. determinism ------------------------------------------------------------------------------------------

def test_same_seed_twice_in_one_process_gives_identical_numbers(reference):
  a, b, _ = reference
  _same_numbers(a, b)
  assert a["refinement"] and [h["threshold"] for h in a["refinement"]] == [h["threshold"] for h in b["refinement"]]


def test_a_different_seed_gives_a_different_noise_split(folders, reference):
  c = _config(folders)
  dataset = readers.read(c.data, backbones.get_backbone("efficientnet_lite0").input_size)
  ids = lambda seed: list(contaminate(dataset, c.noise.ratio, c.noise.mode, c.noise.overlap, seed,
                                     c.noise.on_shortage, c.noise.val_fraction).injected_ids)
  assert ids(0) == reference[0]["injected_ids"]
  assert ids(1) != ids(0) and ids(2) != ids(0)
