"""The pretrained tiny backbone shipped in the package: its files match the manifest, and it loads
through the same ``from_pretrained`` path a Lingshu-7B folder takes."""

from __future__ import annotations

import json
import shutil

import pytest

from medic_ad.models.qwen2_5_vl.backbone import load_backbone
from medic_ad.models.qwen2_5_vl.shipped import (MANIFEST_FILE, ShippedBackboneError, file_sha256, read_manifest,
                                                verify_tiny_backbone)
from medic_ad.paths import tiny_backbone_dir
from medic_ad.training.config import load_config


def test_every_shipped_file_matches_its_manifest_digest():
    folder = verify_tiny_backbone()
    manifest = read_manifest(folder)
    assert manifest["weights_sha256"] == file_sha256(folder / "model.safetensors")
    assert manifest["files"]["model.safetensors"] == manifest["weights_sha256"]
    assert set(manifest["files"]) == {p.name for p in folder.iterdir() if p.name != MANIFEST_FILE}
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 30 * 1024 * 1024
    for key in ("command", "commit", "steps", "wall_s", "data", "machine"):
        assert manifest[key], key
    # trained on training splits only: every source of the recipe names split train, or is generated
    assert all(d["split"] == "train" or d["name"] == "synthetic" for d in manifest["data"])


def test_the_shipped_backbone_loads_like_any_qwen2_5_vl_folder():
    backbone = load_backbone(tiny_backbone_dir(), dtype="float32")
    stage0 = load_config(tiny_backbone_dir().parents[2] / "recipes/configs/tiny/stage0_pretrain.yaml")
    vision = backbone.model.config.vision_config
    assert vision.hidden_size == stage0.model["vision_hidden_size"]
    assert backbone.model.config.text_config.hidden_size == stage0.model["text_hidden_size"]
    assert backbone.processor.tokenizer.convert_tokens_to_ids("<Ano>") is not None


def test_a_damaged_copy_is_refused_by_name(tmp_path):
    copy = tmp_path / "tiny_backbone"
    shutil.copytree(tiny_backbone_dir(), copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ShippedBackboneError, match=r"model\.safetensors: SHA-256 differs"):
        verify_tiny_backbone(copy)
    weights.write_text("version https://git-lfs.github.com/spec/v1\n")  # what a clone without LFS holds
    with pytest.raises(ShippedBackboneError, match="model.safetensors"):
        verify_tiny_backbone(copy)
    weights.unlink()
    with pytest.raises(ShippedBackboneError, match="missing"):
        verify_tiny_backbone(copy)
    (copy / MANIFEST_FILE).write_text(json.dumps({"files": {}}))
    with pytest.raises(ShippedBackboneError, match="lists no files"):
        verify_tiny_backbone(copy)
