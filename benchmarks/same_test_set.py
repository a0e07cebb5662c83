"""The clean detector scored on each noisy cell's own test images: what contamination cost, on the same images.

A table compares a noisy cell's test AUROC with the clean cell's, but the two test sets differ: with
noise.overlap=False the injected images leave the test set (the validation draw comes first and does not depend
on the noise level, so the noisy test set is the clean one less the injected images). Which defects are left
to test then moves the AUROC too: on Magnetic Tile split by tile, the injected tiles' defects leave the test set
with them. Here DifferNet's clean cell of the same category and seed (`differnet/noise_0/seed_<s>`) is scored on
exactly the noisy cell's test images, so that "within 3 points of the clean detector" (issue 13) compares like
with like.

Each cell's split is rebuilt from its recorded config (data, noise, seed) and checked against its recorded
injected images and test labels (`common.cell_split`): a mismatch stops with the cell named. Only the recorded
test scores are used; nothing is trained.

  python -m benchmarks.same_test_set --roots=results/mtd_by_tile,results/mtd_e192 \
      --out=results/benchmarks/same_test_set.json
"""

import collections
import json
import os

import ml_collections
import numpy as np
from absl import app, flags

from benchmarks.common import cell_split, write_json
from maml_iqr import tables
from maml_iqr.data import readers
from maml_iqr.metrics import auroc
from maml_iqr.models import backbones

CLEAN = "differnet"


def scores_on(ids, labels, scores, wanted_ids, wanted_labels) -> tuple[np.ndarray, np.ndarray]:
  """(labels, scores) of a scored test set restricted to the images `wanted_ids`, matched by id (never by
  position); a ValueError if one is missing or carries another label."""
  at = {i: k for k, i in enumerate(ids)}
  missing = [i for i in wanted_ids if i not in at]
  if missing:
    raise ValueError(f"{len(missing)} test images are not in the clean cell's test set, e.g. {missing[0]}")
  pos = np.array([at[i] for i in wanted_ids])
  if not np.array_equal(np.asarray(labels)[pos], np.asarray(wanted_labels)):
    raise ValueError("a test image carries another label in the clean cell's test set")
  return np.asarray(labels)[pos], np.asarray(scores)[pos]


class Splits:
  """Rebuilds cells' splits, reading each dataset (data config, input size) once."""

  def __init__(self):
    self._datasets = {}

  def __call__(self, cell: dict):
    config = ml_collections.ConfigDict(cell["config"])
    size = backbones.from_config(config.backbone).input_size
    key = json.dumps([config.data.to_dict(), size, config.cache_dir], sort_keys=True)
    if key not in self._datasets:
      self._datasets[key] = readers.read_config(config, size)
    return cell_split(cell, self._datasets[key])


def cell_figures(noisy: dict, noisy_test, clean: dict, clean_test) -> dict:
  """The noisy cell's test AUROC, the clean cell's on its own test set and on the noisy cell's test images
  (`*_test`: each cell's rebuilt test set)."""
  labels, scores = scores_on(clean_test.ids, clean["test_labels"], clean["test_scores"], noisy_test.ids,
                             noisy["test_labels"])
  same = auroc(labels, scores)
  return {"auroc": noisy["auroc"], "clean_auroc": clean["auroc"], "clean_auroc_same_test": same,
          "gap_same_test": same - noisy["auroc"], "n_test": len(labels), "n_test_defective": int(labels.sum()),
          "clean_n_test_defective": int(np.sum(clean["test_labels"]))}


def root_figures(root: str) -> list[dict]:
  """`cell_figures` of every finished noisy cell under `root` whose clean DifferNet cell is there too."""
  runs = tables.collect(root)
  clean = {(r["dataset"], r["category"], r["seed"]): r for r in runs
           if r["method"] == CLEAN and not r.get("tag") and r["noise"]["ratio"] == 0}
  splits, clean_tests, out = Splits(), {}, []
  for r in runs:
    key = (r["dataset"], r["category"], r["seed"])
    if r["noise"]["ratio"] == 0 or key not in clean:
      continue
    if key not in clean_tests:  # each clean split rebuilt once, not once per noisy cell
      clean_tests[key] = splits(clean[key]).test
    figures = cell_figures(r, splits(r).test, clean[key], clean_tests[key])
    out.append({"root": root, "dataset": r["dataset"], "category": r["category"], "method": tables.label(r),
                "noise": r["noise"]["ratio"], "seed": r["seed"]} | figures)
    print(f"{root} {r['category']} {tables.label(r)} {r['noise']['ratio']:.0%} seed {r['seed']}: AUROC "
          f"{figures['auroc']:.3f}; clean DifferNet on the same test images {figures['clean_auroc_same_test']:.3f} "
          f"(on its own {figures['clean_auroc']:.3f}); gap {figures['gap_same_test']:+.3f}", flush=True)
  return out


def _method_order(method: str) -> tuple:
  return tables.ORDER.index(method.split(" ")[0]), method


def means(cells: list[dict]) -> dict:
  """{(root, category, method, noise): mean figures over that method's seeds, and the seeds}, in table order."""
  groups = collections.defaultdict(list)
  for c in cells:
    groups[(c["root"], c["category"], c["method"], c["noise"])].append(c)
  keys = sorted(groups, key=lambda k: (k[0], k[1], k[3], _method_order(k[2])))
  return {k: {"seeds": sorted(c["seed"] for c in groups[k]),
              **{f: float(np.mean([c[f] for c in groups[k]]))
                 for f in ("auroc", "clean_auroc", "clean_auroc_same_test", "gap_same_test")}} for k in keys}


def markdown(cells: list[dict]) -> str:
  """One table per (root, category): a row per method, per noise level its mean test AUROC and, in brackets,
  its mean difference from the clean DifferNet on the same test images, seed by seed (the first row: that clean
  AUROC, a mean over the seeds)."""
  summary, out = means(cells), []
  for root, cat in sorted({k[:2] for k in summary}):
    group = [c for c in cells if (c["root"], c["category"]) == (root, cat)]
    levels = sorted({c["noise"] for c in group})
    clean = lambda n: np.mean(list({c["seed"]: c["clean_auroc_same_test"] for c in group  # noqa: E731
                                     if c["noise"] == n}.values()))
    rows = ["| clean DifferNet, same test images | " + " | ".join(f"{clean(n):.3f}" for n in levels) + " |"]
    for m in sorted({c["method"] for c in group}, key=_method_order):
      mean = lambda n: summary.get((root, cat, m, n))  # noqa: E731,B023
      rows.append(f"| {m} | " + " | ".join(
          "-" if mean(n) is None else f"{mean(n)['auroc']:.3f} ({-mean(n)['gap_same_test']:+.3f}; "
          f"{len(mean(n)['seeds'])} seed{'s' if len(mean(n)['seeds']) > 1 else ''})" for n in levels) + " |")
    out.append(f"{root} {cat}\n\n| method | " + " | ".join(f"{n:.0%}" for n in levels) + " |\n|---|"
               + "---|" * len(levels) + "\n" + "\n".join(rows))
  return "\n\n".join(out)


def main(argv):
  del argv
  cells = [c for root in FLAGS.roots for c in root_figures(root)]
  if not cells:
    raise SystemExit(f"no finished noisy cell with a clean {CLEAN} cell of the same seed under {FLAGS.roots}")
  summary = {" ".join([root, cat, m, f"{n:.0%}"]): v for (root, cat, m, n), v in means(cells).items()}
  for name, m in summary.items():
    print(f"mean {name} (seeds {m['seeds']}): AUROC {m['auroc']:.3f}; clean DifferNet on the same test images "
          f"{m['clean_auroc_same_test']:.3f} (on its own {m['clean_auroc']:.3f}); gap {m['gap_same_test']:+.3f}")
  print(markdown(cells))
  if FLAGS.out:
    write_json(FLAGS.out, {"cells": cells, "means": summary})
    print(f"wrote {os.path.abspath(FLAGS.out)}")


if __name__ == "__main__":
  FLAGS = flags.FLAGS
  flags.DEFINE_list("roots", [], "Sweep workdirs (each with its clean differnet cells).")
  flags.DEFINE_string("out", None, "JSON file for the figures.")
  app.run(main)
