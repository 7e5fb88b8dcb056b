"""The PHI of a source series goes into the DICOM objects (the standard requires it) and nowhere else."""

from __future__ import annotations

import copy
import logging
import warnings

import pydicom
import pytest
from ct_series import MODEL, PHI

from medic_ad.dicom_out import write_study_objects


def _leaks(text: str) -> list[str]:
    return [v for v in PHI.values() if v in text] + (["Doe"] if "Doe" in text else [])


@pytest.fixture
def everything_logged(caplog):
    """All records of every logger at DEBUG (highdicom and pydicom log as they copy attributes)."""
    caplog.set_level(logging.DEBUG)
    for name in ("highdicom", "pydicom", "medic_ad"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield caplog
    for name in ("highdicom", "pydicom", "medic_ad"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_phi_only_in_the_objects(ct_series, study_result, tmp_path, everything_logged, capfd):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = write_study_objects(study_result, ct_series, tmp_path, heatmaps=True, overlay=True, **MODEL)
    out, err = capfd.readouterr()
    logged = "\n".join(r.getMessage() for r in everything_logged.records)
    assert everything_logged.records  # the libraries did log: the check below has something to check
    assert _leaks(logged) == []
    assert _leaks(out + err) == []
    assert _leaks("\n".join(str(w.message) for w in caught)) == []
    assert all(PHI["PatientID"] not in p.as_posix() for p in paths)
    # the objects do carry them: the fixture is PHI-bearing and the patient module was copied
    for path in paths:
        ds = pydicom.dcmread(path)
        assert (str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.AccessionNumber) == tuple(PHI.values())


def _broken_results(ct_series, study_result):
    """Inputs each builder must refuse, with the exception they raise."""
    other = copy.deepcopy(ct_series[1])
    other.SeriesInstanceUID = pydicom.uid.generate_uid()
    missing = copy.deepcopy(ct_series[1])
    del missing.SOPClassUID
    cases = []
    for sources, change in [
        (ct_series[:1] + [other], {}),
        (ct_series[:1] + [missing], {}),
        (ct_series, {"key_sop_uid": ct_series[4].SOPInstanceUID}),
        (ct_series, {"key_slice_index": 9}),
        (ct_series, {"status": "failed", "score": None}),
        (ct_series, {"heatmaps": study_result.heatmaps[:1]}),
        ([], {}),
    ]:
        result = copy.copy(study_result)
        for key, value in change.items():
            setattr(result, key, value)
        cases.append((result, sources))
    return cases


def test_error_messages_carry_no_phi(ct_series, study_result, tmp_path, everything_logged, capfd):
    for result, sources in _broken_results(ct_series, study_result):
        with pytest.raises(ValueError) as err:
            write_study_objects(result, sources, tmp_path, heatmaps=True, overlay=True, **MODEL)
        assert _leaks(str(err.value)) == [], str(err.value)
        assert _leaks(repr(err.value.__cause__) + repr(err.value.__context__)) == []
    out, err = capfd.readouterr()
    assert _leaks(out + err + "\n".join(r.getMessage() for r in everything_logged.records)) == []
