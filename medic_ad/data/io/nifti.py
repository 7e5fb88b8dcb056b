"""NIfTI-1/2 (``.nii``, ``.nii.gz``, header/image pairs) through nibabel, and its header probe.

A read reorients the volume to the closest canonical (RAS+) axes, takes one slice along ``axis``
(0 sagittal, 1 coronal, 2 axial; default the middle slice), shows it in radiological convention
and windows it to the slice's 0.5-99.5 percentiles unless the caller gives a window.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from medic_ad.data.errors import ImageReadError
from medic_ad.data.io.base import SNIFF_BYTES, HeaderInfo, ImageReader, ReadOptions
from medic_ad.data.io.image import ImageMeta, MedicalImage, SourceFormat
from medic_ad.data.io.transforms import percentile_window, scale_intensity

__all__ = ["NIFTI_PERCENTILES", "NiftiReader", "gzip_inflates_beyond"]

NIFTI_PERCENTILES = (0.5, 99.5)
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_ERRORS = (OSError, EOFError, zlib.error)


def _nifti_magic(header: bytes) -> str | None:
    """'n+1'/'ni1'/'n+2'/'ni2' if ``header`` starts a NIfTI-1/2 header, else None."""
    if len(header) >= 348 and header[344:348] in (b"n+1\x00", b"ni1\x00"):
        for order in ("<", ">"):
            if struct.unpack(order + "i", header[:4])[0] == 348:
                return header[344:347].decode()
    if len(header) >= 12 and header[4:8] in (b"n+2\x00", b"ni2\x00"):
        for order in ("<", ">"):
            if struct.unpack(order + "i", header[:4])[0] == 540:
                return header[4:7].decode()
    return None


def _inflated_head(path: Path) -> bytes | None:
    """The first bytes of a gzip stream's content, or None when the stream cannot be read."""
    try:
        with gzip.open(path, "rb") as gz:
            return gz.read(SNIFF_BYTES)
    except _GZIP_ERRORS:
        return None


def gzip_inflates_beyond(path: Path, cap: int) -> bool:
    """Whether the gzip stream ``path`` inflates to more than ``cap`` bytes (read in chunks, stopping
    at ``cap``). A stream that breaks off before ``cap`` is not: the reader names it as truncated."""
    total = 0
    try:
        with gzip.open(path, "rb") as g:
            while chunk := g.read(1 << 20):
                total += len(chunk)
                if total > cap:
                    return True
    except _GZIP_ERRORS:
        return False
    return False


def _header_fields(head: bytes) -> tuple[tuple[int, ...], int] | None:
    """(dim, bitpix) from a NIfTI-1/2 header through nibabel's header classes (either byte order)."""
    import nibabel as nib

    magic = _nifti_magic(head)
    if magic is None:
        return None
    klass = nib.Nifti2Header if magic.endswith("2") else nib.Nifti1Header
    try:
        header = klass.from_fileobj(io.BytesIO(head), check=False)
        return tuple(int(d) for d in header["dim"]), int(header["bitpix"])
    except Exception:  # too short or malformed: left to read's precise message
        return None


class NiftiReader(ImageReader):
    """NIfTI-1/2 (``.nii``, ``.nii.gz``) through nibabel: one 2-D slice of a 3-D or 4-D volume."""

    formats = ("nifti",)
    requires = "nibabel"
    extensions = {".nii.gz": "NIfTI", ".nii": "NIfTI"}

    def __init__(self, percentiles: tuple[float, float] = NIFTI_PERCENTILES) -> None:
        self.percentiles = percentiles

    def sniff(self, head: bytes, path: Path) -> SourceFormat | None:
        if head.startswith(_GZIP_MAGIC):
            inner = _inflated_head(path)
            return "nifti" if inner is not None and _nifti_magic(inner) else None
        return "nifti" if _nifti_magic(head) else None

    def probe(self, path: Path) -> HeaderInfo:
        """Voxel count (all dimensions, all volumes) and bytes per voxel from ``dim`` and ``bitpix``."""
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
        compressed = head.startswith(_GZIP_MAGIC)
        if compressed:
            head = _inflated_head(path)
        fields = _header_fields(head) if head is not None else None
        if fields is None or not 1 <= fields[0][0] <= 7:
            return HeaderInfo(format="nifti", compressed=compressed)
        dims, bitpix = fields[0][1:fields[0][0] + 1], fields[1]
        # float64 product: a hostile header's dims overflow any integer type
        voxels = int(np.prod(dims, dtype=np.float64)) if all(d > 0 for d in dims) else 0
        frames = dims[3] if len(dims) >= 4 and dims[3] > 0 else 1
        return HeaderInfo(format="nifti", frames=frames, voxels=voxels, bytes_per_voxel=max(1, bitpix // 8),
                          compressed=compressed)

    def read(self, path: Path, options: ReadOptions) -> MedicalImage:
        """Slice ``slice_index`` (default middle) along canonical ``axis``; ``frame``: volume of 4-D data."""
        import nibabel as nib

        axis = options.axis
        img, raw_len = self._load(path)
        shape = tuple(int(s) for s in img.shape)
        if not 2 <= len(shape) <= 4:
            raise ImageReadError(path, f"unsupported {len(shape)}-D NIfTI (expected 2-D, 3-D or 4-D)")
        self._check_length(path, img, raw_len)
        data: Any = img.dataobj
        if len(shape) == 2:
            data, shape = np.asanyarray(data)[..., None], shape + (1,)
        n_frames = shape[3] if len(shape) == 4 else 1
        t = n_frames // 2 if options.frame is None else options.frame
        if not 0 <= t < n_frames:
            raise ImageReadError(path, f"frame {t} out of range ({n_frames} volume(s))")
        ornt = nib.io_orientation(img.affine)
        in_axis = int(np.flatnonzero(ornt[:, 0] == axis)[0])
        n = shape[in_axis]
        k = n // 2 if options.slice_index is None else options.slice_index
        if not 0 <= k < n:
            raise ImageReadError(path, f"slice {k} out of range ({n} slices along axis {axis})")
        index: list[Any] = [slice(None)] * len(shape)
        index[in_axis] = n - 1 - k if ornt[in_axis, 1] < 0 else k
        if len(shape) == 4:
            index[3] = t
        try:
            sl = np.asarray(data[tuple(index)])
        except Exception as exc:  # nibabel's array proxy raises several types on bad data
            raise ImageReadError(path, f"cannot read NIfTI voxel data ({type(exc).__name__})") from None
        if sl.dtype.fields:
            raise ImageReadError(path, "RGB NIfTI is not supported")
        sl = sl.astype(np.float32)
        kept = [a for a in range(3) if a != in_axis]
        for j, a in enumerate(kept):
            if ornt[a, 1] < 0:
                sl = np.flip(sl, axis=j)
        if ornt[kept[0], 0] > ornt[kept[1], 0]:
            sl = sl.T
        # sl is (lower canonical axis, higher canonical axis) in RAS+ directions; show the higher
        # axis top-down (anterior/superior first) and the lower one patient-right-on-the-left.
        sl = np.ascontiguousarray(sl.T[::-1, ::-1])
        sl = np.nan_to_num(sl, nan=0.0, posinf=0.0, neginf=0.0)
        pixels = scale_intensity(sl, options.window, self._percentile_window)
        zooms = img.header.get_zooms()
        by_canon = {int(ornt[a, 0]): float(zooms[a]) for a in kept if a < len(zooms)}
        lo, hi = sorted(int(ornt[a, 0]) for a in kept)
        spacing = (by_canon[hi], by_canon[lo]) if lo in by_canon and hi in by_canon else None
        meta = ImageMeta(
            size=(pixels.shape[0], pixels.shape[1]),
            spacing=spacing,
            source_format="nifti",
            photometric="MONOCHROME2",
            n_frames=n_frames,
            orientation="".join(nib.aff2axcodes(img.affine)),
        )
        return MedicalImage(pixels, meta)

    def _percentile_window(self, sl: np.ndarray) -> np.ndarray:
        return percentile_window(sl, self.percentiles)

    @staticmethod
    def _load(path: Path) -> tuple[Any, int]:
        import nibabel as nib

        with open(path, "rb") as fh:
            raw = fh.read()
        if raw[:2] == _GZIP_MAGIC:
            try:
                raw = gzip.decompress(raw)
            except _GZIP_ERRORS:
                raise ImageReadError(path, "truncated NIfTI (gzip stream ends early)") from None
        magic = _nifti_magic(raw[:SNIFF_BYTES])
        try:
            if magic in ("ni1", "ni2"):  # header/image pair: nibabel finds the .img beside it
                return nib.load(str(path)), len(raw)
            klass = nib.Nifti2Image if magic == "n+2" else nib.Nifti1Image
            return klass.from_bytes(raw), len(raw)
        except Exception as exc:
            raise ImageReadError(path, f"corrupt NIfTI header ({type(exc).__name__})") from None

    @staticmethod
    def _check_length(path: Path, img: Any, raw_len: int) -> None:
        header = img.header
        if header.get("magic", b"").tobytes()[:3] in (b"ni1", b"ni2"):
            return
        expected = int(header.get_data_offset()) + int(np.prod(img.shape)) * header.get_data_dtype().itemsize
        if raw_len < expected:
            raise ImageReadError(path, "truncated NIfTI (voxel data ends early)")
