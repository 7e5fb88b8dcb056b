"""Builders of small synthetic studies: DICOM CT series, a multi-frame CT, a 3-D NIfTI, a corrupt file.

Plain functions, importable from any test folder: ``sys.path.insert(0, "tests/studies")`` (pytest does
it for the tests here) then ``from study_builders import write_ct_series``; ``conftest.py`` beside
this file wraps them in fixtures. Every series is made from pydicom's ``CT_small.dcm`` header with new UIDs, 64 × 64 pixels stored as HU + 1024
(background 0 HU, a bright 1000 HU "lesion" filling the left half on the chosen slices), a CT window
40/400 in the header, slice positions 5 mm apart along z, and InstanceNumber shuffled against the
positions, so ordering by position and ordering by number disagree. File names are random, so
grouping cannot lean on them. With the dummy model (score = mean grey) a lesion slice scores ≈ 0.7
and a clear one ≈ 0.4.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

SIZE = 64
SPACING_MM = 5.0
LESION_HU = 1000
#: the patient fields a PHI-bearing series carries; tests assert none of them ever leaves a DICOM file
PHI = {"PatientName": "ZQXSECRET^NAME", "PatientID": "PIDZQX4711", "PatientBirthDate": "19010203",
       "AccessionNumber": "ACCZQX0815"}


@dataclass
class BuiltSeries:
    """What a builder wrote: the UIDs, the files and SOP UIDs in position order (inferior first), the lesion
    slices' positions in that order."""

    study_uid: str
    series_uid: str
    files: list[Path] = field(default_factory=list)
    sop_uids: list[str] = field(default_factory=list)
    lesion: tuple[int, ...] = ()

    @property
    def n(self) -> int:
        return len(self.sop_uids)


def _template():
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm", download=False)
    if path is None:
        pytest.skip("CT_small.dcm is not installed (pydicom-data)")
    return pydicom.dcmread(path)


def slice_pixels(lesion: bool, seed: int = 0) -> np.ndarray:
    """Stored values (HU + 1024, int16): 0 HU with a little noise, the left half at 1000 HU on a lesion slice."""
    rng = np.random.default_rng(seed)
    hu = rng.normal(0.0, 5.0, (SIZE, SIZE))
    if lesion:
        hu[:, : SIZE // 2] = LESION_HU
    return (hu + 1024).astype(np.int16)


def _base(study_uid: str, series_uid: str, *, patient_id: str, study_date: str, phi: bool):
    from pydicom.uid import ExplicitVRLittleEndian

    ds = _template()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.Rows = ds.Columns = SIZE
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.StudyDate = study_date
    ds.PatientID = patient_id
    if phi:
        for k, v in PHI.items():
            setattr(ds, k, v)
    else:
        ds.PatientName, ds.PatientBirthDate, ds.AccessionNumber = "Anon", "", ""
    return ds


def write_ct_series(folder: Path, *, n: int = 6, lesion: tuple[int, ...] = (3,), study_uid: str | None = None,
                    patient_id: str = "P1", study_date: str = "20240101", seed: int = 0, phi: bool = False,
                    positions: bool = True, z0: float = -100.0) -> BuiltSeries:
    """``n`` single-frame CT slices in ``folder`` under random names; ``lesion``: positions (inferior first)
    with the bright half. ``positions=False`` drops ImagePositionPatient (ordering falls back to
    InstanceNumber, which then follows position order)."""
    from pydicom.uid import generate_uid

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    built = BuiltSeries(study_uid or generate_uid(), generate_uid(), lesion=tuple(lesion))
    numbers = list(range(1, n + 1))
    if positions:
        rng.shuffle(numbers)  # InstanceNumber disagrees with position order
    for k in range(n):
        ds = _base(built.study_uid, built.series_uid, patient_id=patient_id, study_date=study_date, phi=phi)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = numbers[k]
        if positions:
            ds.ImagePositionPatient = [-16.0, -16.0, z0 + SPACING_MM * k]
        else:
            del ds.ImagePositionPatient
        ds.SliceLocation = z0 + SPACING_MM * k
        ds.PixelData = slice_pixels(k in lesion, seed=seed * 100 + k).tobytes()
        path = folder / f"{rng.getrandbits(48):012x}.dcm"
        ds.save_as(path, enforce_file_format=True)
        built.files.append(path)
        built.sop_uids.append(str(ds.SOPInstanceUID))
    return built


def write_multiframe_ct(path: Path, *, n_frames: int = 5, lesion: tuple[int, ...] = (1,),
                        patient_id: str = "P9", study_date: str = "20240101") -> BuiltSeries:
    """One multi-frame CT file (frames in position order, no per-frame functional groups)."""
    from pydicom.uid import generate_uid

    built = BuiltSeries(generate_uid(), generate_uid(), lesion=tuple(lesion))
    ds = _base(built.study_uid, built.series_uid, patient_id=patient_id, study_date=study_date, phi=False)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.NumberOfFrames = n_frames
    ds.InstanceNumber = 1
    ds.PixelData = b"".join(slice_pixels(k in lesion, seed=k).tobytes() for k in range(n_frames))
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    built.files.append(path)
    built.sop_uids = [str(ds.SOPInstanceUID)] * n_frames
    return built


def write_nifti_volume(path: Path, *, n: int = 5, lesion: tuple[int, ...] = (2,), flip_z: bool = False) -> list[int]:
    """A 3-D NIfTI in HU (x, y, z); ``lesion``: the axial slices (inferior first) with the bright half.
    ``flip_z`` stores z running inferior-wards (the reader reorients). Returns the lesion slices."""
    import nibabel as nib

    vol = np.stack([slice_pixels(k in lesion, seed=k).astype(np.float32) - 1024 for k in range(n)], axis=-1)
    affine = np.diag([0.5, 0.5, SPACING_MM, 1.0])
    if flip_z:
        vol = vol[..., ::-1]
        affine[2, 2], affine[2, 3] = -SPACING_MM, SPACING_MM * (n - 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(vol), affine), str(path))
    return list(lesion)


def corrupt_dicom(path: Path) -> Path:
    """A file that starts like DICOM (preamble + DICM) and then is garbage."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff" + b"\x8f" * 64)
    return path
