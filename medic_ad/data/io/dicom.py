"""DICOM through pydicom (imported on first use), and its header probe.

Reading applies the modality LUT, then the file's VOI LUT or window centre/width (first value),
else min-max; MONOCHROME1 is inverted; palette and YBR data become RGB. pydicom's warnings are
silenced while a file is parsed because they can quote element values, patient fields included.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medic_ad.data.errors import ImageReadError
from medic_ad.data.io.base import HeaderInfo, ImageReader, ReadOptions
from medic_ad.data.io.image import ImageMeta, MedicalImage, SourceFormat
from medic_ad.data.io.transforms import apply_window, divide, min_max, voi_window

__all__ = ["DicomReader"]

_PREAMBLE = 128


def _has_preamble(head: bytes) -> bool:
    return head[_PREAMBLE:_PREAMBLE + 4] == b"DICM"


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


def _dcmread(path: Path, **kwargs: Any) -> Any:
    """``pydicom.dcmread``, forced only for a stream without the preamble (which pydicom rejects)."""
    import pydicom

    with open(path, "rb") as fh:
        preamble = _has_preamble(fh.read(_PREAMBLE + 4))
    return pydicom.dcmread(path, force=not preamble, **kwargs)


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


def _n_frames(ds: Any) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


class DicomReader(ImageReader):
    """DICOM through pydicom: modality LUT, VOI LUT/window, MONOCHROME1, multi-frame, colour."""

    formats = ("dicom",)
    requires = "pydicom"
    extensions = {".dcm": "DICOM", ".dicom": "DICOM"}

    def sniff(self, head: bytes, path: Path) -> SourceFormat | None:
        return "dicom" if _has_preamble(head) or _looks_like_raw_dicom(head) else None

    def probe(self, path: Path) -> HeaderInfo:
        """Rows, Columns and NumberOfFrames, parsed with the pixel data left unread."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = _dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns", "NumberOfFrames"])
                rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
                frames = max(1, int(ds.get("NumberOfFrames") or 1))
            except Exception:  # a header pydicom cannot parse: left to read's precise message
                return HeaderInfo(format="dicom")
        if rows <= 0 or cols <= 0:
            return HeaderInfo(format="dicom")
        return HeaderInfo(format="dicom", size=(rows, cols), frames=frames, voxels=rows * cols * frames)

    def read(self, path: Path, options: ReadOptions) -> MedicalImage:
        """Decode one frame (default: the middle one) of a DICOM file."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = _dcmread(path)
            except Exception as exc:  # any parser failure becomes one clear error
                raise ImageReadError(path, f"corrupt DICOM header ({type(exc).__name__})") from None
            if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
                raise ImageReadError(path, "DICOM has no pixel data (truncated, or not an image object)")
            tsyntax = self._transfer_syntax(ds)
            n_frames = _n_frames(ds)
            index = n_frames // 2 if options.frame is None else options.frame
            if not 0 <= index < n_frames:
                raise ImageReadError(path, f"frame {index} out of range ({n_frames} frame(s))")
            arr = self._decode(path, ds, tsyntax, index if n_frames > 1 else None)
            pixels, photometric = self._to_unit(arr, ds, options.window, path)
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
                if window is not None:
                    return apply_window(rgb, window), "PALETTE"
                return divide(rgb, 65535.0 if rgb.dtype == np.uint16 else 255.0), "PALETTE"
            if arr.ndim == 3:  # RGB / YBR (pydicom converts YBR to RGB)
                bits = int(ds.get("BitsStored", 8) or 8)
                if window is not None:
                    return apply_window(arr, window), photometric
                return divide(arr, (1 << bits) - 1), photometric
            values = apply_modality_lut(arr, ds)
            if window is not None:
                out = apply_window(values, window)
            elif "VOILUTSequence" in ds and len(ds.VOILUTSequence):
                bits = int(ds.VOILUTSequence[0].LUTDescriptor[2]) or 16
                out = np.clip(divide(apply_voi(values, ds, index=0), (1 << bits) - 1), 0, 1)
            elif "WindowCenter" in ds and "WindowWidth" in ds:
                function = str(ds.get("VOILUTFunction", "LINEAR")).strip().upper()
                out = voi_window(values, _dicom_number(ds.WindowCenter), _dicom_number(ds.WindowWidth), function)
            else:
                out = min_max(values)
        except Exception as exc:  # malformed LUT/window elements
            raise ImageReadError(path, f"invalid DICOM LUT or window ({type(exc).__name__})") from None
        if photometric == "MONOCHROME1":
            out = 1.0 - out
        return out.astype(np.float32), photometric
