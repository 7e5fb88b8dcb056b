"""The bad-input corpus: files that every entry point must refuse with a clear reason.

Generated at test time (no binaries in the repository). :func:`write_corpus` writes each file and
returns ``{file name: expected refusal reason}``; :func:`write_bad_pairs` writes prior/current pairs
that are refused as pairs. Reasons are the codes of ``medic_ad.serve.sanity.REASONS``.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image


def _png(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, **kw).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def noise(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A textured uint8 test image (smooth blobs + noise): passes every sanity check."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    base = 110 + 60 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    return np.clip(base + rng.normal(0, 20, shape[:2]), 0, 255).astype(np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and an IHDR chunk (8-bit grey) - no pixel data at all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)


def _jpeg_with_size(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF0 frame header is rewritten to claim ``width`` x ``height``."""
    raw = bytearray(_jpeg(noise((64, 64))))
    i = raw.index(b"\xff\xc0")
    raw[i + 5:i + 9] = struct.pack(">HH", height, width)
    return bytes(raw)


def _corrupt_png() -> bytes:
    raw = bytearray(_png(noise((96, 96), 1)))
    i = raw.index(b"IDAT") + 4
    raw[i + 2:i + 200] = bytes(range(198))  # the zlib stream becomes garbage (and the CRC wrong)
    return bytes(raw)


def _tiff(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="TIFF")
    return buf.getvalue()


def ct_dataset():
    """An empty CT ``pydicom.Dataset`` with its file meta and SOP UIDs (explicit VR little endian):
    the skeleton every test DICOM here and in ``tests/data`` is built on."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    return ds


def _dicom(pixels: np.ndarray | None = None, **elements) -> bytes:
    """A DICOM CT built with pydicom (uint16 pixels); ``pixels=None`` leaves PixelData out."""
    ds = ct_dataset()
    ds.PatientName = "Bad^Input"
    ds.PatientID = "BAD0001"
    shape = pixels.shape if pixels is not None else (64, 64)
    ds.Rows, ds.Columns = shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    for key, value in elements.items():
        setattr(ds, key, value)
    if pixels is not None:
        ds.PixelData = np.ascontiguousarray(pixels.astype(np.uint16)).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _nifti(data: np.ndarray, *, gz: bool = False) -> bytes:
    import nibabel as nib

    img = nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0]))
    raw = img.to_bytes()
    return gzip.compress(raw, mtime=0) if gz else raw


def _nifti_claiming(shape: tuple[int, int, int]) -> bytes:
    """A NIfTI-1 header that claims ``shape`` (int16), followed by only a few voxels."""
    raw = bytearray(_nifti(np.zeros((4, 4, 4), np.int16)))
    struct.pack_into("<8h", raw, 40, 3, *shape, 1, 1, 1, 1)
    return bytes(raw)


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(noise((64, 64))).save(buf, format="GIF")
    return buf.getvalue()


def _bmp() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(noise((64, 64))).save(buf, format="BMP")
    return buf.getvalue()


def _ct_small() -> bytes:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("CT_small.dcm")).read_bytes()


def _dicom_header_only() -> bytes:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(_ct_small()))
    del ds.PixelData
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


HTML = b"<!DOCTYPE html>\n<html><head><title>Study viewer</title></head><body><img src='x.png'></body></html>\n"

#: name -> (bytes factory, expected reason)
CORPUS: dict[str, tuple[Callable[[], bytes], str]] = {
    # nothing / not an image at all
    "empty.png": (lambda: b"", "empty_file"),
    "empty.dcm": (lambda: b"", "empty_file"),
    "empty.nii.gz": (lambda: b"", "empty_file"),
    "page_renamed.png": (lambda: HTML, "not_an_image"),
    "notes.txt": (lambda: b"Patient study notes: follow-up in 6 weeks.\n" * 20, "not_an_image"),
    "text_renamed.dcm": (lambda: b"this is a plain text file, not DICOM\n" * 10, "not_an_image"),
    "text_renamed.nii": (lambda: b"x" * 600, "not_an_image"),
    "random.bin": (lambda: np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes()[1:],
                   "not_an_image"),
    "report_renamed.png": (lambda: b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "not_an_image"),
    "archive_renamed.jpg": (lambda: b"PK\x03\x04" + b"\x00" * 200, "not_an_image"),
    "animation_renamed.png": (_gif, "not_an_image"),
    "bitmap.bmp": (_bmp, "not_an_image"),
    "gzip_not_nifti.nii.gz": (lambda: gzip.compress(b"hello " * 200, mtime=0), "not_an_image"),
    # PNG
    "signature_only.png": (lambda: b"\x89PNG\r\n\x1a\n", "unreadable"),
    "truncated.png": (lambda: _png(noise((128, 128), 2))[:400], "unreadable"),
    "corrupt_idat.png": (_corrupt_png, "unreadable"),
    "no_pixel_data.png": (lambda: png_header_only(64, 64) + _chunk(b"IEND", b""), "unreadable"),
    "huge_header_20000.png": (lambda: png_header_only(20000, 20000), "too_many_pixels"),
    "blank.png": (lambda: _png(np.full((256, 256), 128, np.uint8)), "blank_image"),
    "blank_16bit.png": (lambda: _png(np.full((128, 128), 3000, np.uint16)), "blank_image"),
    "near_blank.png": (lambda: _png((128 + (np.arange(128 * 128) % 2)).astype(np.uint8).reshape(128, 128)),
                       "blank_image"),
    "transparent.png": (lambda: _png(np.dstack([noise((96, 96))] * 3 + [np.zeros((96, 96), np.uint8)])),
                        "blank_image"),
    "strip_1x2000.png": (lambda: _png(noise((1, 2000))), "aspect_ratio"),
    "strip_2000x1.png": (lambda: _png(noise((2000, 1))), "aspect_ratio"),
    "elongated_40x900.png": (lambda: _png(noise((40, 900))), "aspect_ratio"),
    "tiny_16x16.png": (lambda: _png(noise((16, 16))), "too_small"),
    "one_pixel.png": (lambda: _png(np.zeros((1, 1), np.uint8)), "too_small"),
    # JPEG / TIFF
    "truncated.jpg": (lambda: _jpeg(noise((128, 128), 4))[:300], "unreadable"),
    "header_only.jpg": (lambda: b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00", "unreadable"),
    "huge_header_30000.jpg": (lambda: _jpeg_with_size(30000, 30000), "too_many_pixels"),
    "black.jpg": (lambda: _jpeg(np.zeros((128, 128), np.uint8)), "blank_image"),
    "truncated.tif": (lambda: _tiff(noise((128, 128), 5))[:500], "unreadable"),
    # DICOM
    "truncated.dcm": (lambda: _ct_small()[:-20000], "unreadable"),
    "no_pixel_data.dcm": (_dicom_header_only, "unreadable"),
    "preamble_then_junk.dcm": (lambda: b"\x00" * 128 + b"DICM" + b"\xff" * 64, "unreadable"),
    "huge_header_40000.dcm": (lambda: _dicom(None, Rows=40000, Columns=40000), "too_many_pixels"),
    "blank.dcm": (lambda: _dicom(np.full((64, 64), 1000)), "blank_image"),
    "tiny_8x8.dcm": (lambda: _dicom(np.arange(64).reshape(8, 8) * 50), "too_small"),
    # NIfTI
    "truncated.nii": (lambda: _nifti(np.random.default_rng(6).normal(size=(48, 48, 12)).astype(np.float32))[:2000],
                      "unreadable"),
    "truncated.nii.gz": (lambda: _nifti(np.random.default_rng(7).normal(size=(48, 48, 12)).astype(np.float32),
                                        gz=True)[:1500], "unreadable"),
    "huge_header_volume.nii": (lambda: _nifti_claiming((2048, 2048, 2048)), "too_many_pixels"),
    "blank_volume.nii.gz": (lambda: _nifti(np.zeros((64, 64, 8), np.float32), gz=True), "blank_image"),
}


def write_corpus(folder: Path) -> dict[str, str]:
    """Write every corpus file into ``folder``; returns {name: expected reason}."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, (make, reason) in CORPUS.items():
        (folder / name).write_bytes(make())
        expected[name] = reason
    return expected


def write_good(folder: Path, n: int = 2) -> list[Path]:
    """``n`` small textured PNGs that pass every check."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"good_{i}.png"
        p.write_bytes(_png(noise((96 + 8 * i, 112), 10 + i)))
        paths.append(p)
    return paths


def write_bad_pairs(folder: Path) -> dict[str, tuple[Path, Path, str]]:
    """Prior/current pairs refused as pairs: {name: (prior, current, expected reason)}."""
    from pydicom.data import get_testdata_file

    folder.mkdir(parents=True, exist_ok=True)
    ct = Path(get_testdata_file("CT_small.dcm"))
    mr = Path(get_testdata_file("MR_small.dcm"))
    axial = folder / "axial_ct.dcm"
    axial.write_bytes(_dicom(noise((64, 64)).astype(np.uint16) * 10, ImageOrientationPatient=[1, 0, 0, 0, 1, 0]))
    coronal = folder / "coronal_ct.dcm"
    coronal.write_bytes(_dicom(noise((64, 64), 1).astype(np.uint16) * 10,
                               ImageOrientationPatient=[1, 0, 0, 0, 0, -1]))
    good = write_good(folder / "good", 1)[0]
    blank = folder / "blank.png"
    blank.write_bytes(_png(np.zeros((128, 128), np.uint8)))
    html = folder / "page.png"
    html.write_bytes(HTML)
    return {
        "ct_vs_mr": (ct, mr, "modality_mismatch"),
        "axial_vs_coronal": (axial, coronal, "orientation_mismatch"),
        "good_vs_blank": (good, blank, "blank_image"),
        "html_vs_good": (html, good, "not_an_image"),
    }
