"""Medical image readers behind one interface (after MONAI's ``image_reader.py``).

``read_image`` sniffs the file's magic bytes (never the extension), hands the file to the reader of
that format and returns a :class:`MedicalImage`: float32 pixels in [0, 1], H x W (grey) or
H x W x 3 (colour), plus an :class:`ImageMeta` with *safe* fields only. pydicom and nibabel are
imported the first time a DICOM or NIfTI file is read.

* ``image.py``: :class:`MedicalImage`, :class:`ImageMeta`.
* ``base.py``: :class:`ImageReader` (``sniff``, ``probe``, ``read``), :class:`ReadOptions`,
  :class:`HeaderInfo`, the registry and :func:`sniff_format`.
* ``pil.py``, ``dicom.py``, ``nifti.py``: one reader per library, each with its header probe.
* ``transforms.py``: windowing and intensity scaling, shared by the readers.
* ``load.py``: :func:`read_image`, :func:`image_size`, :func:`probe_header`,
  :func:`load_image_any`, :func:`load_mask`.

``window=(low, high)`` overrides every format's default scaling: raw values (DICOM: after the
modality LUT, e.g. HU) are mapped linearly from [low, high] to [0, 1] and clipped.
:func:`window_from_center_width` turns a radiologist's centre/width into that pair.

Every failure inside PIL, pydicom or nibabel becomes one ``ImageReadError`` naming the file; a
missing file is a ``FileNotFoundError``. Patient fields are never read into meta, logs or errors.
"""

from medic_ad.data.io.base import (
    READERS,
    HeaderInfo,
    ImageReader,
    ReadOptions,
    reader_for,
    register_reader,
    sniff_format,
)
from medic_ad.data.io.dicom import DicomReader
from medic_ad.data.io.image import ImageMeta, MedicalImage, SourceFormat
from medic_ad.data.io.load import image_size, load_image_any, load_mask, probe_header, read_image
from medic_ad.data.io.nifti import NiftiReader, gzip_inflates_beyond
from medic_ad.data.io.pil import PILReader
from medic_ad.data.io.transforms import window_from_center_width

# Sniffing asks readers in this order. DICOM comes first because a DICOM preamble may itself look
# like a TIFF header; the other signatures cannot be mistaken for one another.
for _reader in (DicomReader(), PILReader(), NiftiReader()):
    register_reader(_reader)
del _reader

__all__ = [
    "READERS",
    "DicomReader",
    "HeaderInfo",
    "ImageMeta",
    "ImageReader",
    "MedicalImage",
    "NiftiReader",
    "PILReader",
    "ReadOptions",
    "SourceFormat",
    "gzip_inflates_beyond",
    "image_size",
    "load_image_any",
    "load_mask",
    "probe_header",
    "read_image",
    "reader_for",
    "register_reader",
    "sniff_format",
    "window_from_center_width",
]
