"""Shared fixtures: a tiny MEDIC-AD built once per session, real images from ../shared/data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# one thread per test process: pytest -n 2 on 2 cores with more threads oversubscribes them badly
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# the bad-input corpus generator lives with the serving tests and is shared with the CLI tests
sys.path.insert(0, str(Path(__file__).resolve().parent / "serve"))
# the published-layout builder (tests/published_layouts.py) is shared by the data and training tests
sys.path.insert(0, str(Path(__file__).resolve().parent))

SHARED_DATA = Path(os.environ.get("MEDIC_AD_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def bad_corpus(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The bad-input corpus (tests/serve/bad_inputs), written once per session."""
    from bad_inputs.generate import write_corpus

    folder = tmp_path_factory.mktemp("bad_inputs")
    return folder, write_corpus(folder)


@pytest.fixture(scope="session")
def bad_pairs(tmp_path_factory):
    from bad_inputs.generate import write_bad_pairs

    return write_bad_pairs(tmp_path_factory.mktemp("bad_pairs"))


@pytest.fixture(scope="session")
def good_images(tmp_path_factory) -> list[Path]:
    from bad_inputs.generate import write_good

    return write_good(tmp_path_factory.mktemp("good"), 2)


@pytest.fixture(scope="session")
def dicom_file():
    """A real DICOM from pydicom's test data by name (never downloaded; skips if absent)."""
    from pydicom.data import get_testdata_file

    def get(name: str) -> Path:
        path = get_testdata_file(name, download=False)
        if path is None:
            pytest.skip(f"{name} is not installed (pydicom-data)")
        return Path(path)

    return get


@pytest.fixture(scope="session")
def tiny_model():
    from medic_ad import MedicAD

    return MedicAD.tiny(seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    tiny_model.save_pretrained(path)
    return path


@pytest.fixture
def grey_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((130, 110)) * 255).astype(np.uint8)


@pytest.fixture
def count_vision_passes(monkeypatch):
    """``count_vision_passes(model)`` → a dict whose ``"vision"`` counts the model's vision-tower passes."""

    def install(model) -> dict[str, int]:
        calls = {"vision": 0}
        encode = model.encode_images

        def counting(*args, **kwargs):
            calls["vision"] += 1
            return encode(*args, **kwargs)

        monkeypatch.setattr(model, "encode_images", counting)
        return calls

    return install
