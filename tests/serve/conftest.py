"""Fixtures of the serving tests: the bad-input corpus, real inputs, a service on the tiny checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_helpers import SECRET_ID, SECRET_NAME  # noqa: E402

# the study builders (DICOM CT series, NIfTI volumes) are shared with tests/studies
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies"))


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


@pytest.fixture(scope="session")
def ct_study(tmp_path_factory):
    """A 5-slice CT series carrying a patient's fields (``PHI``), its files and a zip of them whose member
    names carry the patient's name too: ``(built, zip_path)``."""
    import zipfile

    from study_builders import PHI, write_ct_series

    folder = tmp_path_factory.mktemp("ct_study")
    built = write_ct_series(folder / "files", n=5, lesion=(2,), phi=True, seed=7)
    zip_path = folder / "series.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        for f in built.files:
            z.write(f, f"{PHI['PatientName']}/{f.name}")
    return built, zip_path
