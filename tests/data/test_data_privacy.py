"""Patient fields never reach image meta, reprs, logs, warnings or error messages."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest

from medic_ad.data.errors import ImageReadError
from medic_ad.data.io import read_image

pytest.importorskip("pydicom")

SECRETS = {
    "PatientName": "Doe^Jane Secretname",
    "PatientID": "PID-55501-SECRET",
    "PatientBirthDate": "19510423",
    "OtherPatientIDs": "OTHER-ID-7781",
    "PatientAddress": "12 Hidden Lane",
    "InstitutionName": "St Example Hospital",
    "ReferringPhysicianName": "Dr^Whoever",
    "AccessionNumber": "ACC99887766",
}
NEEDLES = ["Secretname", "Doe^Jane", "PID-55501", "19510423", "OTHER-ID-7781", "Hidden Lane", "ACC99887766"]


def _leaks(text: str) -> list[str]:
    return [n for n in NEEDLES if n in text]


def test_patient_fields_never_leak(tmp_path: Path, make_dicom, caplog: pytest.LogCaptureFixture) -> None:
    pixels = np.arange(48 * 32, dtype=np.uint16).reshape(32, 48)
    path = make_dicom(tmp_path / "scan.dcm", pixels, WindowCenter=700, WindowWidth=1000, **SECRETS)

    with caplog.at_level(logging.DEBUG), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img = read_image(path)
    assert img.pixels.shape == (32, 48)
    for text in (repr(img.meta), str(img.meta), repr(img), str(img), str(vars(img.meta))):
        assert not _leaks(text), text
    assert not _leaks(caplog.text)
    assert not any(_leaks(str(w.message)) for w in caught)

    raw = path.read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(raw[: len(raw) - 1500])
    broken_header = tmp_path / "broken.dcm"
    value = raw.index(b"Doe^Jane")  # explicit VR: the 2-byte length sits just before the value
    broken_header.write_bytes(raw[: value - 2] + b"\xff\xff" + raw[value:])
    for bad in (truncated, broken_header):
        with caplog.at_level(logging.DEBUG), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(ImageReadError) as info:
                read_image(bad)
        message = str(info.value)
        assert bad.name in message and not _leaks(message) and not _leaks(repr(info.value)), message
        assert info.value.__cause__ is None
        assert not _leaks(caplog.text)
        assert not any(_leaks(str(w.message)) for w in caught)


def test_meta_has_only_safe_fields() -> None:
    from dataclasses import fields

    from medic_ad.data.io import ImageMeta

    assert {f.name for f in fields(ImageMeta)} == {
        "modality",
        "size",
        "spacing",
        "source_format",
        "photometric",
        "n_frames",
        "orientation",
    }
