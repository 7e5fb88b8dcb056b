"""Intensity transforms: raw stored values to float32 in [0, 1].

Pure array functions, shared by every reader, so a window or a scaling rule means the same thing
whichever format the pixels came from:

* :func:`apply_window` maps a (low, high) raw-value range linearly to [0, 1] and clips; a caller's
  ``window=`` always goes through it.
* :func:`default_scale` is the rule for raster files and arrays: 8-bit divided by 255; wider
  unsigned integers divided by the smallest ``2**k - 1`` (k in 8, 10, 12, 14, 16) not below the
  maximum, so 12-bit data stored in 16-bit files is not crushed into the dark end; floats kept when
  already in [0, 1], else min-max scaled.
* :func:`voi_window` is the DICOM window centre/width (LINEAR, LINEAR_EXACT, SIGMOID);
  :func:`percentile_window` the NIfTI slice window.
* :data:`CT_WINDOWS` names the usual CT Hounsfield windows; :func:`parse_window` turns a name or
  ``C/W`` text into a (low, high) window.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "CT_WINDOWS",
    "apply_window",
    "collapse_grey",
    "default_scale",
    "divide",
    "float_scale",
    "integer_scale",
    "min_max",
    "parse_window",
    "percentile_window",
    "scale_intensity",
    "voi_window",
    "window_from_center_width",
]

Window = tuple[float, float]


def window_from_center_width(center: float, width: float) -> Window:
    """(low, high) of a window given as centre and width, e.g. brain CT 40/80 -> (0, 80)."""
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    return (center - width / 2.0, center + width / 2.0)


#: CT windows by name, as (centre, width) in Hounsfield units
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "abdomen": (40.0, 400.0),
    "liver": (60.0, 160.0),
    "bone": (400.0, 1800.0),
}


def parse_window(text: str) -> Window:
    """(low, high) of a window named in :data:`CT_WINDOWS` (``"lung"``) or given as ``"C/W"`` (``"40/80"``)."""
    spec = str(text).strip().lower()
    if spec in CT_WINDOWS:
        return window_from_center_width(*CT_WINDOWS[spec])
    center, sep, width = spec.partition("/")
    try:
        if not sep:
            raise ValueError
        return window_from_center_width(float(center), float(width))
    except ValueError:
        names = ", ".join(sorted(CT_WINDOWS))
        raise ValueError(f"window {text!r}: give a name ({names}) or centre/width such as 40/80") from None


def apply_window(raw: np.ndarray, window: Window) -> np.ndarray:
    """Raw values in [low, high] mapped linearly to [0, 1]; values outside are clipped."""
    low, high = float(window[0]), float(window[1])
    out = (raw.astype(np.float32) - low) / np.float32(high - low)
    return np.clip(out, 0.0, 1.0)


def scale_intensity(
    raw: np.ndarray, window: Window | None, default: Callable[[np.ndarray], np.ndarray] | None = None
) -> np.ndarray:
    """``window`` when the caller gave one, else the format's ``default`` (:func:`default_scale`)."""
    if window is not None:
        return apply_window(raw, window)
    return (default or default_scale)(raw)


def divide(raw: np.ndarray, top: float) -> np.ndarray:
    """Raw values divided by the largest value their encoding can hold (``top``), as float32."""
    return raw.astype(np.float32) / np.float32(top)


def min_max(raw: np.ndarray) -> np.ndarray:
    """Lowest value to 0, highest to 1; non-finite values count as 0; a constant image is all 0 or 1."""
    raw = raw.astype(np.float32)
    finite = np.isfinite(raw)
    if not finite.all():
        raw = np.where(finite, raw, np.float32(0.0))
    low, high = float(raw.min()), float(raw.max())
    if high <= low:
        return np.zeros_like(raw) if high <= 0 else np.ones_like(raw)
    return (raw - low) / np.float32(high - low)


def integer_scale(raw: np.ndarray) -> np.ndarray:
    """Scale unsigned data by the smallest 2**k - 1 (k in 8..16) covering its maximum."""
    if raw.size == 0:
        return raw.astype(np.float32)
    if raw.min() < 0 or raw.max() > 65535:
        return min_max(raw)
    top = int(raw.max())
    for bits in (8, 10, 12, 14, 16):
        if top <= (1 << bits) - 1:
            return divide(raw, (1 << bits) - 1)
    raise AssertionError("unreachable: max <= 65535 checked above")


def float_scale(raw: np.ndarray) -> np.ndarray:
    """Floats already in [0, 1] kept (non-finite values become 0), anything else min-max scaled."""
    raw = np.nan_to_num(raw.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if raw.size and raw.min() >= 0.0 and raw.max() <= 1.0:
        return raw
    return min_max(raw)


def default_scale(raw: np.ndarray) -> np.ndarray:
    """The scaling for raster files and arrays, chosen by dtype (see the module docstring)."""
    if raw.dtype == np.bool_:
        return raw.astype(np.float32)
    if raw.dtype == np.uint8:
        return divide(raw, 255.0)
    if np.issubdtype(raw.dtype, np.unsignedinteger):
        return integer_scale(raw)
    if np.issubdtype(raw.dtype, np.integer):
        return integer_scale(raw) if raw.min() >= 0 else min_max(raw)
    return float_scale(raw)


def voi_window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """A DICOM VOI window (PS3.3 C.11.2.1.2) applied to modality values (e.g. HU), to [0, 1]."""
    x = values.astype(np.float64)
    if function == "SIGMOID":
        out = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / max(width, 1e-6)))
    elif function == "LINEAR_EXACT":
        out = (x - (center - width / 2.0)) / max(width, 1e-6)
    else:
        width = max(width, 1.0)
        out = (x - (center - 0.5)) / (width - 1.0) + 0.5
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def percentile_window(raw: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Window between two percentiles of ``raw`` (robust to a few extreme voxels); min-max if flat."""
    low, high = np.percentile(raw, percentiles)
    if high <= low:
        return min_max(raw)
    return apply_window(raw, (float(low), float(high)))


def collapse_grey(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 with identical channels -> H x W (lossless)."""
    if rgb.ndim == 3 and np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(
        rgb[..., 0], rgb[..., 2]
    ):
        return rgb[..., 0]
    return rgb
