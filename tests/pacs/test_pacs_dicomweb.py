"""Against a real Orthanc over DICOMweb: a prior/current CT pair in, found, fetched, results stored back."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pydicom
import pytest
from ct_series import MODEL, PHI, heatmaps_for, make_study_pair

from medic_ad.dicom_out import write_study_objects
from medic_ad.pacs import DicomWebClient, DicomWebError
from medic_ad.studies.result import StudyResult


def _no_phi(text: str) -> bool:
    return not any(v in text for v in PHI.values()) and "Doe" not in text


@pytest.fixture(scope="module")
def pair(dicom_file, upload_study):
    """The prior and current study, uploaded once for this module."""
    prior, current = make_study_pair(dicom_file("CT_small.dcm"))
    upload_study(prior)
    upload_study(current)
    return prior, current


def test_qido_finds_studies_by_uid_date_and_modality(pair, dicomweb_url):
    prior, current = pair
    client = DicomWebClient(dicomweb_url)
    prior_uid, current_uid = prior[0].StudyInstanceUID, current[0].StudyInstanceUID

    (found,) = client.search_studies(study_uid=current_uid)
    assert (found.study_uid, found.study_date, found.modalities) == (current_uid, "20240105", ("CT",))

    in_2024 = {s.study_uid for s in client.search_studies(date_from="2024-01-01", date_to="2024-12-31")}
    assert current_uid in in_2024 and prior_uid not in in_2024
    both = [s.study_uid for s in client.search_studies(date_from="20230101", date_to="20241231", modality="CT")]
    assert both.index(prior_uid) < both.index(current_uid)  # oldest first: prior before current
    assert prior_uid in {s.study_uid for s in client.search_studies(date_to="20231231")}
    assert not {prior_uid, current_uid} & {s.study_uid for s in client.search_studies(modality="MR")}


def test_wado_retrieves_a_study_into_a_folder(pair, dicomweb_url, tmp_path):
    _, current = pair
    client = DicomWebClient(dicomweb_url)
    folder = client.retrieve_study(current[0].StudyInstanceUID, tmp_path)
    assert folder == tmp_path / current[0].StudyInstanceUID
    files = sorted(folder.rglob("*.dcm"))
    assert {f.stem for f in files} == {d.SOPInstanceUID for d in current}
    got = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, files)}
    for ds in current:
        np.testing.assert_array_equal(got[ds.SOPInstanceUID].pixel_array, ds.pixel_array)
    assert [p.name for p in tmp_path.iterdir()] == [current[0].StudyInstanceUID]  # no partial folder left
    assert client.retrieve_study(current[0].StudyInstanceUID, tmp_path) == folder


def test_stored_results_reference_the_right_series(pair, dicomweb_url, tmp_path, caplog, capfd):
    """Fetch the current study, write its SR and heatmap, STOW them back, find them referencing the series."""
    caplog.set_level(logging.DEBUG)
    prior, current = pair
    client = DicomWebClient(dicomweb_url)
    study_uid = current[0].StudyInstanceUID
    folder = client.retrieve_study(study_uid, tmp_path / "in")
    sources = sorted(map(pydicom.dcmread, folder.rglob("*.dcm")), key=lambda d: float(d.ImagePositionPatient[2]))
    result = StudyResult(study_uid=study_uid, series_uid=sources[0].SeriesInstanceUID, n_slices=len(sources),
                         score=0.9, abnormal=True, key_slice_index=1, key_sop_uid=sources[1].SOPInstanceUID,
                         answer="Yes.", slice_indices=[0, 1, 2], slice_scores=[0.2, 0.9, 0.5],
                         heatmaps=heatmaps_for(3))
    written = write_study_objects(result, sources, tmp_path / "out", heatmaps=True, **MODEL)
    assert client.store(written) == 2

    assert client.search_series(study_uid, modality="SR")
    (found,) = client.search_studies(study_uid=study_uid)
    assert set(found.modalities) >= {"CT", "SR"}
    back = client.retrieve_study(study_uid, tmp_path / "back")
    objects = {ds.SOPClassUID.name: ds for ds in map(pydicom.dcmread, back.rglob("*.dcm")) if ds.Modality != "CT"}
    sr, pm = objects["Comprehensive 3D SR Storage"], objects["Parametric Map Storage"]
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == study_uid
    assert [s.SeriesInstanceUID for s in evidence.ReferencedSeriesSequence] == [result.series_uid]
    assert [s.SeriesInstanceUID for s in pm.ReferencedSeriesSequence] == [result.series_uid]
    assert sr.VerificationFlag == "UNVERIFIED"
    # the prior study is untouched: the results went to the study they describe
    assert client.search_series(prior[0].StudyInstanceUID) == [prior[0].SeriesInstanceUID]

    out, err = capfd.readouterr()
    assert _no_phi(out + err + "\n".join(r.getMessage() for r in caplog.records))


def test_errors_are_one_line_with_url_and_status(dicomweb_url, orthanc, tmp_path):
    client = DicomWebClient(dicomweb_url, retries=False)
    with pytest.raises(DicomWebError) as err:
        client.retrieve_study("1.2.3.4.5.6.7.8.9", tmp_path)
    message = str(err.value)
    assert "\n" not in message and dicomweb_url in message and "HTTP 404" in message
    assert not list(tmp_path.iterdir())  # the partial folder is gone

    with pytest.raises(DicomWebError, match="HTTP 404"):
        DicomWebClient(orthanc.url + "/no-such-root", retries=False).search_studies(study_uid="1.2.3")

    closed = f"http://127.0.0.1:{_closed_port()}/dicom-web"
    with pytest.raises(DicomWebError, match="could not be reached") as err:
        DicomWebClient(closed, retries=False, timeout=5).search_studies()
    assert closed in str(err.value) and err.value.__cause__ is None


def test_error_messages_carry_no_phi(pair, dicomweb_url):
    _, current = pair
    broken = copy.deepcopy(current[0])
    del broken.SOPClassUID  # Orthanc refuses an instance without its class
    with pytest.raises(DicomWebError, match="HTTP 400") as err:
        DicomWebClient(dicomweb_url, retries=False).store([broken])
    assert _no_phi(str(err.value)) and "\n" not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__  # the response body is not chained


def _closed_port() -> int:
    from orthanc import free_port

    return free_port()
