"""The decoded image every reader returns: pixels in [0, 1] and the safe facts about them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

__all__ = ["ImageMeta", "MedicalImage", "SourceFormat"]

SourceFormat = Literal["png", "jpeg", "tiff", "dicom", "nifti", "array"]


@dataclass(frozen=True, kw_only=True)
class ImageMeta:
    """Safe, non-identifying facts about a decoded image.

    ``size`` is (height, width) of the returned pixels; ``spacing`` is (row, column) spacing in mm
    when the file states it; ``photometric`` is the source's photometric interpretation
    (e.g. ``"MONOCHROME1"``, ``"RGB"``, ``"PALETTE"``); ``orientation`` is the source's axis codes
    (``"LPS"``, ``"RAS"``) for DICOM and NIfTI.
    """

    modality: str | None = None
    size: tuple[int, int]
    spacing: tuple[float, float] | None = None
    source_format: SourceFormat
    photometric: str | None = None
    n_frames: int = 1
    orientation: str | None = None


@dataclass
class MedicalImage:
    """Decoded pixels (float32, [0, 1], H x W or H x W x 3) and their :class:`ImageMeta`."""

    pixels: np.ndarray
    meta: ImageMeta

    def __post_init__(self) -> None:
        px = np.ascontiguousarray(self.pixels, dtype=np.float32)
        if not (px.ndim == 2 or (px.ndim == 3 and px.shape[2] == 3)):
            raise ValueError(f"pixels must be H x W or H x W x 3, got shape {px.shape}")
        if px.size and (not np.isfinite(px).all() or px.min() < 0.0 or px.max() > 1.0):
            raise ValueError("pixels must be finite and within [0, 1]")
        self.pixels = px

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the pixel array."""
        return self.pixels.shape

    def to_uint8(self) -> np.ndarray:
        """Pixels as uint8 (0-255), same layout as ``pixels``."""
        return np.round(self.pixels * 255.0).astype(np.uint8)

    def to_pil(self) -> Image.Image:
        """An 8-bit RGB PIL image (grey is replicated into three channels)."""
        u8 = self.to_uint8()
        if u8.ndim == 2:
            u8 = np.repeat(u8[:, :, None], 3, axis=2)
        return Image.fromarray(u8)

    def __repr__(self) -> str:
        return f"MedicalImage(shape={self.pixels.shape}, meta={self.meta!r})"
