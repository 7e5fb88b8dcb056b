"""Fixtures of the data-layer tests: the shared real data, and writers of tiny files in exact formats."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

DEFAULT_SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (``$MEDIC_AD_DATA`` or ``../shared/data``); skips when absent."""
    root = Path(os.environ.get("MEDIC_AD_DATA") or DEFAULT_SHARED)
    if not (root / "br35h").is_dir():
        pytest.skip(f"real data not found at {root} (set MEDIC_AD_DATA to its folder)")
    return root


@pytest.fixture
def write_png() -> Callable[..., Path]:
    """``write_png(path, array_or_size, value=...)``: a PNG file, folders created."""

    def write(path: Path, image: np.ndarray | tuple[int, int] = (16, 16), value: int = 128) -> Path:
        arr = np.full(image, value, dtype=np.uint8) if isinstance(image, tuple) else image
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path)
        return path

    return write


@pytest.fixture
def write_json() -> Callable[[Path, Any], Path]:
    """``write_json(path, obj)``: a JSON file, or JSON lines when ``path`` ends in .jsonl and obj is a list."""

    def write(path: Path, obj: Any) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in obj), encoding="utf-8")
        else:
            path.write_text(json.dumps(obj), encoding="utf-8")
        return path

    return write


@pytest.fixture
def make_dicom() -> Callable[..., Path]:
    """``make_dicom(path, pixels, **elements)``: a valid DICOM file written with pydicom.

    ``pixels`` is H x W, F x H x W (multi-frame) or H x W x 3 (RGB), uint8 or uint16.
    """
    pytest.importorskip("pydicom")
    from bad_inputs.generate import ct_dataset  # tests/serve is on sys.path (tests/conftest.py)

    def make(path: Path, pixels: np.ndarray, **elements: Any) -> Path:
        ds = ct_dataset()
        rgb = pixels.ndim == 3 and pixels.shape[-1] == 3
        frames = pixels.ndim == 3 and not rgb
        ds.Rows, ds.Columns = (pixels.shape[1], pixels.shape[2]) if frames else pixels.shape[:2]
        if frames:
            ds.NumberOfFrames = pixels.shape[0]
        ds.SamplesPerPixel = 3 if rgb else 1
        ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
        if rgb:
            ds.PlanarConfiguration = 0
        bits = 8 if pixels.dtype == np.uint8 else 16
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
        ds.PixelRepresentation = 0
        for key, value in elements.items():
            setattr(ds, key, value)
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        return path

    return make
