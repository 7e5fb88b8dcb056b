"""PNG, JPEG and TIFF through Pillow, and their header probes.

The probes read sizes without Pillow where the format makes that cheap and exact (PNG IHDR, the
JPEG frame header), so a file stating 30000 x 30000 pixels is measured before any decoder
allocates for it. TIFF keeps its sizes in an IFD anywhere in the file; Pillow's lazy open reads
just that.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from medic_ad.data.errors import ImageReadError
from medic_ad.data.io.base import HeaderInfo, ImageReader, ReadOptions, sniff_format
from medic_ad.data.io.image import ImageMeta, MedicalImage, SourceFormat
from medic_ad.data.io.transforms import collapse_grey, scale_intensity

__all__ = ["PILReader", "pil_to_image"]

#: Pillow's format names for the formats we read (MPO: a JPEG with extra frames, e.g. from cameras)
PIL_FORMATS: dict[str, SourceFormat] = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "TIFF": "tiff"}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders


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
        return collapse_grey(rgb), "PALETTE"
    if mode == "RGBA":
        # composited on black: a transparent region shows as background, not as hidden colour
        rgba = np.asarray(im).astype(np.float32)
        rgb = rgba[..., :3] * (rgba[..., 3:4] / 255.0)
        return collapse_grey(np.round(rgb).astype(np.uint8)), "RGB"
    rgb = np.asarray(im.convert("RGB"))
    return collapse_grey(rgb), "RGB"


def pil_to_image(
    im: Image.Image,
    source_format: SourceFormat,
    window: tuple[float, float] | None,
    n_frames: int = 1,
) -> MedicalImage:
    """A loaded PIL image as a :class:`MedicalImage` (default scaling unless ``window`` is given)."""
    raw, photometric = _pil_raw(im)
    if photometric == "RGB" and raw.ndim == 2:
        photometric = "MONOCHROME2"
    pixels = scale_intensity(raw, window)
    # no spacing: a raster file's dpi is a writer default, not a pixel size
    meta = ImageMeta(
        size=(pixels.shape[0], pixels.shape[1]),
        source_format=source_format,
        photometric=photometric,
        n_frames=n_frames,
    )
    return MedicalImage(pixels, meta)


def _png_size(head: bytes) -> tuple[int, int] | None:
    # signature (8) | length (4) | b"IHDR" | width (4) | height (4)
    if len(head) < 24 or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return height, width


def _jpeg_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from the first SOF marker, walking the segment headers only."""
    with open(path, "rb") as fh:
        if fh.read(2) != b"\xff\xd8":
            return None
        for _ in range(10_000):
            byte = fh.read(1)
            while byte and byte != b"\xff":
                byte = fh.read(1)
            while byte == b"\xff":
                byte = fh.read(1)
            if not byte:
                return None
            marker = byte[0]
            if marker == 0xD9 or marker == 0xDA:  # end of image / start of scan: no frame header seen
                return None
            if 0xD0 <= marker <= 0xD7 or marker == 0x01:
                continue
            raw = fh.read(2)
            if len(raw) < 2:
                return None
            length = struct.unpack(">H", raw)[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                body = fh.read(5)
                if len(body) < 5:
                    return None
                height, width = struct.unpack(">HH", body[1:5])
                return (height, width) if height and width else None
            fh.seek(max(0, length - 2), 1)
    return None


def _tiff_size(path: Path) -> tuple[tuple[int, int] | None, bool]:
    """((height, width) or None, whether Pillow refuses the stated size as a decompression bomb)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(path) as im:  # lazy: reads the header, decodes nothing
                width, height = im.size
        except Image.DecompressionBombError:
            return None, True
        except Exception:  # a header PIL cannot parse: left to read's precise message
            return None, False
    return (height, width), False


def _format_of(path: Path) -> SourceFormat:
    return sniff_format(path) or "png"


class PILReader(ImageReader):
    """PNG, JPEG and TIFF (8/16-bit, grey, RGB, RGBA, palette) through Pillow."""

    formats = ("png", "jpeg", "tiff")
    extensions = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}

    def sniff(self, head: bytes, path: Path) -> SourceFormat | None:
        if head.startswith(_PNG_SIGNATURE):
            return "png"
        if head.startswith(b"\xff\xd8\xff"):
            return "jpeg"
        if head[:4] in _TIFF_MAGIC:
            return "tiff"
        return None

    def probe(self, path: Path) -> HeaderInfo:
        """Stored (height, width) from PNG IHDR, the JPEG frame header or the TIFF IFD."""
        fmt = _format_of(path)
        too_big = False
        if fmt == "png":
            with open(path, "rb") as fh:
                size = _png_size(fh.read(24))
        elif fmt == "jpeg":
            size = _jpeg_size(path)
        else:
            size, too_big = _tiff_size(path)
        voxels = size[0] * size[1] if size is not None else 0
        return HeaderInfo(format=fmt, size=size, voxels=voxels, over_decoder_limit=too_big)

    def read(self, path: Path, options: ReadOptions) -> MedicalImage:
        """Decode one PNG/JPEG/TIFF file; ``frame`` picks a page of a multi-page TIFF (default 0)."""
        fmt = _format_of(path)
        label = fmt.upper()
        frame = options.frame
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
                return pil_to_image(im, fmt, options.window, n_frames)
        except ImageReadError:
            raise
        except Image.DecompressionBombError:
            raise ImageReadError(path, f"{label} too large to decode safely") from None
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError) as exc:
            text = _first_line(exc)
            if "truncated" in text or isinstance(exc, EOFError):
                raise ImageReadError(path, f"truncated {label} (image data ends early)") from None
            raise ImageReadError(path, f"corrupt {label} ({text})") from None

    def image_size(self, path: Path) -> tuple[int, int]:
        """(height, width) from the header, after the JPEG EXIF rotation ``read`` applies."""
        fmt = _format_of(path)
        try:
            with Image.open(path) as im:
                width, height = im.size
                if im.format == "JPEG" and im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                    width, height = height, width
                return (height, width)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageReadError(path, f"corrupt {fmt.upper()} header ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its class name when it has none."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
