"""DICOM reader on real pydicom-data files and on files written with pydicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medic_ad.data.errors import ImageReadError
from medic_ad.data.io import read_image

pydicom = pytest.importorskip("pydicom")


def dicom_file(name: str) -> Path:
    """A real DICOM file shipped with pydicom or by pydicom-data; never downloaded."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} not available offline (install pydicom-data)")
    return Path(path)


# ------------------------------------------------------------------ DICOM, real files


def test_dicom_ct_small() -> None:
    img = read_image(dicom_file("CT_small.dcm"))
    assert img.meta.modality == "CT" and img.meta.source_format == "dicom"
    assert img.pixels.shape == (128, 128) and img.meta.size == (128, 128)
    assert img.meta.spacing == pytest.approx((0.661468, 0.661468))
    assert img.meta.orientation == "LPS" and img.meta.n_frames == 1
    assert 0.0 <= img.pixels.min() < img.pixels.max() <= 1.0


def test_dicom_mr_window_centre_width_applied() -> None:
    path = dicom_file("MR_small.dcm")
    ds = pydicom.dcmread(path)
    raw = ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    expected = np.clip((raw - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    img = read_image(path)
    assert img.meta.modality == "MR"
    np.testing.assert_allclose(img.pixels, expected, atol=1e-5)


def test_dicom_multiframe_default_middle_and_choice() -> None:
    path = dicom_file("emri_small.dcm")
    middle = read_image(path)
    assert middle.meta.n_frames == 10 and middle.pixels.shape == (64, 64)
    np.testing.assert_array_equal(middle.pixels, read_image(path, frame=5).pixels)
    assert not np.array_equal(read_image(path, frame=0).pixels, middle.pixels)
    with pytest.raises(ImageReadError, match="frame 10 out of range"):
        read_image(path, frame=10)


def test_dicom_rgb_ultrasound_and_palette() -> None:
    us = read_image(dicom_file("US1_UNCR.dcm"))
    assert us.meta.modality == "US" and us.pixels.shape == (480, 640, 3)
    palette = read_image(dicom_file("OBXXXX1A.dcm"))
    assert palette.meta.photometric == "PALETTE" and palette.pixels.shape == (600, 800, 3)
    ybr = read_image(dicom_file("SC_ybr_full_uncompressed.dcm"))
    assert ybr.pixels.shape == (100, 100, 3)


def test_dicom_monochrome1_is_inverted() -> None:
    path = dicom_file("RG3_UNCR.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    raw = ds.pixel_array.astype(np.float64)
    low, high = float(np.percentile(raw, 5)), float(np.percentile(raw, 95))
    img = read_image(path, window=(low, high))
    assert img.meta.photometric == "MONOCHROME1" and img.meta.modality == "CR"
    np.testing.assert_allclose(img.pixels, 1.0 - np.clip((raw - low) / (high - low), 0, 1), atol=1e-5)


def test_dicom_voi_lut_sequence() -> None:
    from pydicom.pixels import apply_voi

    path = dicom_file("vlut_04.dcm")
    ds = pydicom.dcmread(path)
    bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
    expected = np.clip(apply_voi(ds.pixel_array, ds).astype(np.float64) / (2**bits - 1), 0, 1)
    np.testing.assert_allclose(read_image(path).pixels, expected, atol=1e-5)


def test_dicom_jpeg_baseline_decodes_with_pillow() -> None:
    img = read_image(dicom_file("SC_rgb_jpeg_dcmtk.dcm"))
    assert img.pixels.shape == (100, 100, 3)


def test_dicom_missing_codec_is_a_clear_error() -> None:
    from pydicom.pixels import get_decoder

    for name in ("MR_small_jpeg_ls_lossless.dcm", "JPEG-LL.dcm", "emri_small_jpeg_ls_lossless.dcm"):
        path = dicom_file(name)
        tsyntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        if not get_decoder(tsyntax).is_available:
            break
    else:
        pytest.skip("every compressed test file has a codec installed here")
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert path.name in message and str(tsyntax) in message and "no codec" in message
    assert "\n" not in message


# ------------------------------------------------------------------ DICOM, written files


def test_dicom_rescale_and_window_from_header(tmp_path: Path, make_dicom) -> None:
    raw = np.array([[0, 1000, 1064, 1500]], dtype=np.uint16)
    path = make_dicom(
        tmp_path / "ct.dcm", raw, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400
    )
    hu = raw.astype(np.float64) - 1024
    expected = np.clip((hu - 39.5) / 399 + 0.5, 0, 1)
    np.testing.assert_allclose(read_image(path).pixels, expected, atol=1e-6)
    np.testing.assert_allclose(read_image(path, window=(-24, 476)).pixels, np.clip((hu + 24) / 500, 0, 1), atol=1e-6)


def test_dicom_without_window_is_min_max_and_monochrome1_inverts(tmp_path: Path, make_dicom) -> None:
    raw = np.array([[10, 20, 30]], dtype=np.uint16)
    plain = make_dicom(tmp_path / "m2.dcm", raw)
    np.testing.assert_allclose(read_image(plain).pixels, [[0.0, 0.5, 1.0]])
    inverted = make_dicom(tmp_path / "m1.dcm", raw, PhotometricInterpretation="MONOCHROME1")
    np.testing.assert_allclose(read_image(inverted).pixels, [[1.0, 0.5, 0.0]])


def test_dicom_written_multiframe_and_rgb(tmp_path: Path, make_dicom) -> None:
    frames = np.stack([np.full((4, 6), v, dtype=np.uint8) for v in (0, 100, 200)])
    frames[:, 0, 0] = 255
    path = make_dicom(tmp_path / "mf.dcm", frames)
    assert read_image(path).meta.n_frames == 3
    assert read_image(path, frame=2, window=(0, 255)).pixels[1, 1] == pytest.approx(200 / 255)
    assert read_image(path, window=(0, 255)).pixels[1, 1] == pytest.approx(100 / 255)
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[..., 2] = 255
    img = read_image(make_dicom(tmp_path / "rgb.dcm", rgb))
    np.testing.assert_allclose(img.pixels[0, 0], [0.0, 0.0, 1.0])
