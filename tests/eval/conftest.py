"""Fixtures of the eval tests: a dummy model (lm-eval style), image folders, a bare tiny backbone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture
def dummy():
    from medic_ad.models.dummy import DummyModel

    return DummyModel


def _png(path: Path, value: float, size=(24, 20), square: bool = False) -> None:
    a = np.full(size, value * 255, dtype=np.uint8)
    if square:
        a[:] = 20
        a[4:12, 5:13] = 230
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """abnormal/ (bright) and normal/ (dark) PNGs, 4 + 4, one bright normal (a false positive)."""
    root = tmp_path / "folder"
    for i, v in enumerate([0.9, 0.8, 0.7, 0.3]):
        _png(root / "abnormal" / f"a{i}.png", v)
    for i, v in enumerate([0.1, 0.2, 0.25, 0.6]):
        _png(root / "normal" / f"n{i}.png", v)
    return root


@pytest.fixture
def mask_folder(tmp_path) -> Path:
    """images/ with a bright square, masks/ marking that square (one with an empty mask)."""
    root = tmp_path / "masks_ds"
    for i in range(3):
        _png(root / "images" / f"{i}.png", 0, square=True)
        m = np.zeros((24, 20), np.uint8)
        if i < 2:
            m[4:12, 5:13] = 255
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(m).save(root / "masks" / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def bare_backbone(tmp_path_factory) -> Path:
    from medic_ad.models.qwen2_5_vl.backbone import Backbone
    from medic_ad.models.qwen2_5_vl.tiny import build_tiny_qwen2_5_vl

    path = tmp_path_factory.mktemp("bare") / "qwen-tiny"
    model, processor = build_tiny_qwen2_5_vl(seed=0)
    Backbone(model, processor, "tiny").save_pretrained(path)
    return path


@pytest.fixture
def eval_cli(capsys):
    """``eval_cli("eval", ...)`` -> (exit code, stdout, stderr)."""
    from medic_ad.cli.main import main

    def run(*argv) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
