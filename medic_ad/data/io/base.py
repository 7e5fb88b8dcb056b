"""The reader interface, the options every read takes, the header probe and the reader registry.

A reader handles one or more formats. It can tell its formats from a file's first bytes
(:meth:`ImageReader.sniff`), say what the header states without decoding pixels
(:meth:`ImageReader.probe`) and decode one 2-D image (:meth:`ImageReader.read`). Readers are asked in
the order they were registered; the first whose ``sniff`` recognises the bytes reads the file.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from medic_ad.data.io.image import MedicalImage, SourceFormat

__all__ = [
    "READERS",
    "HeaderInfo",
    "ImageReader",
    "ReadOptions",
    "extension_hint",
    "reader_for",
    "register_reader",
    "sniff_format",
]

#: bytes sniffing looks at: enough for a NIfTI-2 header (540) and a DICOM preamble plus magic
SNIFF_BYTES = 544


@dataclass(frozen=True)
class ReadOptions:
    """What to take from a file and how to scale it; each reader uses the fields its format has.

    ``frame``: frame of a multi-frame DICOM (default middle), volume of a 4-D NIfTI (default
    middle) or page of a multi-page TIFF (default 0). ``axis``: NIfTI slicing axis in canonical
    RAS+ space (0 sagittal, 1 coronal, 2 axial). ``slice_index``: NIfTI slice along ``axis``
    (default middle). ``window``: (low, high) raw-value range mapped to [0, 1], overriding the
    format's default scaling.
    """

    frame: int | None = None
    axis: int = 2
    slice_index: int | None = None
    window: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {self.axis}")
        if self.window is not None and not float(self.window[1]) > float(self.window[0]):
            raise ValueError(f"window must be (low, high) with high > low, got {self.window}")


@dataclass(frozen=True)
class HeaderInfo:
    """What a file's header states, read without decoding pixels.

    ``size`` is (rows, columns) of one stored 2-D image, None when the header does not state it
    (a NIfTI volume: its 2-D size depends on the slicing) or cannot be parsed, in which case the
    reader's own ``read`` names the problem. ``frames`` is the number of frames (DICOM) or volumes
    (4-D NIfTI) the header states; a multi-page TIFF counts 1, its page count is not in one place.
    ``voxels`` counts every stored sample the header announces (all frames, the whole volume; 0
    when unknown); ``bytes_per_voxel`` is known for NIfTI only. ``compressed`` marks a gzip stream, whose inflated size the header does not bound.
    ``over_decoder_limit`` marks a header so large that the decoder itself refuses to open it.
    """

    format: SourceFormat
    size: tuple[int, int] | None = None
    frames: int = 1
    voxels: int = 0
    bytes_per_voxel: int = 0
    compressed: bool = False
    over_decoder_limit: bool = False

    @property
    def data_bytes(self) -> int:
        """Bytes of sample data the header announces (0 when the sample size is unknown)."""
        return self.voxels * self.bytes_per_voxel


class ImageReader(ABC):
    """One or more formats: recognise them, probe their headers, decode them to a MedicalImage.

    Subclasses turn every failure of the library they wrap into one ``ImageReadError`` naming the
    file, built from fixed text only, so no patient field and no library traceback reaches a user.
    """

    #: the formats this reader reads
    formats: tuple[SourceFormat, ...] = ()
    #: the optional package it imports on first use
    requires: str | None = None
    #: lower-cased file suffix -> format name, used only to word the error for a mislabelled file
    extensions: dict[str, str] = {}

    def available(self) -> bool:
        """Whether the optional package this reader needs is importable."""
        return self.requires is None or importlib.util.find_spec(self.requires) is not None

    @abstractmethod
    def sniff(self, head: bytes, path: Path) -> SourceFormat | None:
        """The format of a file starting with ``head`` (its first bytes), if it is one of ours."""

    @abstractmethod
    def probe(self, path: Path) -> HeaderInfo:
        """What the header of ``path`` states; never decodes pixels, never raises for a bad header."""

    @abstractmethod
    def read(self, path: Path, options: ReadOptions) -> MedicalImage:
        """Decode one 2-D image of ``path``; raise ``ImageReadError`` on any failure."""

    def image_size(self, path: Path) -> tuple[int, int]:
        """(height, width) of the image ``read`` returns with default options."""
        return self.read(path, ReadOptions()).meta.size


_ORDER: list[ImageReader] = []
#: format -> the reader registered for it
READERS: dict[str, ImageReader] = {}


def register_reader(reader: ImageReader) -> ImageReader:
    """Add ``reader`` to the registry; later readers are sniffed after earlier ones."""
    _ORDER.append(reader)
    for fmt in reader.formats:
        READERS[fmt] = reader
    return reader


def reader_for(fmt: str) -> ImageReader:
    """The reader registered for format ``fmt``."""
    return READERS[fmt]


def sniff_format(path: str | Path) -> SourceFormat | None:
    """The image format of ``path`` from its magic bytes, or None when it is none we read."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    for reader in _ORDER:
        fmt = reader.sniff(head, path)
        if fmt is not None:
            return fmt
    return None


def extension_hint(path: Path) -> str | None:
    """The format name ``path``'s suffix suggests (``"NIfTI"`` for ``.nii.gz``), or None."""
    name = path.name.lower()
    for reader in _ORDER:
        for suffix, label in reader.extensions.items():
            if name.endswith(suffix) and (suffix.count(".") > 1 or path.suffix.lower() == suffix):
                return label
    return None
