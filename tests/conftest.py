"""Shared fixtures: a tiny MEDIC-AD built once per session, real images from ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

# one thread per test process: pytest -n 2 on 2 cores with more threads oversubscribes them badly
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_DATA = Path(os.environ.get("MEDIC_AD_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


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
