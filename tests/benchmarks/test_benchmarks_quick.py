"""The benchmarks run and write well-formed results (issue 7). No timing is asserted anywhere here:
speed targets are ratios the benchmarks *report*; these tests only check the code paths and the schema."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import common, flops  # noqa: E402

BENCHMARKS = ("overhead", "prefill_vs_generate", "data_path", "train_step", "one_pass", "predict_throughput")
HANG_GUARD_S = 600  # not a speed check: only stops a hung subprocess from stalling the suite


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=HANG_GUARD_S)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    out, readme = tmp / "results", tmp / "README.md"
    readme.write_text(f"# Benchmarks\n\nbefore\n\n{common.README_START}\nold table\n{common.README_END}\n\nafter\n")
    proc = _run([str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(out), "--readme", str(readme)], tmp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, readme, proc


def test_quick_run_writes_one_json_per_benchmark(quick_run):
    out, _, _ = quick_run
    assert sorted(p.stem for p in out.glob("*.json")) == sorted(BENCHMARKS)
    for name in BENCHMARKS:
        data = json.loads((out / f"{name}.json").read_text())
        for key in common.REQUIRED_KEYS:
            assert key in data, f"{name}.json lacks {key}"
        assert data["benchmark"] == name and data["quick"] is True
        assert data["schema_version"] == common.SCHEMA_VERSION
        m = data["machine"]
        assert m["cpu_model"] and m["torch"] and isinstance(m["torch_num_threads"], int)
        assert len(data["input"]["image_size"]) == 2
        assert data["summary"], name
        for row in data["summary"]:
            assert set(common.SUMMARY_KEYS) <= set(row)
            assert row["value"] is None or _finite(row["value"])
            assert row["met"] in (True, False, None)


def test_overhead_result_has_every_variant_and_ratio(quick_run):
    data = json.loads((quick_run[0] / "overhead.json").read_text())
    r = data["results"]
    assert set(r["end_to_end"]) == {"backbone", "medic_ano", "medic_ano_nolora", "medic_ano_heatmap", "backbone_pair",
                                    "medic_ano_diff", "medic_ano_diff_nolora"}
    for stats in r["end_to_end"].values():
        assert stats["median_s"] > 0 and stats["q1_s"] <= stats["median_s"] <= stats["q3_s"]
    assert set(r["ratios"]) == {"ano", "ano_nolora", "ano_heatmap", "ano_diff", "ano_diff_nolora"}
    assert all(_finite(v["median"]) and v["median"] > 0 for v in r["ratios"].values())
    tokens = data["input"]["tokens"]
    # MEDIC-AD adds exactly 16 <Ano> per image and 16 <Diff> per pair (quick config: pool 4)
    assert tokens["medic_single"] - tokens["backbone_single"] == 16
    assert tokens["medic_pair"] - tokens["backbone_pair"] == 48
    assert r["profile_top_ops"]["medic_ano_diff"]
    assert "merge_lora()" in data["config"]["lora_merged"]  # the *_nolora variants are the real merged model


def test_prefill_vs_generate_checks_agreement(quick_run):
    r = json.loads((quick_run[0] / "prefill_vs_generate.json").read_text())["results"]
    agree = r["agreement"]
    assert 0.0 <= agree["rate"] <= 1.0 and agree["n"] == len(agree["prefill"]) == len(agree["generated"])
    assert set(agree["generated"]) <= {"yes", "no", "other"}
    assert all(_finite(v["median"]) for v in r["speedup_generate_over_prefill"].values())
    assert all(v["images_per_s"] > 0 for v in r["throughput_by_batch"].values())
    assert r["detect_api"]["max_abs_score_diff_vs_prefill"] <= 1e-5  # detect()'s one pass scores as the prefill


def test_data_path_covers_png_and_dicom(quick_run):
    r = json.loads((quick_run[0] / "data_path.json").read_text())["results"]
    groups = r["groups"]
    assert any(g.startswith("dicom_") for g in groups)
    for g in groups.values():
        t, h, w = g["grid_thw"]["clinical_448"]  # ≈ 448² pixels, aspect ratio kept
        assert t == 1 and abs(h * w - 1024) <= 0.1 * 1024
        assert all(v > 0 for v in g["end_to_end_images_per_s_per_core"].values())
    assert r["seven_b_need"]["images_per_s"] > 0


def test_train_step_reports_every_stage(quick_run):
    r = json.loads((quick_run[0] / "train_step.json").read_text())["results"]
    assert set(r) == {"stage_1", "stage_2", "stage_3"}
    for stage in r.values():
        assert stage["samples_per_s"] > 0 and stage["trainable_params"] > 0
        assert all(math.isfinite(x) for x in stage["losses"])
        assert stage["peak_rss_mib"] is None or stage["peak_rss_mib"] > 0
    assert r["stage_3"]["trainable_params"] < r["stage_1"]["trainable_params"]  # decoder only vs modules + LoRA


def test_predict_throughput_reports_the_ratio(quick_run):
    r = json.loads((quick_run[0] / "predict_throughput.json").read_text())["results"]
    assert set(r["studies_per_s"]) == {"model_alone", "predict_job"}
    assert all(_finite(v) and v > 0 for v in r["studies_per_s"].values())
    assert _finite(r["ratio_predict_over_model"]["median"])
    assert r["jobs"][-1]["ratio_predict_over_model"] == r["ratio_predict_over_model"]  # read on the largest job


def test_readme_table_rewritten_between_markers(quick_run):
    out, readme, _ = quick_run
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nbefore") and text.rstrip().endswith("after")
    assert "old table" not in text and text.count(common.README_START) == 1
    for name in BENCHMARKS:
        assert f"[{name}](results/{name}.json)" in text
    assert "**M1**" in text and "| quick |" in text and "**M2**" not in text  # one machine
    common.update_readme(readme, out)  # idempotent
    assert readme.read_text() == text


def test_gpu_7b_dry_run_constructs_and_runs_on_cpu(tmp_path):
    proc = _run([str(ROOT / "benchmarks" / "gpu_7b.py"), "--dry-run", "--out", str(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((tmp_path / "gpu_7b_dry_run.json").read_text())
    assert data["dry_run"] is True
    for key, counts in data["results"]["weight_check"].items():  # the FLOP formulas count the model's weights
        assert counts["analytic"] == counts["model"], key
    det = data["results"]["detection"]
    assert det["best_images_per_s"] > 0 and all(b["flops_per_image"] > 0 for b in det["by_batch"].values())
    train = data["results"]["training"]
    assert all(train["recompute_observed"].values())  # gradient checkpointing really recomputes
    assert all(math.isfinite(x) for x in train["losses"]) and train["model_flops_per_step"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU skip")
def test_gpu_7b_skips_cleanly_without_cuda(tmp_path):
    proc = _run([str(ROOT / "benchmarks" / "gpu_7b.py"), "--out", str(tmp_path / "out")], tmp_path)
    assert proc.returncode == 0
    assert len(proc.stdout.strip().splitlines()) == 1 and "skipped" in proc.stdout
    assert not (tmp_path / "out").exists()


def test_flops_of_the_7b_shape_are_plausible():
    v = flops.QWEN2_5_VL_7B_VISION
    assert flops.window_segments(32, 32, v) == [64] * 16  # 448²: 4×4 windows of 8×8 patches
    params = flops.llm_layer_weights(flops.QWEN2_5_VL_7B_TEXT) + flops.vision_block_weights(v) * v.depth
    assert 6.9e9 < params < 7.3e9  # ≈ 6.5 B decoder + 0.63 B vision blocks
    f = flops.prefill_flops(tokens=300, grids=[(32, 32)], text=flops.QWEN2_5_VL_7B_TEXT, vision=v)
    assert 4.5e12 < f["total"] < 6.5e12  # ≈ 2 · 7 B · 300 + 2 · 0.67 B · 1024
    t = flops.stage1_train_flops(tokens=300, grids=[(32, 32)], text=flops.QWEN2_5_VL_7B_TEXT, vision=v, prompts=10,
                                 prompt_blocks=[7, 15, 23, 31], lora_r=16)
    assert 1.9 * f["total"] < t["total"] < 3.2 * f["total"]  # frozen weights: ~4·N·T, not 6·N·T
    assert flops.peak_tflops_for("NVIDIA H100 80GB HBM3") == 989.0
    assert flops.peak_tflops_for("NVIDIA H100 PCIe") == 756.0
    assert flops.peak_tflops_for("Some CPU") is None


@pytest.mark.parametrize("grid", [(32, 32), (36, 36), (36, 30), (8, 8), (10, 22)])
def test_window_segments_match_transformers(grid):
    from transformers.vision_utils import get_vision_window_index

    v = flops.QWEN2_5_VL_7B_VISION
    _, cu = get_vision_window_index(torch.tensor([[1, *grid]]), spatial_merge_size=v.merge, window_size=v.window,
                                    patch_size=v.patch)
    sizes = torch.as_tensor(cu).diff().tolist()
    assert sorted(flops.window_segments(*grid, v)) == sorted(s for s in sizes if s)


def test_timing_helpers():
    s = common.measure({"a": lambda: None, "b": lambda: None}, warmup=1, repeats=3)
    assert set(s) == {"a", "b"} and all(len(v) == 3 for v in s.values())
    st = common.stats([1.0, 2.0, 3.0, 4.0])
    assert st["median_s"] == 2.5 and st["q1_s"] <= 2.5 <= st["q3_s"]
    assert common.paired_ratio([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])["median"] == 2.0


def test_one_pass_counts_one_vision_pass_per_request(quick_run):
    r = json.loads((quick_run[0] / "one_pass.json").read_text())["results"]
    assert r["vision_passes"] == {"detect": 1, "explain": 1, "detect_then_explain": 2, "compare": 1,
                                  "compare_then_maps": 2}
    assert all(_finite(v["median"]) for v in r["ratios"].values())
