"""Small CT series for the DICOM-out and PACS tests: copies of pydicom-data's CT_small.dcm.

Each copy gets new UIDs and an ImagePositionPatient one slice thickness further along z, and the
patient fields of :data:`PHI` (so the privacy tests have values to look for).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

#: patient fields no log, stream or exception message may carry
PHI = {"PatientName": "Doe^Jane", "PatientID": "MRN12345", "PatientBirthDate": "19610417",
       "AccessionNumber": "ACC98765"}

#: the model identity the written objects name
MODEL = {"model_name": "medic-ad-tiny", "model_version": "0.1.0",
         "checkpoint_digest": "sha256:" + "0123456789abcdef" * 4}


def make_ct_series(template: Path, n: int, *, study_date: str = "20240105", study_uid: str | None = None,
                   modality: str = "CT") -> list[pydicom.Dataset]:
    """``n`` slices of one new series in one (new unless given) study, ordered by z."""
    base = pydicom.dcmread(template)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    x, y, z = (float(v) for v in base.ImagePositionPatient)
    step = float(base.get("SliceThickness", 5.0))
    slices = []
    for i in range(n):
        ds = copy.deepcopy(base)
        for key, value in PHI.items():
            setattr(ds, key, value)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
        ds.Modality = modality
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [x, y, z + i * step]
        ds.SliceLocation = z + i * step
        slices.append(ds)
    return slices


def write_series(slices: list[pydicom.Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in slices:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def heatmaps_for(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """``n`` smooth maps in [0, 1] with a peak off-centre, float32, at the model's (small) resolution."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    rng = np.random.default_rng(seed)
    maps = [np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.05) for cy, cx in rng.uniform(0.2, 0.8, (n, 2))]
    return np.stack(maps).astype(np.float32)


def make_study_pair(template: Path, n: int = 3) -> tuple[list[pydicom.Dataset], list[pydicom.Dataset]]:
    """A prior and a current CT study of the same patient, a year apart."""
    return make_ct_series(template, n, study_date="20230110"), make_ct_series(template, n, study_date="20240105")
