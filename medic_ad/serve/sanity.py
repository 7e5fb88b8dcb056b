"""Input sanity checks run before the model sees anything (the MedObvious failure modes).

A vision-language model answers *something* for any tensor it is given: a blank frame, an HTML page
renamed ``.png``, a 1 x 2000 strip, or a CT prior paired with an MR current. These checks refuse such
inputs with one :class:`SanityError` whose ``reason`` is a stable code, so the CLI, the REST API and
the web UI refuse the same inputs with the same words.

Order of checks, cheapest first:

1. :func:`probe` - the file itself: not empty, not over the byte limit, a format we read (magic
   bytes, never the extension or a content type), and the image size *from the header* (PNG IHDR,
   JPEG/TIFF header, DICOM Rows/Columns without the pixel data, NIfTI ``dim``, each read by its
   reader's ``probe`` in :mod:`medic_ad.data.io`) against the pixel limit, the minimum side and the
   aspect-ratio limit - before a single pixel is decoded.
2. :func:`check_image` - the decoded pixels: size and aspect again (a NIfTI slice's size is only
   known after slicing) and the blank check (standard deviation below ``min_std``).
3. :func:`check_pair` - a prior/current pair: modality and orientation metadata must agree.

Messages are built from fixed text and numbers only: never from DICOM element values, so no
patient field can reach a refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medic_ad.data.errors import ImageReadError
from medic_ad.data.io import MedicalImage, gzip_inflates_beyond, probe_header, read_image

__all__ = [
    "REASONS",
    "Limits",
    "Probe",
    "SanityError",
    "check_image",
    "check_pair",
    "load_checked",
    "probe",
]

#: every refusal reason, with the HTTP status the API answers it with
REASONS: dict[str, int] = {
    "empty_file": 422,
    "not_an_image": 415,
    "unreadable": 422,
    "bad_option": 422,
    "too_large": 413,
    "too_many_pixels": 413,
    "too_small": 422,
    "aspect_ratio": 422,
    "blank_image": 422,
    "modality_mismatch": 422,
    "orientation_mismatch": 422,
    "unprocessable": 422,
    "bad_archive": 422,
    "mixed_studies": 422,
}


class SanityError(ValueError):
    """An input refused before the model reads it. ``reason`` is one of :data:`REASONS`.

    ``str(err)`` is one line: ``"<name>: refused (<reason>): <what is wrong>"``.
    """

    def __init__(self, reason: str, message: str, *, name: str | None = None) -> None:
        if reason not in REASONS:
            raise AssertionError(f"unknown sanity reason {reason!r}")
        self.reason = reason
        self.message = " ".join(message.split())  # always one line
        self.name = name
        prefix = f"{name}: " if name else ""
        super().__init__(f"{prefix}refused ({reason}): {self.message}")

    @property
    def status_code(self) -> int:
        return REASONS[self.reason]

    def to_dict(self) -> dict[str, str]:
        return {"error": str(self), "reason": self.reason}


@dataclass(frozen=True)
class Limits:
    """What the checks accept. Defaults suit radiographs, CT/MR slices and their volumes."""

    max_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 50_000_000  # per 2-D image (a 7000 x 7000 radiograph fits)
    max_voxels: int = 256 * 1024 * 1024  # a NIfTI volume (all frames) or a multi-frame DICOM
    max_volume_bytes: int = 1024 * 1024 * 1024  # a NIfTI volume's voxel data once decompressed
    min_side: int = 32
    max_aspect: float = 20.0
    min_std: float = 0.01  # on the [0, 1] scale: below ~2.5 grey levels of 255 is a blank frame
    max_files: int = 2000  # files of one study upload (a zip's members counted)
    max_study_bytes: int = 1024 * 1024 * 1024  # one study upload once unzipped
    # one study upload as sent (all its files, or its zip): a series is hundreds of slices, so it has
    # its own limit rather than max_bytes, which bounds one image (and each file of a study)
    max_study_upload_bytes: int = 512 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_pixels <= 0 or self.min_side < 1 or self.max_aspect < 1:
            raise ValueError("limits must be positive (max_aspect >= 1, min_side >= 1)")
        if self.max_files < 1 or self.max_study_bytes <= 0 or self.max_study_upload_bytes <= 0:
            raise ValueError("study limits must be positive (max_files >= 1)")


@dataclass(frozen=True)
class Probe:
    """What the header says: format, (height, width) of one 2-D image (None for NIfTI) and voxels."""

    format: str
    size: tuple[int, int] | None
    voxels: int


# ------------------------------------------------------------------------------------------ headers


#: how far a gzip stream may inflate beyond the voxel data its header states (header, extensions)
_INFLATE_SLACK = 64 * 1024 * 1024

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom", ".nii", ".nii.gz", ".img", ".ima"}


def _describe_unknown(head: bytes, suffix: str) -> str:
    text = head.lstrip()[:64].lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        what = "an HTML page"
    elif text.startswith(b"<?xml") or text.startswith(b"<"):
        what = "an XML/HTML text file"
    elif head.startswith(b"%PDF"):
        what = "a PDF document"
    elif head.startswith(b"PK\x03\x04"):
        what = "a ZIP archive"
    elif head.startswith((b"GIF87a", b"GIF89a")):
        what = "a GIF image (not a supported format: PNG, JPEG, TIFF, DICOM, NIfTI)"
    elif head.startswith(b"BM"):
        what = "a BMP image (not a supported format: PNG, JPEG, TIFF, DICOM, NIfTI)"
    elif head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        what = "a WebP image (not a supported format: PNG, JPEG, TIFF, DICOM, NIfTI)"
    elif head.startswith(b"\x1f\x8b"):
        what = "a gzip file that is not a NIfTI volume"
    elif head and all(32 <= b < 127 or b in (9, 10, 13) for b in head[:512]):
        what = "a text file"
    else:
        what = "not a PNG, JPEG, TIFF, DICOM or NIfTI file"
    named = f" (named {suffix} but its content is not one)" if suffix in _IMAGE_SUFFIXES else ""
    return f"not an image: {what}{named}"


def probe(path: str | Path, *, limits: Limits = Limits(), name: str | None = None) -> Probe:
    """Check a file from its bytes and header only; nothing is decoded.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        SanityError: empty, too large, not an image, or a header stating an unacceptable size.
    """
    path = Path(path)
    label = name or str(path)
    if not path.exists():
        raise FileNotFoundError(f"{label}: no such file")
    if path.is_dir():
        raise SanityError("not_an_image", "is a folder, not an image file", name=label)
    n_bytes = path.stat().st_size
    if n_bytes == 0:
        raise SanityError("empty_file", "0-byte file", name=label)
    if n_bytes > limits.max_bytes:
        raise SanityError("too_large", f"{n_bytes} bytes is over the {limits.max_bytes}-byte upload limit",
                          name=label)
    info = probe_header(path)
    if info is None:
        with open(path, "rb") as fh:
            head = fh.read(544)
        suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix.lower()
        raise SanityError("not_an_image", _describe_unknown(head, suffix), name=label)
    if info.over_decoder_limit:
        raise SanityError("too_many_pixels", "the header states an image far over the pixel limit", name=label)
    if info.compressed and 0 < info.voxels <= limits.max_voxels and info.data_bytes <= limits.max_volume_bytes:
        # a gzip bomb: a small upload that inflates far beyond what the header announces
        if gzip_inflates_beyond(path, info.data_bytes + _INFLATE_SLACK):
            raise SanityError("too_many_pixels", "NIfTI data inflates far beyond the size its header states "
                                                 "(a decompression bomb)", name=label)
    if info.data_bytes > limits.max_volume_bytes:
        raise SanityError("too_many_pixels", f"the header states {info.data_bytes} bytes of voxel data, over "
                                             f"the limit of {limits.max_volume_bytes}", name=label)
    if info.size is not None:
        _check_size(info.size, limits, label, stated=True)
    if info.voxels > limits.max_voxels:
        raise SanityError("too_many_pixels", f"the header states {info.voxels} voxels, over the limit of "
                                             f"{limits.max_voxels}", name=label)
    return Probe(format=info.format, size=info.size, voxels=info.voxels)


def _check_size(size: tuple[int, int], limits: Limits, label: str, *, stated: bool) -> None:
    height, width = size
    what = "the header states" if stated else "the image is"
    if height * width > limits.max_pixels:
        raise SanityError("too_many_pixels", f"{what} {width} x {height} = {height * width} pixels, over the "
                                             f"limit of {limits.max_pixels}", name=label)
    short, long_ = sorted((height, width))
    if short == 0 or long_ / short > limits.max_aspect:
        ratio = "inf" if short == 0 else f"{long_ / short:.0f}:1"
        raise SanityError("aspect_ratio", f"{what} {width} x {height} pixels, an aspect ratio of {ratio} "
                                          f"(the limit is {limits.max_aspect:g}:1): not a study image", name=label)
    if short < limits.min_side:
        raise SanityError("too_small", f"{what} {width} x {height} pixels, smaller than {limits.min_side} px "
                                       "on a side", name=label)


# ------------------------------------------------------------------------------------------ pixels


def check_image(image: MedicalImage, *, limits: Limits = Limits(), name: str | None = None) -> MedicalImage:
    """Refuse decoded pixels that are too small, too elongated, too large or blank."""
    label = name or "image"
    height, width = image.pixels.shape[:2]
    _check_size((height, width), limits, label, stated=False)
    std = float(image.pixels.std())
    if not np.isfinite(std) or std < limits.min_std:
        raise SanityError("blank_image", f"pixel standard deviation {std:.4f} is below {limits.min_std:g}: "
                                         "a constant or blank image", name=label)
    return image


def check_pair(prior: MedicalImage, current: MedicalImage, *, names: tuple[str, str] = ("prior", "current")) -> None:
    """Refuse a prior/current pair whose modality or orientation metadata disagree."""
    label = f"{names[0]} / {names[1]}"
    a, b = prior.meta, current.meta
    if a.modality and b.modality and a.modality.upper() != b.modality.upper():
        raise SanityError("modality_mismatch", f"the prior is {_code(a.modality)} and the current is "
                                               f"{_code(b.modality)}: a comparison needs two studies of one "
                                               "modality", name=label)
    if a.orientation and b.orientation and a.orientation != b.orientation:
        raise SanityError("orientation_mismatch", f"the prior is oriented {_code(a.orientation)} and the current "
                                                  f"{_code(b.orientation)}: a comparison needs the same view",
                          name=label)


def _code(value: str) -> str:
    """A metadata code for a message: short, alphanumeric (Modality/orientation are code strings)."""
    cleaned = "".join(ch for ch in str(value) if ch.isalnum() or ch in "_-")[:16]
    return cleaned or "unknown"


# ------------------------------------------------------------------------------------------ all three


def _scrub(problem: str, path: Path) -> str:
    """A reader's message without the file's path (for uploads that is a server temp file)."""
    if "cannot identify image file" in problem:
        problem = problem.split("(", 1)[0].strip() + " (no decodable image header)"
    for text in (f"'{path}'", str(path), f"'{path.name}'", path.name):
        problem = problem.replace(text, "the file")
    return problem


def load_checked(
    path: str | Path,
    *,
    limits: Limits = Limits(),
    name: str | None = None,
    frame: int | None = None,
    slice_index: int | None = None,
    axis: int = 2,
) -> MedicalImage:
    """:func:`probe`, decode with :func:`~medic_ad.data.io.read_image`, then :func:`check_image`.

    ``name`` is what messages call the input (a path for the CLI, a form field for the API); the
    reader's own message is re-worded under that name so a server-side temp path never leaks.
    """
    path = Path(path)
    label = name or str(path)
    probe(path, limits=limits, name=label)
    try:
        image = read_image(path, frame=frame, slice_index=slice_index, axis=axis)
    except ImageReadError as exc:
        reason = "bad_option" if "out of range" in exc.problem else "unreadable"
        raise SanityError(reason, _scrub(exc.problem, path), name=label) from None
    except (OSError, MemoryError) as exc:
        raise SanityError("unreadable", f"cannot read the file ({type(exc).__name__})", name=label) from None
    return check_image(image, limits=limits, name=label)
