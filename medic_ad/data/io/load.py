"""The entry points: read a file, measure it, probe its header, load any image-like input or mask.

``read_image`` sniffs the file's magic bytes (never the extension) and hands it to the registered
reader of that format. A missing file is a ``FileNotFoundError``; every other failure is one
``ImageReadError`` naming the file.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
from PIL import Image

from medic_ad.data.errors import ImageReadError
from medic_ad.data.io.base import HeaderInfo, ImageReader, ReadOptions, extension_hint, reader_for, sniff_format
from medic_ad.data.io.image import ImageMeta, MedicalImage
from medic_ad.data.io.pil import PIL_FORMATS, pil_to_image
from medic_ad.data.io.transforms import default_scale

__all__ = ["image_size", "load_image_any", "load_mask", "probe_header", "read_image"]


def _check_path(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    if path.is_dir():
        raise ImageReadError(path, "is a directory, not an image file")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "0-byte file")


def _unknown_format_problem(path: Path) -> str:
    hint = extension_hint(path)
    if hint:
        return f"not a valid {hint} file (its content does not start like one: corrupt or mislabelled)"
    return "unknown image format (not PNG/JPEG/TIFF/DICOM/NIfTI)"


def _reader(path: Path) -> ImageReader:
    """The reader for an existing, non-empty file of a format we read, its package importable."""
    _check_path(path)
    fmt = sniff_format(path)
    if fmt is None:
        raise ImageReadError(path, _unknown_format_problem(path))
    reader = reader_for(fmt)
    if not reader.available():
        raise ImageReadError(path, f"reading {fmt} files needs the optional package '{reader.requires}'")
    return reader


def read_image(
    path: str | Path,
    *,
    frame: int | None = None,
    axis: int = 2,
    slice_index: int | None = None,
    window: tuple[float, float] | None = None,
) -> MedicalImage:
    """Read a PNG/JPEG/TIFF/DICOM/NIfTI file into a :class:`MedicalImage`.

    ``path``'s format is sniffed from its content; ``frame``, ``axis``, ``slice_index`` and
    ``window`` are the :class:`ReadOptions` (their defaults: middle frame or first TIFF page, axial,
    middle slice, the format's own scaling).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ImageReadError: the file is empty, of an unknown format, corrupt or truncated.
        ValueError: ``axis`` is not 0, 1 or 2, or ``window`` is not (low, high) with high > low.
    """
    options = ReadOptions(frame=frame, axis=axis, slice_index=slice_index, window=window)
    path = Path(path)
    return _reader(path).read(path, options)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of the image ``read_image(path)`` would return, from the header when cheap."""
    path = Path(path)
    return _reader(path).image_size(path)


def probe_header(path: str | Path) -> HeaderInfo | None:
    """What the header of ``path`` states (nothing decoded), or None when its format is none we read.

    The file must exist and be readable; a header the reader cannot parse gives a
    :class:`HeaderInfo` without sizes, leaving the precise complaint to :func:`read_image`.
    """
    path = Path(path)
    fmt = sniff_format(path)
    if fmt is None:
        return None
    reader = reader_for(fmt)
    return reader.probe(path) if reader.available() else HeaderInfo(format=fmt)


def _array_to_image(arr: np.ndarray) -> MedicalImage:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"array image must be H x W or H x W x 3, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"array image must be numeric, got dtype {arr.dtype}")
    pixels = default_scale(arr)
    photometric = "RGB" if pixels.ndim == 3 else "MONOCHROME2"
    meta = ImageMeta(size=(pixels.shape[0], pixels.shape[1]), source_format="array", photometric=photometric)
    return MedicalImage(pixels, meta)


def load_image_any(x: str | Path | Image.Image | np.ndarray | MedicalImage) -> MedicalImage:
    """A :class:`MedicalImage` from a path, a PIL image, a numpy array or a MedicalImage.

    Arrays: uint8 is divided by 255, uint16 scaled like 16-bit PNG, floats kept when already in
    [0, 1] and min-max scaled otherwise; H x W x 1 is squeezed and an alpha channel dropped.
    """
    if isinstance(x, MedicalImage):
        return x
    if isinstance(x, (str, os.PathLike)):
        return read_image(Path(x))
    if isinstance(x, Image.Image):
        return pil_to_image(x, PIL_FORMATS.get(x.format or "", "array"), None)
    if isinstance(x, np.ndarray):
        return _array_to_image(x)
    raise TypeError(f"cannot load an image from {type(x).__name__}")


def load_mask(x: str | Path | np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """A binary mask (uint8, 0/1, H x W): raw value > 0 in any channel is foreground.

    ``size`` (height, width), when given, must match the mask's size.
    """
    if isinstance(x, np.ndarray):
        raw = x
    else:
        # a window just above 0: any stored value > 0 maps to > 0, whatever the format's scaling
        raw = read_image(Path(x), window=(0.0, 0.5)).pixels
    mask = (raw > 0).any(axis=2) if raw.ndim == 3 else raw > 0
    if size is not None and tuple(mask.shape) != tuple(size):
        where = "mask array" if isinstance(x, np.ndarray) else str(x)
        raise ValueError(f"{where}: mask size {mask.shape} differs from image size {tuple(size)}")
    return mask.astype(np.uint8)
