"""Every YAML in the repository is loaded by a test (torchtune's tests/recipes/test_configs.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from medic_ad.paths import tiny_backbone_dir

from medic_ad.training.config import load_config

ROOT = Path(__file__).resolve().parents[2]
ALL_YAML = sorted(p for p in ROOT.rglob("*.y*ml") if ".git" not in p.parts and "runs" not in p.parts
                  and p.suffix in (".yaml", ".yml") and "site-packages" not in str(p))


def test_the_repo_has_configs():
    assert any("recipes/configs" in str(p) for p in ALL_YAML)


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_loads(path: Path):
    rel = path.relative_to(ROOT).as_posix()
    if rel.startswith("recipes/configs/"):
        cfg = load_config(path)
        assert cfg.output_dir and cfg.data
        assert cfg.stage == int(path.name[len("stage")])
    elif rel.startswith("recipes/accelerate/"):
        data = yaml.safe_load(path.read_text())
        assert data["distributed_type"] in ("NO", "MULTI_GPU", "DEEPSPEED", "FSDP")
        ds = data.get("deepspeed_config", {}).get("deepspeed_config_file")
        if ds:
            stage = json.loads((ROOT / ds).read_text())["zero_optimization"]["stage"]
            assert str(stage) in path.name
    elif rel.startswith("medic_ad/eval/tasks/"):
        from medic_ad.eval.tasks import load_task_file

        load_task_file(path)
    else:
        pytest.fail(f"{rel}: a YAML outside the known config folders; teach this test to load it")


def test_stage_chain_names_its_inputs():
    tiny = ROOT / "recipes" / "configs" / "tiny"
    cfgs = {p.name[:6]: load_config(p) for p in tiny.glob("stage*.yaml")}
    assert cfgs["stage0"].input_checkpoint == "tiny"
    # stage 1 starts from the backbone stage 0 built once and the package ships
    assert cfgs["stage1"].input_checkpoint == str(tiny_backbone_dir())
    for prev, nxt in (("stage1", "stage2"), ("stage2", "stage3")):
        assert cfgs[nxt].input_checkpoint == f"{cfgs[prev].output_dir}/final"


def test_overrides_and_unknown_keys(tmp_path):
    path = ROOT / "recipes" / "configs" / "tiny" / "stage1_anomaly.yaml"
    cfg = load_config(path, ["optim.lr=3e-3", "optim.max_steps=7", "data.0.weight=5", "model.pool_size=2"])
    assert cfg.optim.lr == pytest.approx(3e-3) and cfg.optim.max_steps == 7
    assert cfg.data[0].weight == 5 and cfg.model["pool_size"] == 2
    with pytest.raises(ValueError, match="unknown config key.*optim.lrr"):
        load_config(path, ["optim.lrr=1"])
    with pytest.raises(ValueError, match="unknown config key.*banana"):
        load_config(path, ["banana=1"])
    with pytest.raises(ValueError, match="not a number"):
        load_config(path, ["optim.lr=fast"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: 1\ninput_checkpoint: x\noutput_dir: y\ndata: []\n")
    with pytest.raises(ValueError, match="data mixture is empty"):
        load_config(bad)
