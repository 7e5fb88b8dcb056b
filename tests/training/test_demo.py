"""`medic-ad demo --quick` end to end: the main job's outputs exist and hold every metric."""

from __future__ import annotations

import json
import shutil

from medic_ad.cli.main import main
from medic_ad.models.medic_ad import MedicAD


def test_demo_quick_writes_report_metrics_overlays_and_checkpoint(tmp_path, shared_data):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--data", str(shared_data), "--compare-start", "2"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("control", "br35h_val"):
        m = metrics["detection"][name]
        assert {"precision", "recall", "f1", "auroc"} <= set(m) and m["n"] > 0
    for name in ("control", "br35h_mask_pairs_val"):
        assert set(metrics["change"][name]["per_class"]) == {"worsened", "improved", "no change"}
    for name in ("control", "br35h_masks_val"):
        assert 0.0 <= metrics["heatmap"][name]["miou"] <= 1.0
    assert set(metrics["ablations"]) == {"full (4 layers, modulation)", "no <Ano> modulation", "last layer only"}
    comparison = metrics["start_comparison"]  # --compare-start: stage 1 from the random and the stage-0 backbone
    assert comparison["steps"] == 2 and {"f1", "auroc"} <= set(comparison["random_start"]) <= set(comparison["stage0_start"])
    targets = {t["target"]: t for t in metrics["targets"]}
    assert len(targets) == 4 and all(t["met"] == (t["value"] >= t["goal"]) for t in targets.values())
    assert targets["change accuracy, control"]["value"] == metrics["change"]["control"]["accuracy"]
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
    assert [t["met"] for t in metrics["targets"]][-1] is None  # Br35H: not measured without the data
