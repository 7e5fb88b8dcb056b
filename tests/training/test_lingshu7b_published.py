"""The three Lingshu-7B recipes, unchanged, on every published dataset in its released layout (built
from the shared images), stage 1 -> 2 -> 3 through ``medic-ad train`` with a tiny backbone swapped in
by command-line overrides only; each stage's ``data_summary.json`` says what it saw."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medic_ad.data.holdout import key_digest
from medic_ad.data.adapters.mmxu import mimic_patient
from medic_ad.training.config import load_config
from published_layouts import build_datasets_root

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes" / "configs" / "lingshu7b"
TINY_MODULES = ["model.anomaly_dim=32", "model.qformer_dim=32", "model.qformer_layers=1", "model.qformer_heads=4",
                "model.heatmap_dim=16", "model.lora_r=4", "model.lora_alpha=8", "model.num_soft_prompts=2",
                "model.feature_layers=[0,1,2,3]"]


def test_datasets_key_moves_every_source(tmp_path) -> None:
    for path in sorted(RECIPES.glob("*.yaml")):
        default = load_config(path)
        moved = load_config(path, [f"datasets={tmp_path}"])
        assert all(s.root.startswith("/datasets/") for s in default.data + default.holdout if s.root)
        assert all(s.root.startswith(f"{tmp_path}/") for s in moved.data + moved.holdout if s.root)
        assert all(str(v).startswith(f"{tmp_path}/") for s in moved.data for k, v in s.options.items()
                   if k == "image_root")


def _train(config: Path, overrides: list[str]) -> None:
    cmd = [sys.executable, "-m", "medic_ad.cli.main", "train", "--config", str(config), *overrides]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]


def test_lingshu7b_recipes_run_on_the_published_layouts(tmp_path, shared_data) -> None:
    from medic_ad.models.qwen2_5_vl.backbone import Backbone
    from medic_ad.models.qwen2_5_vl.tiny import TinyBackboneConfig, build_tiny_qwen2_5_vl

    layout = build_datasets_root(shared_data, tmp_path / "datasets")
    model, processor = build_tiny_qwen2_5_vl(TinyBackboneConfig(vision_hidden_size=32, vision_intermediate_size=64),
                                             seed=0)
    Backbone(model=model, processor=processor, source="tiny").save_pretrained(tmp_path / "backbone")
    common = [f"datasets={layout.root}", "optim.max_steps=2", "optim.batch_size=2", "optim.micro_batch_size=2", "num_workers=0",
              "optim.warmup_steps=1", "precision=fp32", "mixed_precision='no'", "gradient_checkpointing=false", "checkpoint_every=0",
              "tensorboard=false", "progress=false", "num_threads=1"]
    runs = tmp_path / "runs"
    _train(RECIPES / "stage1_anomaly.yaml", [f"input_checkpoint={tmp_path / 'backbone'}",
                                             f"output_dir={runs / 's1'}", *TINY_MODULES, *common])
    _train(RECIPES / "stage2_difference.yaml", [f"input_checkpoint={runs / 's1' / 'final'}",
                                                f"output_dir={runs / 's2'}", *TINY_MODULES, *common])
    _train(RECIPES / "stage3_heatmap.yaml", [f"input_checkpoint={runs / 's2' / 'final'}",
                                             f"output_dir={runs / 's3'}", *TINY_MODULES, *common])
    seen = {n: json.loads((runs / n / "data_summary.json").read_text()) for n in ("s1", "s2", "s3")}
    by_source = {n: {(s["name"], s["root"].rsplit("/", 1)[-1]): s for s in summary["sources"]}
                 for n, summary in seen.items()}

    # stage 1: abnormal, masked images from each BMAD set's labelled folders, and from ChestX-Det
    for name in ("BraTS2021", "RESC", "Liver"):
        assert by_source["s1"][("bmad", name)]["abnormal_with_mask"] > 0
    assert by_source["s1"][("chestx_det", "ChestX-Det")]["abnormal_with_mask"] > 0
    # stage 2: change pairs (built from BMAD masks, and MIMIC-Diff-VQA's derived choices) and free-text differences
    pairs = by_source["s2"][("change_pairs", "BraTS2021")]
    assert pairs["pairs"] > 0 and set(pairs["by_change"]) == {"worsened", "improved", "no change"}
    mimic = by_source["s2"][("mimic_diff_vqa", "MIMIC-Diff-VQA")]
    assert mimic["pairs"] == mimic["samples"] > 0 and mimic["by_change"] and mimic["dropped_eval_patients"] == 2
    assert sum(s["drawn"] for s in seen["s2"]["sources"]) == 2 * 2
    # stage 3: lesion masks
    assert sum(s["abnormal_with_mask"] for s in seen["s3"]["sources"]) > 0
    # no evaluation patient anywhere in training: MMXU test subjects and BMAD Table-3 volumes
    evaluation = {key_digest(mimic_patient(s)) for s in layout.mmxu_test_subjects}
    evaluation |= {key_digest(f"bmad/{name}/{v}") for name, sides in layout.bmad_volumes.items()
                   for v in sides["test"]}
    mmxu = {key_digest(mimic_patient(s)) for s in layout.mmxu_test_subjects}
    bmad = {key_digest(f"bmad/{name}/{v}") for name, sides in layout.bmad_volumes.items() for v in sides["test"]}
    brats = {key_digest(f"bmad/BraTS2021/{v}") for v in layout.bmad_volumes["BraTS2021"]["test"]}
    assert set(seen["s1"]["holdout"]["patients_sha1"]) >= bmad and set(seen["s3"]["holdout"]["patients_sha1"]) >= bmad
    assert set(seen["s2"]["holdout"]["patients_sha1"]) >= mmxu | brats
    for n, summary in seen.items():
        trained = {d for s in summary["sources"] for d in s.get("patients_sha1", [])}
        assert trained and not trained & (evaluation | set(summary["holdout"]["patients_sha1"])), n
