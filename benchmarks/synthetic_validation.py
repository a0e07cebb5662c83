"""A stopping rule for clean mode: validation AUROC on synthetic defects made from held-out good images (issue 13).

Why: without a folder of known-defective images the folder config has no validation set, so refinement runs until
the IQR rule removes nothing or 5 iterations pass, and the IQR rule removes a tail from any set: on the whole-set
Gaussian's trajectories that loses 2.9 % of the good images on average, 6.8 % of clean Magnetic Tile's
(README, "Scoring each image by the others"). With real defects as validation the folder config keeps the
best-validated set (tolerance 0, patience 3) and loses 1.2 %. Synthetic defects need no labels: CutPaste (Li et
al., CVPR 2021) cuts a rectangle from a good image and pastes it elsewhere on it, brightness and contrast jittered;
its "scar" variant pastes a thin rotated strip, like a crack. Here each held-out good image gives one, the two
kinds alternating, so the validation set has as many synthetic defects as good images.

Replay, exact for gaussian_iqr: the recorded trajectories (tolerance 100: every iteration's removals kept) give
each iteration's starting set (`removed_ids`); the Gaussian fitted on it scores the validation good images and
their synthetic defects, and the folder config's rule (tolerance 0, patience 3, `stop_rule.replay`) runs on that
AUROC series instead of the recorded one. The recorded real-validation AUROC is recomputed the same way first and
must match (a named error if not: the features or the split are not the run's). The held-out good images are the
runs' validation good images (a clean sample; in clean mode they would be drawn from the folder itself).

The rule, stated 2026-12-07 before the first run (trajectories: results/gaussian_patience_traj, Magnetic Tile,
elpv mono and hazelnut_toy, seeds 0-2, noise 0, 20, 50 %; training-set labels only, no test image read):
  candidates  none       clean mode today: every iteration kept
              synthetic  stop on synthetic-defect validation AUROC (tolerance 0, patience 3)
              real       stop on the real validation defects (the folder config with a defective folder): the
                         reference, not a candidate
  adopt       synthetic, for clean mode, if (a) its mean good lost over the 9 clean runs is at most half of
              none's, and (b) its mean removal recall over the 18 noisy runs is at least none's - 0.03.

  python -m benchmarks.synthetic_validation --out=results/benchmarks/synthetic_validation.json

Outcome (2026-12-07): rejected. (a) holds (no good image lost on the clean runs, against 3.8 %), (b) fails (recall
0.219 against 0.376): synthetic-defect AUROC (0.79-0.91) drifts down or stays flat while real injected defects are
removed, so it stops most noisy runs early. README, "Synthetic defects as validation".
"""
import os

import ml_collections
import numpy as np
from absl import app, flags

from benchmarks.stop_rule import kept_quality, recorded_runs, replay
from maml_iqr import gaussian, run
from maml_iqr.data import readers
from maml_iqr.data.contamination import contaminate
from maml_iqr.feature_cache import features
from maml_iqr.io import write_json
from maml_iqr.metrics import auroc
from maml_iqr.models import backbones

FLAGS = flags.FLAGS
ROOTS = ("results/gaussian_patience_traj/mtd", "results/gaussian_patience_traj/elpv",
         "results/gaussian_patience_traj/hazelnut")
CANDIDATES = ("none", "synthetic", "real")
RECALL_SLACK = 0.03


class ReplayMismatch(RuntimeError):
  """The recomputed validation AUROC differs from the recorded one: these are not the run's features or split."""


def _jitter(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Brightness and contrast each scaled by a factor in [0.9, 1.1] (CutPaste's colour jitter of 0.1)."""
  p = patch.astype(np.float32)
  mean = p.mean()
  p = (p - mean) * rng.uniform(0.9, 1.1) + mean * rng.uniform(0.9, 1.1)
  return np.clip(p, 0, 255)


def cutpaste(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """A rectangle of 2-15 % of the image's area, aspect ratio 0.3-3.3, cut, jittered and pasted elsewhere."""
  h, w = image.shape[:2]
  area, aspect = rng.uniform(0.02, 0.15) * h * w, np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
  ph, pw = min(int(np.sqrt(area * aspect)), h - 1), min(int(np.sqrt(area / aspect)), w - 1)
  sy, sx, dy, dx = rng.integers(0, h - ph), rng.integers(0, w - pw), rng.integers(0, h - ph), rng.integers(0, w - pw)
  out = image.astype(np.float32)
  out[dy:dy + ph, dx:dx + pw] = _jitter(image[sy:sy + ph, sx:sx + pw], rng)
  return out.round().astype(np.uint8)


def scar(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """CutPaste's scar: a strip 2-16 px wide and 10-25 px long (at 256 px; scaled to the image), rotated by up to
  45 degrees, its pixels taken (jittered) from the same strip shifted elsewhere on the image."""
  h, w = image.shape[:2]
  scale = h / 256
  width, length = rng.uniform(2, 16) * scale, rng.uniform(10, 25) * scale
  angle = np.deg2rad(rng.uniform(-45, 45))
  cy, cx = rng.uniform(length, h - length), rng.uniform(length, w - length)
  yy, xx = np.mgrid[:h, :w].astype(np.float32)
  along = (yy - cy) * np.cos(angle) + (xx - cx) * np.sin(angle)
  across = -(yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)
  mask = (np.abs(along) <= length / 2) & (np.abs(across) <= width / 2)
  shift = (int(rng.integers(-h // 3, h // 3 + 1)), int(rng.integers(-w // 3, w // 3 + 1)))
  source = _jitter(np.roll(image, shift, axis=(0, 1)), rng)
  out = image.astype(np.float32)
  out[mask] = source[mask]
  return out.round().astype(np.uint8)


def synthetic_defects(images: np.ndarray, seed: int) -> np.ndarray:
  """One synthetic defect per image, cutpaste and scar alternating, reproducible from `seed`."""
  rng = np.random.default_rng([seed, 2021])
  return np.stack([(cutpaste if i % 2 == 0 else scar)(im, rng) for i, im in enumerate(images)])


def mean_view(feats: np.ndarray) -> np.ndarray:
  return np.asarray(feats).mean(1)  # in the cached dtype, as `cleaning.fit_gaussian` averages


def auroc_series(r: dict, train: np.ndarray, ids: list[str], good: np.ndarray,
                 defect_sets: list[np.ndarray]) -> list[list[float]]:
  """For each set of defects, the validation AUROC (against `good`) at each recorded iteration of the Gaussian
  fitted on that iteration's starting set: one fit per iteration serves every set."""
  kept, out = np.ones(len(ids), bool), [[] for _ in defect_sets]
  row = {i: n for n, i in enumerate(ids)}
  for h in r["refinement"]:
    mean, precision = gaussian.fit(train[kept])
    good_scores = gaussian.mahalanobis(mean, precision, good)
    for series, defects in zip(out, defect_sets):
      labels = np.r_[np.zeros(len(good), bool), np.ones(len(defects), bool)]
      series.append(auroc(labels, np.r_[good_scores, gaussian.mahalanobis(mean, precision, defects)]))
    kept[[row[i] for i in h["removed_ids"]]] = False
  return out


def main(argv):
  del argv
  runs = [(path, r) for _, path, r in recorded_runs(FLAGS.roots) if r["method"] == "gaussian_iqr"
          and r["config"]["refine"]["folds"] == 1 and r["config"]["refine"]["val_tolerance_se"] == 100.0]
  loaded, rows = {}, []
  for path, r in runs:
    c = ml_collections.ConfigDict(r["config"])
    c.cache_dir = FLAGS.cache_dir
    key = (c.data.name, c.data.get("category"))
    if key not in loaded:
      bb = backbones.from_config(c.backbone)
      bparams = bb.load()
      loaded[key] = (bb, bparams, readers.read_config(c, bb.input_size))
    bb, bparams, dataset = loaded[key]
    split = contaminate(dataset, c.noise.ratio, c.noise.mode, c.noise.overlap, c.seed, c.noise.on_shortage,
                        c.noise.val_fraction)
    feats = run.split_features(c, bb, bparams, dataset, split, train_views=False)
    train, val = mean_view(feats["train_eval"]), mean_view(feats["val"])
    is_bad = np.asarray(split.val.labels) == 1
    synth_cfg = c.copy_and_resolve_references()
    synth_cfg.cache_dir = os.path.join(FLAGS.cache_dir, "synthetic")
    made = synthetic_defects(np.asarray(split.val.images)[~is_bad], c.seed)
    synth = mean_view(features(synth_cfg, bb, bparams, made, f"synthetic_{dataset.name}",
                               train_rows=np.zeros(0, np.int64))["eval"])
    real, series = auroc_series(r, train, list(split.train.ids), val[~is_bad], [val[is_bad], synth])
    recorded = [h["val_auroc"] for h in r["refinement"]]
    if not np.allclose(real, recorded, atol=1e-6):
      raise ReplayMismatch(f"{path}: recomputed validation AUROC {np.round(real, 4)} against recorded "
                           f"{np.round(recorded, 4)}; check --cache_dir and that the run's data is unchanged")
    replayed = dict(r, refinement=[dict(h, val_auroc=a) for h, a in zip(r["refinement"], series)])
    kept = {"none": len(r["refinement"]), "synthetic": replay(replayed, 0.0, 3), "real": replay(r, 0.0, 3)}
    row = dict(run=os.path.relpath(path), dataset=r["dataset"], noise=r["noise"]["ratio"], seed=r["seed"],
               synthetic_val_auroc=series, real_val_auroc=real,
               **{f"{k}_{q}": v for k, n in kept.items() for q, v in dict(kept_quality(r, n), iterations=n).items()})
    rows.append(row)
    print(f"{r['dataset']:<14} {r['noise']['ratio']:>4.0%} seed {r['seed']}: synthetic AUROC "
          f"{' '.join(f'{a:.3f}' for a in series)} | real {' '.join(f'{a:.3f}' for a in real)} | kept iterations "
          + ", ".join(f"{k} {n}" for k, n in kept.items()), flush=True)
  summary = {}
  for k in CANDIDATES:
    noisy = [x[f"{k}_recall"] for x in rows if x[f"{k}_recall"] is not None]
    summary[k] = {"recall_noisy": float(np.mean(noisy)),
                  "good_lost_clean": float(np.mean([x[f"{k}_good_lost"] for x in rows if x["noise"] == 0])),
                  "good_lost_all": float(np.mean([x[f"{k}_good_lost"] for x in rows]))}
    print(f"{k:<10} recall (noisy runs) {summary[k]['recall_noisy']:.3f}, good lost clean "
          f"{summary[k]['good_lost_clean']:.3f}, all {summary[k]['good_lost_all']:.3f}")
  s, n = summary["synthetic"], summary["none"]
  adopt = s["good_lost_clean"] <= n["good_lost_clean"] / 2 and s["recall_noisy"] >= n["recall_noisy"] - RECALL_SLACK
  print(f"rule: (a) clean good lost {s['good_lost_clean']:.3f} <= {n['good_lost_clean'] / 2:.3f}, (b) recall "
        f"{s['recall_noisy']:.3f} >= {n['recall_noisy'] - RECALL_SLACK:.3f}: {'adopt' if adopt else 'reject'}")
  if FLAGS.out:
    write_json(FLAGS.out, {"summary": summary, "adopt": adopt, "runs": rows})


if __name__ == "__main__":
  flags.DEFINE_list("roots", list(ROOTS), "Sweep folders of gaussian_iqr whole-set trajectories (tolerance 100).")
  flags.DEFINE_string("cache_dir", "results/cache", "The sweeps' feature cache (synthetic images: a subfolder).")
  flags.DEFINE_string("out", None, "JSON file for the figures.")
  app.run(main)
