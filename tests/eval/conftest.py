"""Fixtures of the eval tests: a dummy model (lm-eval style), image folders, a bare tiny backbone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


class DummyModel:
    """Implements the harness's low-level model interface without a network.

    A bright image (mean > 0.5) reads as abnormal: P(Yes) = its mean. Pairs: the current image
    brighter than the prior → "C: Worsened", darker → "B: Improved", else "A: No significant change".
    ``answers`` overrides the text of every answer (e.g. unparseable ones).
    """

    supports_heatmaps = True
    kind = "dummy"

    class _Proc:
        ids = {"Yes": 1, "No": 2, "A": 3, "B": 4, "C": 5}

        def first_token_id(self, text: str) -> int:
            return self.ids[text]

    def __init__(self, answers: str | None = None) -> None:
        self.processor = self._Proc()
        self.answers = answers
        self.calls = 0

    def prepare(self, examples):
        means = [[float(np.asarray(im.convert("L"), dtype=np.float32).mean() / 255) for im in ex.images]
                 for ex in examples]
        return {"means": means, "questions": [ex.question for ex in examples]}

    def next_token_logits(self, batch):
        self.calls += 1
        out = torch.full((len(batch["means"]), 8), -30.0)
        for i, m in enumerate(batch["means"]):
            if len(m) == 1:
                p = min(max(m[0], 1e-4), 1 - 1e-4)
                out[i, 1], out[i, 2] = float(np.log(p)), float(np.log(1 - p))
            else:
                d = m[1] - m[0]
                letter = 5 if d > 0.02 else 4 if d < -0.02 else 3
                out[i, letter] = 5.0
        return out

    def generate(self, batch, *, max_new_tokens=8, forced_first=None):
        texts = {1: "Yes.", 2: "No.", 3: "A: No significant change", 4: "B: Improved", 5: "C: Worsened"}
        if self.answers is not None:
            return [self.answers] * len(batch["means"])
        if forced_first is None:
            return ["The liver." for _ in batch["means"]]
        return [texts[int(t)] for t in forced_first]

    def explain(self, image):
        px = np.asarray(image.pixels if hasattr(image, "pixels") else image, dtype=np.float32)
        if px.ndim == 3:
            px = px.mean(-1)
        return (px > 0.5).astype(np.float32)


@pytest.fixture
def dummy():
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
