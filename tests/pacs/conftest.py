"""A real PACS for the tests: a private Orthanc with DICOMweb (see orthanc.py), once per session.

``orthanc`` skips, saying what to install, when Debian's orthanc or orthanc-dicomweb is missing.
``dicomweb_url`` is what ``medic-ad predict --dicomweb`` takes; ``upload_study`` puts a study there.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# the CT series builders are shared with the DICOM-out tests
sys.path.insert(0, str(HERE.parent / "dicom_out"))

from orthanc import Orthanc, find_orthanc  # noqa: E402

from medic_ad.pacs import DicomWebClient  # noqa: E402


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    binary, plugin, why = find_orthanc()
    if why:
        pytest.skip(why)
    server = Orthanc(binary, plugin, tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dicomweb_url(orthanc) -> str:
    return orthanc.dicomweb_url


@pytest.fixture(scope="session")
def upload_study(dicomweb_url):
    """``upload_study(datasets)`` stores them with STOW-RS and returns their StudyInstanceUID."""
    client = DicomWebClient(dicomweb_url)

    def upload(datasets) -> str:
        client.store(list(datasets))
        return str(datasets[0].StudyInstanceUID)

    return upload
