"""Medical image readers behind one interface (after MONAI's ``image_reader.py``).

``read_image`` sniffs the file's magic bytes (never the extension), hands the file to the reader of
that format and returns a :class:`MedicalImage`: float32 pixels in [0, 1], H x W (grey) or
H x W x 3 (colour), plus an :class:`ImageMeta` with *safe* fields only. pydicom and nibabel are
optional imports, loaded the first time a DICOM or NIfTI file is read.

Intensity handling, per format:

* PNG / JPEG / TIFF: 8-bit divided by 255; 16-bit divided by the smallest ``2**k - 1``
  (k in 8, 10, 12, 14, 16) not below the image maximum, so 12-bit data stored in 16-bit files is
  not crushed into the dark end; float images min-max scaled unless already in [0, 1].
* DICOM: modality LUT (rescale slope/intercept), then the file's VOI LUT or window centre/width
  (first value), else min-max; MONOCHROME1 is inverted; palette and YBR data become RGB.
* NIfTI: reoriented to the closest canonical (RAS+) axes, one slice taken along ``axis``
  (0 sagittal, 1 coronal, 2 axial; default the middle slice), shown in radiological convention,
  then windowed to the slice's 0.5-99.5 percentiles.

``window=(low, high)`` overrides all of these: raw values (DICOM: after the modality LUT, e.g. HU)
are mapped linearly from [low, high] to [0, 1] and clipped. :func:`window_from_center_width` turns
a radiologist's centre/width into that pair.

Every failure inside PIL, pydicom or nibabel becomes one :class:`ImageReadError` naming the file;
a missing file is a ``FileNotFoundError``. Patient fields are never read into meta, logs or errors.
"""

from __future__ import annotations

import errno
import gzip
import importlib.util
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageOps

from medic_ad.data.errors import ImageReadError

__all__ = [
    "DicomReader",
    "ImageMeta",
    "ImageReader",
    "MedicalImage",
    "NiftiReader",
    "PILReader",
    "READERS",
    "SourceFormat",
    "image_size",
    "load_image_any",
    "load_mask",
    "read_image",
    "sniff_format",
    "window_from_center_width",
]

SourceFormat = Literal["png", "jpeg", "tiff", "dicom", "nifti", "array"]

NIFTI_PERCENTILES = (0.5, 99.5)
_PIL_FORMATS = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "TIFF": "tiff"}
_EXTENSION_HINT = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF",
    ".dcm": "DICOM", ".dicom": "DICOM", ".nii": "NIfTI",
}


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


def window_from_center_width(center: float, width: float) -> tuple[float, float]:
    """(low, high) of a window given as centre and width, e.g. brain CT 40/80 -> (0, 80)."""
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    return (center - width / 2.0, center + width / 2.0)


# --------------------------------------------------------------------------------------------
# intensity helpers


def _apply_window(raw: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    low, high = float(window[0]), float(window[1])
    out = (raw.astype(np.float32) - low) / np.float32(high - low)
    return np.clip(out, 0.0, 1.0)


def _min_max(raw: np.ndarray) -> np.ndarray:
    raw = raw.astype(np.float32)
    finite = np.isfinite(raw)
    if not finite.all():
        raw = np.where(finite, raw, np.float32(0.0))
    low, high = float(raw.min()), float(raw.max())
    if high <= low:
        return np.zeros_like(raw) if high <= 0 else np.ones_like(raw)
    return (raw - low) / np.float32(high - low)


def _integer_scale(raw: np.ndarray) -> np.ndarray:
    """Scale unsigned data by the smallest 2**k - 1 (k in 8..16) covering its maximum."""
    if raw.size == 0:
        return raw.astype(np.float32)
    if raw.min() < 0 or raw.max() > 65535:
        return _min_max(raw)
    top = int(raw.max())
    for bits in (8, 10, 12, 14, 16):
        if top <= (1 << bits) - 1:
            return raw.astype(np.float32) / np.float32((1 << bits) - 1)
    raise AssertionError("unreachable: max <= 65535 checked above")


def _float_scale(raw: np.ndarray) -> np.ndarray:
    raw = np.nan_to_num(raw.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if raw.size and raw.min() >= 0.0 and raw.max() <= 1.0:
        return raw
    return _min_max(raw)


def _default_scale(raw: np.ndarray) -> np.ndarray:
    if raw.dtype == np.bool_:
        return raw.astype(np.float32)
    if raw.dtype == np.uint8:
        return raw.astype(np.float32) / np.float32(255.0)
    if np.issubdtype(raw.dtype, np.unsignedinteger):
        return _integer_scale(raw)
    if np.issubdtype(raw.dtype, np.integer):
        return _integer_scale(raw) if raw.min() >= 0 else _min_max(raw)
    return _float_scale(raw)


def _collapse_grey(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 with identical channels -> H x W (lossless)."""
    if rgb.ndim == 3 and np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(
        rgb[..., 0], rgb[..., 2]
    ):
        return rgb[..., 0]
    return rgb


def _normalise(raw: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    return _apply_window(raw, window) if window is not None else _default_scale(raw)


# --------------------------------------------------------------------------------------------
# format sniffing


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


def _looks_like_raw_dicom(head: bytes) -> bool:
    """A DICOM stream without the 128-byte preamble: starts with a group 0002/0008 element."""
    if len(head) < 8:
        return False
    little = head[:2] in (b"\x02\x00", b"\x08\x00")
    big = head[:2] in (b"\x00\x02", b"\x00\x08")
    if not (little or big):
        return False
    vr = head[4:6]
    explicit = vr.isalpha() and vr.isupper()
    # implicit VR little endian: a 4-byte length follows the tag instead of a VR
    return explicit or (little and head[6:8] == b"\x00\x00")


def sniff_format(path: str | Path) -> SourceFormat | None:
    """The image format of ``path`` from its magic bytes, or None when it is none we read."""
    with open(path, "rb") as fh:
        head = fh.read(544)
    if head[128:132] == b"DICM":  # first: a DICOM preamble may itself look like a TIFF header
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as gz:
                inner = gz.read(544)
        except (OSError, EOFError, zlib.error):
            return None
        return "nifti" if _nifti_magic(inner) else None
    if _nifti_magic(head):
        return "nifti"
    if _looks_like_raw_dicom(head):
        return "dicom"
    return None


# --------------------------------------------------------------------------------------------
# readers


class ImageReader:
    """Base class of the per-format readers: ``read`` one file into a :class:`MedicalImage`."""

    formats: tuple[str, ...] = ()
    requires: str | None = None

    def available(self) -> bool:
        """Whether the optional package this reader needs is importable."""
        return self.requires is None or importlib.util.find_spec(self.requires) is not None

    def read(
        self,
        path: Path,
        *,
        frame: int | None = None,
        axis: int = 2,
        slice_index: int | None = None,
        window: tuple[float, float] | None = None,
    ) -> MedicalImage:
        """Decode ``path``; raise :class:`ImageReadError` on any failure."""
        raise NotImplementedError


def _pil_raw(im: Image.Image) -> tuple[np.ndarray, str]:
    """Raw pixel values of a PIL image (H x W or H x W x 3) and a photometric name."""
    mode = im.mode
    if mode == "1":
        return np.asarray(im, dtype=bool), "MONOCHROME2"
    if mode in ("L", "LA"):
        return np.asarray(im.getchannel("L")), "MONOCHROME2"
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im)
        if mode.startswith("I;16"):
            arr = arr.astype(np.uint16)
        return arr, "MONOCHROME2"
    if mode in ("P", "PA"):
        rgb = np.asarray(im.convert("RGB"))
        return _collapse_grey(rgb), "PALETTE"
    if mode == "RGBA":
        rgba = np.asarray(im).astype(np.float32)
        rgb = rgba[..., :3] * (rgba[..., 3:4] / 255.0)
        return _collapse_grey(np.round(rgb).astype(np.uint8)), "RGB"
    rgb = np.asarray(im.convert("RGB"))
    return _collapse_grey(rgb), "RGB"


def _pil_to_image(
    im: Image.Image,
    source_format: SourceFormat,
    window: tuple[float, float] | None,
    n_frames: int = 1,
) -> MedicalImage:
    raw, photometric = _pil_raw(im)
    if photometric == "RGB" and raw.ndim == 2:
        photometric = "MONOCHROME2"
    pixels = _normalise(raw, window)
    # no spacing: a raster file's dpi is a writer default, not a pixel size
    meta = ImageMeta(
        size=(pixels.shape[0], pixels.shape[1]),
        source_format=source_format,
        photometric=photometric,
        n_frames=n_frames,
    )
    return MedicalImage(pixels, meta)


class PILReader(ImageReader):
    """PNG, JPEG and TIFF (8/16-bit, grey, RGB, RGBA, palette) through Pillow."""

    formats = ("png", "jpeg", "tiff")

    def read(
        self,
        path: Path,
        *,
        frame: int | None = None,
        axis: int = 2,
        slice_index: int | None = None,
        window: tuple[float, float] | None = None,
    ) -> MedicalImage:
        """Decode one PNG/JPEG/TIFF file; ``frame`` picks a page of a multi-page TIFF (default 0)."""
        fmt = sniff_format(path) or "png"
        label = fmt.upper()
        try:
            with Image.open(path) as im:
                n_frames = int(getattr(im, "n_frames", 1))
                if frame is not None:
                    if not 0 <= frame < n_frames:
                        raise ImageReadError(path, f"frame {frame} out of range ({n_frames} frame(s))")
                    im.seek(frame)
                im.load()
                if fmt == "jpeg":
                    im = ImageOps.exif_transpose(im)
                return _pil_to_image(im, fmt, window, n_frames)  # type: ignore[arg-type]
        except ImageReadError:
            raise
        except Image.DecompressionBombError:
            raise ImageReadError(path, f"{label} too large to decode safely") from None
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError) as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "truncated" in text or isinstance(exc, EOFError):
                raise ImageReadError(path, f"truncated {label} (image data ends early)") from None
            raise ImageReadError(path, f"corrupt {label} ({text})") from None


def _dicom_number(value: Any) -> float:
    """First number of a (possibly multi-valued) DS/IS element."""
    from pydicom.multival import MultiValue

    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0]
    return float(value)


def _dicom_orientation(ds: Any) -> str | None:
    """Axis codes (LPS patient frame) of the row direction, column direction and slice normal."""
    try:
        cosines = [float(v) for v in ds.ImageOrientationPatient]
    except (AttributeError, TypeError, ValueError):
        return None
    if len(cosines) != 6:
        return None
    row, col = np.array(cosines[:3]), np.array(cosines[3:])
    normal = np.cross(row, col)
    codes = ""
    for vec in (row, col, normal):
        k = int(np.argmax(np.abs(vec)))
        positive, negative = ("L", "R") if k == 0 else ("P", "A") if k == 1 else ("S", "I")
        codes += positive if vec[k] >= 0 else negative
    return codes


def _dicom_spacing(ds: Any) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None:
            try:
                row, col = (float(v) for v in list(value)[:2])
            except (TypeError, ValueError):
                continue
            if row > 0 and col > 0:
                return (row, col)
    return None


def _dicom_window(arr: np.ndarray, ds: Any) -> np.ndarray:
    """Window centre/width of the file (DICOM PS3.3 C.11.2.1.2), to [0, 1]."""
    center, width = _dicom_number(ds.WindowCenter), _dicom_number(ds.WindowWidth)
    function = str(ds.get("VOILUTFunction", "LINEAR")).strip().upper()
    x = arr.astype(np.float64)
    if function == "SIGMOID":
        out = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / max(width, 1e-6)))
    elif function == "LINEAR_EXACT":
        out = (x - (center - width / 2.0)) / max(width, 1e-6)
    else:
        width = max(width, 1.0)
        out = (x - (center - 0.5)) / (width - 1.0) + 0.5
    return np.clip(out, 0.0, 1.0).astype(np.float32)


class DicomReader(ImageReader):
    """DICOM through pydicom: modality LUT, VOI LUT/window, MONOCHROME1, multi-frame, colour."""

    formats = ("dicom",)
    requires = "pydicom"

    def read(
        self,
        path: Path,
        *,
        frame: int | None = None,
        axis: int = 2,
        slice_index: int | None = None,
        window: tuple[float, float] | None = None,
    ) -> MedicalImage:
        """Decode one frame (default: the middle one) of a DICOM file."""
        import pydicom

        with warnings.catch_warnings():
            # pydicom warnings can quote element values; keep them out of the user's logs.
            warnings.simplefilter("ignore")
            try:
                with open(path, "rb") as fh:
                    has_preamble = fh.read(132)[128:132] == b"DICM"
                ds = pydicom.dcmread(path, force=not has_preamble)
            except Exception as exc:  # any parser failure becomes one clear error
                raise ImageReadError(path, f"corrupt DICOM header ({type(exc).__name__})") from None
            if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
                raise ImageReadError(path, "DICOM has no pixel data (truncated, or not an image object)")
            tsyntax = self._transfer_syntax(ds)
            n_frames = self._n_frames(ds)
            index = n_frames // 2 if frame is None else frame
            if not 0 <= index < n_frames:
                raise ImageReadError(path, f"frame {index} out of range ({n_frames} frame(s))")
            arr = self._decode(path, ds, tsyntax, index if n_frames > 1 else None)
            pixels, photometric = self._to_unit(arr, ds, window, path)
        meta = ImageMeta(
            modality=(str(ds.get("Modality", "")).strip() or None),
            size=(pixels.shape[0], pixels.shape[1]),
            spacing=_dicom_spacing(ds),
            source_format="dicom",
            photometric=photometric,
            n_frames=n_frames,
            orientation=_dicom_orientation(ds),
        )
        return MedicalImage(pixels, meta)

    @staticmethod
    def _transfer_syntax(ds: Any) -> Any:
        """The file's transfer syntax UID; inferred from the encoding when the meta header lacks it."""
        from pydicom.uid import UID

        file_meta = getattr(ds, "file_meta", None)
        tsyntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
        if tsyntax is None:
            from pydicom.dataset import FileMetaDataset
            from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

            implicit, little = ds.original_encoding
            if implicit:
                tsyntax = ImplicitVRLittleEndian
            else:
                tsyntax = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
            if file_meta is None:
                ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = tsyntax
        return UID(tsyntax)

    @staticmethod
    def _n_frames(ds: Any) -> int:
        try:
            return max(1, int(ds.get("NumberOfFrames") or 1))
        except (TypeError, ValueError):
            return 1

    @staticmethod
    def _decode(path: Path, ds: Any, tsyntax: Any, index: int | None) -> np.ndarray:
        from pydicom.pixels import get_decoder, pixel_array

        name = f"{tsyntax.name} ({tsyntax})" if tsyntax.is_transfer_syntax else str(tsyntax)
        if tsyntax.is_compressed:
            try:
                decoder = get_decoder(tsyntax)
            except NotImplementedError:
                raise ImageReadError(path, f"unsupported DICOM transfer syntax {name}") from None
            if not decoder.is_available:
                raise ImageReadError(
                    path,
                    f"DICOM compressed with {name}, but no codec for it is installed "
                    "(install pylibjpeg with pylibjpeg-libjpeg/-openjpeg, pyjpegls, or python-gdcm)",
                )
        try:
            return pixel_array(ds, index=index)
        except Exception as exc:  # decoders raise many types; none may escape unwrapped
            text = str(exc)
            if "less than expected" in text or "ends early" in text or isinstance(exc, EOFError):
                raise ImageReadError(path, "truncated DICOM (pixel data ends early)") from None
            if "missing dependencies" in text or "plugins are missing" in text:
                raise ImageReadError(
                    path, f"DICOM compressed with {name}, but no codec for it is installed"
                ) from None
            raise ImageReadError(
                path, f"cannot decode DICOM pixel data ({name}: {type(exc).__name__})"
            ) from None

    @staticmethod
    def _to_unit(
        arr: np.ndarray, ds: Any, window: tuple[float, float] | None, path: Path
    ) -> tuple[np.ndarray, str]:
        from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi

        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
        try:
            if photometric == "PALETTE COLOR":
                rgb = apply_color_lut(arr, ds)
                scale = 65535.0 if rgb.dtype == np.uint16 else 255.0
                raw = rgb.astype(np.float32)
                return (_apply_window(raw, window) if window is not None else raw / scale), "PALETTE"
            if arr.ndim == 3:  # RGB / YBR (pydicom converts YBR to RGB)
                bits = int(ds.get("BitsStored", 8) or 8)
                if window is not None:
                    return _apply_window(arr, window), photometric
                return arr.astype(np.float32) / np.float32((1 << bits) - 1), photometric
            values = apply_modality_lut(arr, ds)
            if window is not None:
                out = _apply_window(values, window)
            elif "VOILUTSequence" in ds and len(ds.VOILUTSequence):
                bits = int(ds.VOILUTSequence[0].LUTDescriptor[2]) or 16
                out = np.clip(apply_voi(values, ds, index=0).astype(np.float32) / ((1 << bits) - 1), 0, 1)
            elif "WindowCenter" in ds and "WindowWidth" in ds:
                out = _dicom_window(values, ds)
            else:
                out = _min_max(values)
        except Exception as exc:  # malformed LUT/window elements
            raise ImageReadError(path, f"invalid DICOM LUT or window ({type(exc).__name__})") from None
        if photometric == "MONOCHROME1":
            out = 1.0 - out
        return out.astype(np.float32), photometric


class NiftiReader(ImageReader):
    """NIfTI-1/2 (``.nii``, ``.nii.gz``) through nibabel: one 2-D slice of a 3-D or 4-D volume."""

    formats = ("nifti",)
    requires = "nibabel"

    def __init__(self, percentiles: tuple[float, float] = NIFTI_PERCENTILES) -> None:
        self.percentiles = percentiles

    def read(
        self,
        path: Path,
        *,
        frame: int | None = None,
        axis: int = 2,
        slice_index: int | None = None,
        window: tuple[float, float] | None = None,
    ) -> MedicalImage:
        """Slice ``slice_index`` (default middle) along canonical ``axis``; ``frame``: volume of 4-D data."""
        import nibabel as nib

        img, raw_len = self._load(path)
        shape = tuple(int(s) for s in img.shape)
        if not 2 <= len(shape) <= 4:
            raise ImageReadError(path, f"unsupported {len(shape)}-D NIfTI (expected 2-D, 3-D or 4-D)")
        self._check_length(path, img, raw_len)
        data: Any = img.dataobj
        if len(shape) == 2:
            data, shape = np.asanyarray(data)[..., None], shape + (1,)
        n_frames = shape[3] if len(shape) == 4 else 1
        t = n_frames // 2 if frame is None else frame
        if not 0 <= t < n_frames:
            raise ImageReadError(path, f"frame {t} out of range ({n_frames} volume(s))")
        ornt = nib.io_orientation(img.affine)
        in_axis = int(np.flatnonzero(ornt[:, 0] == axis)[0])
        n = shape[in_axis]
        k = n // 2 if slice_index is None else slice_index
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
        pixels = _apply_window(sl, window) if window is not None else self._percentile_window(sl)
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
        low, high = np.percentile(sl, self.percentiles)
        if high <= low:
            return _min_max(sl)
        return _apply_window(sl, (float(low), float(high)))

    @staticmethod
    def _load(path: Path) -> tuple[Any, int]:
        import nibabel as nib

        with open(path, "rb") as fh:
            raw = fh.read()
        if raw[:2] == b"\x1f\x8b":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError, zlib.error):
                raise ImageReadError(path, "truncated NIfTI (gzip stream ends early)") from None
        magic = _nifti_magic(raw[:544])
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


READERS: dict[str, ImageReader] = {}
for _reader in (PILReader(), DicomReader(), NiftiReader()):
    for _fmt in _reader.formats:
        READERS[_fmt] = _reader


def _unknown_format_problem(path: Path) -> str:
    hint = "NIfTI" if path.name.lower().endswith(".nii.gz") else _EXTENSION_HINT.get(path.suffix.lower())
    if hint:
        return f"not a valid {hint} file (its content does not start like one: corrupt or mislabelled)"
    return "unknown image format (not PNG/JPEG/TIFF/DICOM/NIfTI)"


def _check_path(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    if path.is_dir():
        raise ImageReadError(path, "is a directory, not an image file")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "0-byte file")


def read_image(
    path: str | Path,
    *,
    frame: int | None = None,
    axis: int = 2,
    slice_index: int | None = None,
    window: tuple[float, float] | None = None,
) -> MedicalImage:
    """Read a PNG/JPEG/TIFF/DICOM/NIfTI file into a :class:`MedicalImage`.

    Args:
        path: the file; its format is sniffed from its content.
        frame: frame of a multi-frame DICOM (default middle), volume of a 4-D NIfTI (default
            middle) or page of a multi-page TIFF (default 0).
        axis: NIfTI slicing axis in canonical RAS+ space: 0 sagittal, 1 coronal, 2 axial.
        slice_index: NIfTI slice along ``axis`` (default middle).
        window: (low, high) raw-value range mapped to [0, 1]; overrides the default windowing.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ImageReadError: the file is empty, of an unknown format, corrupt or truncated.
    """
    path = Path(path)
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    if window is not None and not float(window[1]) > float(window[0]):
        raise ValueError(f"window must be (low, high) with high > low, got {window}")
    _check_path(path)
    fmt = sniff_format(path)
    if fmt is None:
        raise ImageReadError(path, _unknown_format_problem(path))
    reader = READERS[fmt]
    if not reader.available():
        raise ImageReadError(path, f"reading {fmt} files needs the optional package '{reader.requires}'")
    return reader.read(path, frame=frame, axis=axis, slice_index=slice_index, window=window)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of the image ``read_image(path)`` would return, from the header when cheap."""
    path = Path(path)
    _check_path(path)
    fmt = sniff_format(path)
    if fmt in ("png", "jpeg", "tiff"):
        try:
            with Image.open(path) as im:
                width, height = im.size
                if im.format == "JPEG" and im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                    width, height = height, width
                return (height, width)
        except (OSError, SyntaxError, ValueError) as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ImageReadError(path, f"corrupt {fmt.upper()} header ({text})") from None
    return read_image(path).meta.size


def _array_to_image(arr: np.ndarray) -> MedicalImage:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"array image must be H x W or H x W x 3, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"array image must be numeric, got dtype {arr.dtype}")
    pixels = _default_scale(arr)
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
        fmt = _PIL_FORMATS.get(x.format or "", "array")
        return _pil_to_image(x, fmt, None)  # type: ignore[arg-type]
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
        raw = read_image(Path(x), window=(0.0, 0.5)).pixels
    mask = (raw > 0).any(axis=2) if raw.ndim == 3 else raw > 0
    if size is not None and tuple(mask.shape) != tuple(size):
        where = "mask array" if isinstance(x, np.ndarray) else str(x)
        raise ValueError(f"{where}: mask size {mask.shape} differs from image size {tuple(size)}")
    return mask.astype(np.uint8)

