"""NIfTI reader on volumes written with nibabel: orientation, slicing, windowing, 4-D."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medic_ad.data.errors import ImageReadError
from medic_ad.data.io import read_image, sniff_format

nib = pytest.importorskip("nibabel")


# ------------------------------------------------------------------ NIfTI


def _volume(shape: tuple[int, ...] = (6, 8, 5)) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)


def test_nifti_default_is_middle_axial_slice_in_radiological_view(tmp_path: Path) -> None:
    data = np.zeros((6, 8, 5), dtype=np.float32)
    data[5, 7, 2] = 100.0  # RAS+: x grows to the patient's right, y to anterior: right-anterior corner
    data[0, 0, 2] = 50.0
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 3.0, 4.0, 1.0])), tmp_path / "v.nii")
    img = read_image(tmp_path / "v.nii", window=(0, 100))
    assert img.meta.source_format == "nifti" and img.meta.orientation == "RAS"
    assert img.pixels.shape == (8, 6)  # rows: anterior -> posterior; columns: patient right -> left
    assert img.pixels[0, 0] == 1.0  # the right-anterior voxel shows top-left
    assert img.pixels[-1, -1] == 0.5
    assert img.meta.spacing == (3.0, 2.0)


def test_nifti_orientation_does_not_change_the_view(tmp_path: Path) -> None:
    data = _volume()
    ras = np.diag([2.0, 3.0, 4.0, 1.0])
    nib.save(nib.Nifti1Image(data, ras), tmp_path / "ras.nii.gz")
    lps = ras.copy()
    lps[0, 0], lps[1, 1] = -2.0, -3.0
    lps[0, 3], lps[1, 3] = 2.0 * 5, 3.0 * 7  # same world extent, axes flipped
    nib.save(nib.Nifti1Image(data[::-1, ::-1, :].copy(), lps), tmp_path / "lps.nii")
    for axis in (0, 1, 2):
        a = read_image(tmp_path / "ras.nii.gz", axis=axis, slice_index=1)
        b = read_image(tmp_path / "lps.nii", axis=axis, slice_index=1)
        np.testing.assert_array_equal(a.pixels, b.pixels)
    assert read_image(tmp_path / "lps.nii").meta.orientation == "LPS"
    assert read_image(tmp_path / "ras.nii.gz", axis=0).pixels.shape == (5, 8)
    assert read_image(tmp_path / "ras.nii.gz", axis=1).pixels.shape == (5, 6)


def test_nifti_percentile_window_and_4d_frames(tmp_path: Path) -> None:
    data = np.zeros((40, 40, 3, 4), dtype=np.float32)
    data[..., 1, :] = np.linspace(0, 1, 1600).reshape(40, 40)[..., None]
    data[0, 0, 1, :] = 1e6  # one outlier does not crush the rest
    data[..., 3] += 5.0
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "t.nii.gz")
    img = read_image(tmp_path / "t.nii.gz")
    assert img.meta.n_frames == 4 and img.pixels.shape == (40, 40)
    assert np.median(img.pixels) == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ImageReadError, match="slice 3 out of range"):
        read_image(tmp_path / "t.nii.gz", slice_index=3)
    with pytest.raises(ImageReadError, match="frame 4 out of range"):
        read_image(tmp_path / "t.nii.gz", frame=4)


def test_nifti_gz_sniffed_without_extension(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(_volume(), np.eye(4)), tmp_path / "v.nii.gz")
    (tmp_path / "v.nii.gz").rename(tmp_path / "volume.bin")
    assert sniff_format(tmp_path / "volume.bin") == "nifti"
    assert read_image(tmp_path / "volume.bin").pixels.shape == (8, 6)
