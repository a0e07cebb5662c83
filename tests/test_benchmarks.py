"""The benchmark scripts run end to end in --quick mode and write complete JSON (no timing thresholds)."""
import json
import math

from benchmarks import bench_core, cost_curves


def _positive(x) -> bool:
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bench_core_quick_writes_expected_json(tmp_path):
  out = tmp_path / "bench.json"
  bench_core.main(["--quick", f"--out={out}"])
  res = json.loads(out.read_text())
  for key in ("machine", "settings", "peak", "backbone", "train", "score", "maml", "memory", "compile_s"):
    assert key in res, key
  assert res["settings"]["quick"] is True
  assert {"jax_version", "devices", "cpu_count", "platform", "backend"} <= res["machine"].keys()
  assert _positive(res["peak"]["peak_gflops_per_s"])
  assert _positive(res["peak"]["matmul"]["gflops_per_s"]) and _positive(res["peak"]["conv"]["gflops_per_s"])
  assert {r["backbone"] for r in res["backbone"]} == {"efficientnet_lite0", "alexnet"}
  assert {r["mode"] for r in res["backbone"]} == {"with_views", "raw_features"}
  assert any("random" in r["weights"] for r in res["backbone"] if r["backbone"] == "alexnet")
  for r in res["backbone"]:
    for k in ("views_per_s", "median_s", "xla_flops_per_view", "gflops_per_s", "fraction_of_peak"):
      assert _positive(r[k]), (k, r)
  assert {r["size"] for r in res["train"]} == {"differnet", "default"}
  for r in res["train"]:
    for k in ("samples_per_s", "step_s", "params", "gflops_per_s", "fraction_of_peak", "one_call_per_step_s",
              "masked_scan_step_s", "optimizer_update_s", "shape_ceiling_gflops_per_s", "fraction_of_shape_ceiling"):
      assert _positive(r[k]), (k, r)
  for r in res["score"]:
    assert r["views_per_image"] == 64 and _positive(r["images_per_s"]) and _positive(r["fraction_of_peak"])
  assert len(res["maml"]) >= 2
  for r in res["maml"]:
    assert _positive(r["step_s"]) and _positive(r["tasks"]) and _positive(r["inner_steps"])
    assert _positive(r["fraction_of_shape_ceiling"])
  assert all(v >= 0 for v in res["compile_s"].values())
  assert _positive(res["memory"]["host_peak_rss_mb"])


def test_cost_curves_quick_writes_expected_json(tmp_path):
  out = tmp_path / "curves.json"
  cost_curves.main(["--quick", f"--out={out}"])
  res = json.loads(out.read_text())
  curves = {"score_vs_n": "n_images", "score_vs_k": "views", "train_epoch_vs_n": "n_images",
            "train_epoch_vs_k": "views", "maml_epoch_vs_t": "tasks"}
  assert "machine" in res and "memory" in res
  for curve, x in curves.items():
    pts = res[curve]["points"]
    assert len(pts) >= 2, curve
    assert len({p[x] for p in pts}) == len(pts), curve
    for p in pts:
      assert _positive(p["seconds"]) and _positive(p[x]), (curve, p)
  assert "slope_s" in res["score_vs_n"]["fit_vs_n"]

