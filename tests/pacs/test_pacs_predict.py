"""``medic-ad predict --dicomweb … --store`` against a real Orthanc: pull a prior/current pair, run, store back.

The objects found in Orthanc afterwards must reference the right series, a failed store must leave
the study undone (a rerun stores it), and no patient field may leave the DICOM files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pydicom
import pytest
from ct_series import PHI, make_study_pair
from pydicom.uid import ParametricMapStorage

from medic_ad.pacs import DicomWebClient, DicomWebError

pytest.importorskip("medic_ad.dicom_out")

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture(scope="module")
def pair(dicom_file, upload_study):
    prior, current = make_study_pair(dicom_file("CT_small.dcm"), n=3)
    upload_study(prior)
    upload_study(current)
    return prior, current


def _predict(url: str, out: Path, pair, *extra: str) -> int:
    from medic_ad.cli.main import main

    prior, current = pair
    return main(["-v", "predict", "--dicomweb", url, "--study-uid", prior[0].StudyInstanceUID,
                 "--study-uid", current[0].StudyInstanceUID, "--modality", "CT", "--store", "--compare",
                 "--explain", "--out", str(out), "--num-workers", "0", "--no-progress", *extra])


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _ours(client: DicomWebClient, study_uid: str, folder: Path) -> list[pydicom.Dataset]:
    """The objects medic-ad wrote, as Orthanc holds them (fetched with WADO-RS)."""
    fetched = client.retrieve_study(study_uid, folder)
    return [ds for ds in map(pydicom.dcmread, sorted(fetched.rglob("*.dcm"))) if ds.get("Manufacturer") == "medic-ad"]


def test_pull_predict_store_back(pair, dicomweb_url, tmp_path, monkeypatch, capfd, caplog):
    prior, current = pair
    out = tmp_path / "o"
    caplog.set_level(logging.DEBUG)

    def refuse(self, objects):
        raise DicomWebError(f"DICOMweb store instances failed: {dicomweb_url} answered HTTP 503")

    with monkeypatch.context() as m:  # the PACS refuses the first run's stores
        m.setattr(DicomWebClient, "store", refuse)
        assert _predict(dicomweb_url, out, pair, "--model-type", "dummy") == 1
    first = capfd.readouterr()
    assert "rerun to retry" in first.err
    assert _rows(out / "studies.jsonl") == []  # nothing counts as done
    assert sum("not stored, a rerun retries it" in r.getMessage() and "HTTP 503" in r.getMessage()
               for r in caplog.records) == 2

    assert _predict(dicomweb_url, out, pair, "--model-type", "dummy") == 0  # the retrieved studies are reused
    second = capfd.readouterr()
    rows = _rows(out / "studies.jsonl")
    assert {r["study_uid"] for r in rows} == {prior[0].StudyInstanceUID, current[0].StudyInstanceUID}
    assert all(r["status"] == "ok" for r in rows)
    (comparison,) = _rows(out / "comparisons.jsonl")
    assert comparison["status"] == "ok" and comparison["prior_study_uid"] == prior[0].StudyInstanceUID

    client = DicomWebClient(dicomweb_url)
    for study in (prior, current):
        series_uid = study[0].SeriesInstanceUID
        objects = _ours(client, study[0].StudyInstanceUID, tmp_path / "back")
        srs = [ds for ds in objects if ds.SOPClassUID == COMPREHENSIVE_3D_SR]
        (study_sr,) = [ds for ds in srs if "PertinentOtherEvidenceSequence" not in ds]
        evidence = study_sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        assert [s.SeriesInstanceUID for s in evidence] == [series_uid]
        (pm,) = [ds for ds in objects if ds.SOPClassUID == ParametricMapStorage]
        assert [s.SeriesInstanceUID for s in pm.ReferencedSeriesSequence] == [series_uid]
    comparison_srs = [ds for ds in srs if "PertinentOtherEvidenceSequence" in ds]  # in the current study
    (cmp_sr,) = comparison_srs
    other = cmp_sr.PertinentOtherEvidenceSequence[0]
    assert (other.StudyInstanceUID, other.ReferencedSeriesSequence[0].SeriesInstanceUID) == (
        prior[0].StudyInstanceUID, prior[0].SeriesInstanceUID)

    # a third run does nothing new: the stored objects are not duplicated in Orthanc
    assert _predict(dicomweb_url, out, pair, "--model-type", "dummy") == 0
    third = capfd.readouterr()
    assert "2 already done" in third.err
    assert len(_ours(client, current[0].StudyInstanceUID, tmp_path / "again")) == len(objects)

    texts = [first.out, first.err, second.out, second.err, third.out, third.err, caplog.text]
    texts += [str(r.args) for r in caplog.records]
    texts += [p.read_text(errors="replace") for p in out.rglob("*") if p.is_file() and p.suffix != ".dcm"]
    for secret in PHI.values():
        assert not any(secret in t for t in texts), secret
    assert not any("Doe" in t for t in texts)


def test_tiny_checkpoint_over_dicomweb(pair, dicomweb_url, tmp_path, tiny_checkpoint, capfd):
    out = tmp_path / "o"
    code = _predict(dicomweb_url, out, pair, "--model", str(tiny_checkpoint), "--slices", "2", "--batch-size", "4")
    err = capfd.readouterr().err
    assert code == 0, err
    rows = _rows(out / "studies.jsonl")
    assert len(rows) == 2 and all(r["status"] == "ok" and 0.0 <= r["score"] <= 1.0 for r in rows)
    assert all((out / "dicom" / r["study_uid"] / f"{r['series_uid']}.heatmap.dcm").is_file() for r in rows)
    for secret in PHI.values():
        assert secret not in err
