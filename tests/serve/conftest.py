"""Fixtures of the serving tests: the bad-input corpus, real inputs, a service on the tiny checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_helpers import SECRET_ID, SECRET_NAME  # noqa: E402


@pytest.fixture(scope="session")
def br35h(shared_data) -> list[Path]:
    files = sorted((shared_data / "br35h" / "yes").glob("*.png"))[:3]
    if not files:
        pytest.skip("no br35h/yes images")
    return files


@pytest.fixture(scope="session")
def cxr_pair(shared_data) -> tuple[Path, Path]:
    import csv

    with open(shared_data / "cxr_pairs" / "pairs.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    images = shared_data / "cxr_pairs" / "images"
    return images / Path(row["prior"]).name, images / Path(row["current"]).name


@pytest.fixture(scope="session")
def service(tiny_checkpoint, tmp_path_factory):
    from medic_ad.serve.service import Service

    return Service.from_checkpoint(tiny_checkpoint, tmp_dir=tmp_path_factory.mktemp("service_tmp"))


@pytest.fixture
def private_dicom(tmp_path, dicom_file) -> Path:
    """CT_small with the patient fields of a real patient: "Doe^Jane" / "MRN12345"."""
    import pydicom

    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    ds.PatientName = SECRET_NAME
    ds.PatientID = SECRET_ID
    ds.OtherPatientIDs = SECRET_ID
    ds.PatientBirthDate = "19600101"
    path = tmp_path / "inputs" / "study.dcm"
    path.parent.mkdir()
    ds.save_as(path)
    assert SECRET_NAME.encode() in path.read_bytes()
    return path
