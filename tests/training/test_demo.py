"""`medic-ad demo --quick` end to end: the main job's outputs exist and hold every metric, scored by the
eval harness (predictions JSONL first, results second)."""

from __future__ import annotations

import json
import shutil

import pytest

from medic_ad.cli.main import main
from medic_ad.eval.targets import TARGETS, collapsed_changes
from medic_ad.models.medic_ad import MedicAD
from medic_ad.models.qwen2_5_vl.shipped import read_manifest


def test_demo_quick_writes_report_metrics_overlays_and_checkpoint(tmp_path, shared_data):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--data", str(shared_data), "--compare-start", "2"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("control", "br35h_val"):
        m = metrics["detection"][name]
        assert {"precision", "recall", "f1", "auroc"} <= set(m) and m["n"] > 0
    for name in ("control", "br35h_mask_pairs_val", "cxr_pairs_val"):
        assert set(metrics["change"][name]["per_class"]) == {"worsened", "improved", "no change"}
        assert sum(metrics["change"][name]["answer_shares"].values()) == pytest.approx(1.0)
    for name in ("control", "br35h_masks_val", "figshare_val"):
        assert 0.0 <= metrics["heatmap"][name]["miou"] <= 1.0
    # it started from the shipped backbone, whose manifest it records
    assert metrics["backbone"]["weights_sha256"] == read_manifest()["weights_sha256"]
    assert metrics["collapsed"] == collapsed_changes(metrics)
    assert set(metrics["ablations"]) == {"full (4 layers, modulation)", "no <Ano> modulation", "last layer only"}
    for slug in ("full", "no_modulation", "last_layer"):  # each variant's change answers are calibrated, as the main model's
        saved = json.loads((out / "ablations" / slug / "stage2" / "final" / "medic_ad_config.json").read_text())
        assert saved["calibration"]["change"]["n"] > 0
        assert list(saved["config"]["choice_bias"].values()) == [saved["calibration"]["change"]["bias"]]
    comparison = metrics["start_comparison"]  # --compare-start: stage 1 from the random and the stage-0 backbone
    assert comparison["steps"] == 2 and {"f1", "auroc"} <= set(comparison["random_start"]) <= set(comparison["stage0_start"])
    targets = {t["target"]: t for t in metrics["targets"]}
    assert len(targets) == len(TARGETS) + 1 + 4  # the table, the Br35H margin, two ablations × two metrics
    for t in targets.values():
        assert t["met"] == (t["value"] >= t["goal"] if t["op"] == "≥" else t["value"] > t["goal"])
    assert targets["change accuracy, control"]["value"] == metrics["change"]["control"]["accuracy"]
    assert targets["change accuracy of the weakest class, control"]["value"] == min(
        metrics["change"]["control"]["per_class"].values())
    # every number comes from the eval harness: its predictions, results and reports are in the run folder
    results = json.loads((out / "eval" / "results.json").read_text())
    for task in ("control_detection", "control_change", "control_grounding", "br35h", "demo_br35h_mask_pairs",
                 "demo_cxr_pairs", "br35h_masks", "figshare"):
        assert (out / "eval" / "predictions" / "checkpoint" / f"{task}.jsonl").is_file()
    assert results["results"]["control_change"]["checkpoint"]["accuracy"] == metrics["change"]["control"]["accuracy"]
    assert (out / "eval" / "report.md").is_file() and (out / "ablations" / "eval" / "ablation.md").is_file()
    report = (out / "report.md").read_text()
    assert "## Targets" in report and "## Detection" in report and "## Ablations" in report
    overlays = sorted((out / "overlays").glob("*.png"))
    assert overlays and all(p.stat().st_size > 0 for p in overlays)
    # the final checkpoint carries its backbone: it loads, the same, with the stage folders gone
    shutil.rmtree(out / "stages")
    assert (out / "checkpoint" / "backbone" / "config.json").is_file()
    model = MedicAD.from_pretrained(out / "checkpoint")
    assert model.stage == 3
    r = model.detect(shared_data / "br35h" / "yes" / "y1.png", max_new_tokens=1)
    assert r.abnormal == (r.score >= 0.5)


def test_demo_without_shared_data_runs_on_the_control(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--data", str(tmp_path / "absent")]) == 0
    assert "running on the synthetic control alone" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["detection"]) == {"control"} and metrics["data_dir"] is None
    met = {t["target"]: t["met"] for t in metrics["targets"]}
    assert met["detection F1 minus majority-class F1, Br35H val"] is None  # not measured without the data
    assert met["heatmap mIoU, Figshare (held-back blocks)"] is None
    assert met["change accuracy, control"] is not None
    assert sorted(p.stem for p in (out / "eval" / "predictions" / "checkpoint").glob("*.jsonl")) == [
        "control_change", "control_detection", "control_grounding"]
    assert sorted((out / "overlays").glob("*.png"))  # control cases stand in for the Br35H-mask ones


def test_stage_configs_move_their_held_out_sets_with_the_data(tmp_path):
    """``--data DIR`` moves the held-out sets with the training sources; without the data both go."""
    from medic_ad.demo import _stage_config

    moved = _stage_config("stage3_heatmap", tmp_path / "out", 1, 2, tmp_path / "other", True)
    assert [h.root for h in moved.holdout] == [str(tmp_path / "other")]
    assert all(str(tmp_path / "other") in s.root for s in moved.data if s.root)
    absent = _stage_config("stage3_heatmap", tmp_path / "out", 1, 2, tmp_path / "absent", False)
    assert absent.holdout == [] and all(s.root is None for s in absent.data)


def test_report_warns_loudly_when_one_change_answer_takes_over(tmp_path):
    from medic_ad.demo import write_report

    shares = {"worsened": 0.05, "improved": 0.9, "no change": 0.05}
    metrics = {"detection": {}, "heatmap": {},
               "change": {"control": {"n": 30, "accuracy": 0.4, "per_class": {"worsened": 0.1, "improved": 1.0,
                                                                           "no change": 0.1},
                                      "answer_shares": shares}}}
    metrics["collapsed"] = collapsed_changes(metrics)
    assert metrics["collapsed"] == [{"data": "control", "answer": "improved", "share": 0.9}]
    write_report(tmp_path / "report.md", metrics, [])
    assert "WARNING: the change answers collapsed on control" in (tmp_path / "report.md").read_text()
    shares.update({"improved": 0.8, "no change": 0.15})  # 80 % is the limit, not over it
    assert collapsed_changes(metrics) == []
