"""Study uploads: Service.study on files and zips, the zip's safety checks, one study per upload, and POST /v1/study."""

from __future__ import annotations

import base64
import io
import json
import logging
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from medic_ad.serve.sanity import Limits, SanityError
from medic_ad.serve.service import Service
from study_builders import PHI, corrupt_dicom, write_ct_series, write_multiframe_ct, write_nifti_volume


def _zip(members: dict[str, bytes], *, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _refused(service: Service, uploads, reason: str, **kwargs) -> SanityError:
    with pytest.raises(SanityError) as info:
        service.study(uploads, **kwargs)
    assert info.value.reason == reason, str(info.value)
    return info.value


def _phi_free(text: str) -> bool:
    return not any(value in text for value in PHI.values())


@pytest.fixture
def clean_tmp(service):
    yield service.tmp_dir
    assert list(service.tmp_dir.iterdir()) == []  # the study's folder is gone, whatever happened


# ------------------------------------------------------------------------------------------ service


def test_files_give_the_study_row_slices_and_overlays(service, ct_study, clean_tmp) -> None:
    built, _ = ct_study
    study = service.study([f.read_bytes() for f in built.files])
    r = study.result
    assert (r.study_uid, r.series_uid, r.n_slices, r.status) == (built.study_uid, built.series_uid, 5, "ok")
    assert r.slice_indices == list(range(5)) and len(r.slice_scores) == 5
    assert r.score == max(r.slice_scores) and r.abnormal == (r.score >= 0.5)
    assert r.key_slice_index == r.slice_indices[study.key] and r.key_sop_uid == built.sop_uids[r.key_slice_index]
    assert len(study.images) == len(study.heatmaps) == 5
    assert all(m.shape == (64, 64) and 0 <= m.min() <= m.max() <= 1 for m in study.heatmaps)
    row = study.to_dict()
    assert [s["index"] for s in row["slices"]] == list(range(5)) and row["modality"] == "CT"
    assert (row["files_read"], row["files_skipped"], row["series_found"]) == (5, 0, 1)
    assert Image.open(io.BytesIO(study.overlay_png(study.key, alpha=0.3))).format == "PNG"


def test_zip_gives_the_same_answer_as_its_files(service, ct_study, clean_tmp) -> None:
    built, zip_path = ct_study
    from_files = service.study([f.read_bytes() for f in built.files], heatmaps=False).to_dict()
    from_zip = service.study(zip_path.read_bytes(), heatmaps=False).to_dict()
    assert from_zip == from_files


def test_options_slices_window_score(service, ct_study, clean_tmp) -> None:
    _, zip_path = ct_study
    study = service.study(zip_path.read_bytes(), slices="2", window="brain", score="topk_mean:2")
    assert study.result.slice_indices == [0, 4] and study.score_rule == "topk_mean:2"
    assert study.result.score == pytest.approx(sum(study.result.slice_scores) / 2, abs=1e-5)
    for bad in ({"slices": "0"}, {"slices": "many"}, {"score": "mean"}, {"window": "sideways"}):
        _refused(service, zip_path.read_bytes(), "bad_option", **bad)


def test_volumes_multiframe_and_nifti(service, tmp_path, clean_tmp) -> None:
    mf = write_multiframe_ct(tmp_path / "mf.dcm", n_frames=4)
    assert service.study(mf.files[0].read_bytes()).result.n_slices == 4
    write_nifti_volume(tmp_path / "vol.nii.gz", n=3)
    study = service.study(_zip({"v/vol.nii.gz": (tmp_path / "vol.nii.gz").read_bytes()}))
    assert study.result.n_slices == 3 and study.result.key_sop_uid is None


def test_unsafe_zips_are_refused(service, ct_study, tmp_path, clean_tmp) -> None:
    built, _ = ct_study
    slice_bytes = built.files[0].read_bytes()
    for name in ("../evil.dcm", "a/../../evil.dcm", "/etc/evil.dcm", "C:/evil.dcm", "..\\evil.dcm"):
        err = _refused(service, _zip({"ok.dcm": slice_bytes, name: slice_bytes}), "bad_archive")
        assert "member 2" in str(err) and "evil" not in str(err)
    assert not (service.tmp_dir.parent / "evil.dcm").exists()
    bomb = _zip({"a.dcm": slice_bytes, "b.dcm": b"\0" * (8 << 20)})
    assert "bomb" in str(_refused(service, bomb, "too_large"))
    _refused(service, b"PK\x03\x04 a torn zip", "bad_archive")
    few = service.with_limits(Limits(max_files=3))
    assert "more than 3 files" in str(_refused(few, [f.read_bytes() for f in built.files], "too_large"))
    small = service.with_limits(Limits(max_study_bytes=3 * len(slice_bytes)))
    _refused(small, [f.read_bytes() for f in built.files], "too_large")


def test_one_study_per_upload(service, tmp_path, clean_tmp) -> None:
    a = write_ct_series(tmp_path / "a", n=2, seed=1)
    b = write_ct_series(tmp_path / "b", n=3, seed=2)
    err = _refused(service, [p.read_bytes() for p in a.files + b.files], "mixed_studies")
    assert "2 studies" in str(err)
    # two series of one study: the largest is read and the notes say so; another can be named
    c = write_ct_series(tmp_path / "c", n=2, seed=3, study_uid=b.study_uid)
    both = [p.read_bytes() for p in b.files + c.files]
    study = service.study(both, heatmaps=False)
    assert study.result.series_uid == b.series_uid and study.series_found == 2
    assert any("2 series" in note for note in study.notes)
    assert service.study(both, series_uid=c.series_uid, heatmaps=False).result.n_slices == 2
    _refused(service, both, "bad_option", series_uid="1.2.3")


def test_non_images_and_corrupt_members_are_skipped(service, ct_study, tmp_path, clean_tmp) -> None:
    built, _ = ct_study
    members = {f"s/{p.name}": p.read_bytes() for p in built.files}
    members.update({"s/README.txt": b"a note", "s/bad.dcm": corrupt_dicom(tmp_path / "bad.dcm").read_bytes(),
                    "__MACOSX/s/._x.dcm": b"\0\5\26\7", "s/.DS_Store": b"\0\0\0\1Bud1"})
    study = service.study(_zip(members))
    assert study.result.n_slices == 5 and study.files_skipped == 4 and study.files_read == 5
    assert any("4 uploaded file(s) skipped" in note for note in study.notes)
    _refused(service, [b"<html>hello</html>", b"plain text"], "not_an_image")
    _refused(service, [corrupt_dicom(tmp_path / "c2.dcm").read_bytes()], "unreadable")
    _refused(service, [], "empty_file")


def test_patient_fields_never_leave(service, ct_study, caplog, clean_tmp) -> None:
    built, zip_path = ct_study
    assert PHI["PatientName"].encode() in built.files[0].read_bytes()
    with caplog.at_level(logging.DEBUG):
        studies = [service.study(zip_path.read_bytes()), service.study([p.read_bytes() for p in built.files])]
        with pytest.raises(SanityError) as refusal:
            service.study(_zip({f"{PHI['PatientName']}/../x.dcm": b"x"}))
    for study in studies:
        assert _phi_free(json.dumps(study.to_dict()))
        assert not any(v.encode() in study.overlay_png(0) for v in PHI.values())
    assert _phi_free(str(refusal.value)) and _phi_free(caplog.text)


# ------------------------------------------------------------------------------------------ API


@pytest.fixture(scope="module")
def client(service):
    from medic_ad.serve.api import create_app

    with TestClient(create_app(service), raise_server_exceptions=False) as c:
        yield c


def _error(r, status: int, reason: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "reason"} and body["reason"] == reason, body
    return body["error"]


def test_api_study_with_files_and_with_a_zip(client, ct_study) -> None:
    built, zip_path = ct_study
    files = [("files", (f"{PHI['PatientName']}_{k}.dcm", p.read_bytes())) for k, p in enumerate(built.files)]
    r = client.post("/v1/study?overlays=key", files=files, data={"slices": "all", "score": "max"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["study_uid"], body["series_uid"], body["n_slices"]) == (built.study_uid, built.series_uid, 5)
    assert body["key_sop_uid"] == built.sop_uids[body["key_slice_index"]] and body["status"] == "ok"
    drawn = [s["index"] for s in body["slices"] if s["overlay_png"]]
    assert drawn == [body["key_slice_index"]]
    key = next(s for s in body["slices"] if s["overlay_png"])
    assert Image.open(io.BytesIO(base64.b64decode(key["overlay_png"]))).format == "PNG"
    assert not any(v in r.text for v in PHI.values())

    r = client.post("/v1/study?overlays=all", files={"zip": ("series.zip", zip_path.read_bytes())},
                    data={"slices": "3", "window": "40/80"})
    assert r.status_code == 200, r.text
    assert [s["index"] for s in r.json()["slices"]] == [0, 2, 4] and all(s["overlay_png"] for s in r.json()["slices"])
    r = client.post("/v1/study?format=png", files={"zip": ("series.zip", zip_path.read_bytes())})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    spec = client.get("/openapi.json").json()
    assert "/v1/study" in spec["paths"] and "StudyResponse" in spec["components"]["schemas"]


def test_api_study_errors(client, service, ct_study, tmp_path) -> None:
    built, zip_path = ct_study
    one = built.files[0].read_bytes()
    _error(client.post("/v1/study"), 422, "empty_file")
    _error(client.post("/v1/study", files=[("files", ("a", one)), ("zip", ("z", zip_path.read_bytes()))]), 422,
           "bad_option")
    _error(client.post("/v1/study", files={"zip": ("z.zip", one)}), 422, "bad_archive")
    _error(client.post("/v1/study", files={"zip": ("z.zip", _zip({"../x.dcm": one}))}), 422, "bad_archive")
    _error(client.post("/v1/study", files=[("files", ("h", b"<html></html>"))]), 415, "not_an_image")
    _error(client.post("/v1/study", files=[("files", ("a", one))], data={"score": "mean"}), 422, "bad_option")
    other = write_ct_series(tmp_path / "other", n=2, seed=5)
    mixed = [("files", ("a", one)), ("files", ("b", other.files[0].read_bytes()))]
    assert "2 studies" in _error(client.post("/v1/study", files=mixed), 422, "mixed_studies")

    from medic_ad.serve.api import ServeSettings, create_app

    settings = ServeSettings(limits=Limits(max_bytes=len(one) // 2), max_concurrent=1, max_waiting=0)
    with TestClient(create_app(service, settings), raise_server_exceptions=False) as small:
        _error(small.post("/v1/study", files=[("files", ("a", one))]), 413, "too_large")
    assert list(service.tmp_dir.iterdir()) == []


def test_api_study_is_admitted_like_the_others(service, ct_study) -> None:
    from medic_ad.serve.api import ServeSettings, create_app

    built, _ = ct_study
    app = create_app(service, ServeSettings(max_concurrent=1, max_waiting=0))
    with TestClient(app, raise_server_exceptions=False) as c:
        hold = app.state.admission.try_submit(lambda: __import__("time").sleep(1.0))  # the one slot, taken
        r = c.post("/v1/study", files=[("files", ("a", built.files[0].read_bytes()))])
        assert _error(r, 503, "overloaded") and r.headers["Retry-After"]
        hold.result()


# ------------------------------------------------------------------------------------------ limits


def _padded_zip(built, pad: int) -> bytes:
    """The series stored (not deflated) with a hidden member of ``pad`` random bytes: a big body whose
    images are small (hidden members are left out, never checked against the per-file limit)."""
    import os

    members = {f"s/{p.name}": p.read_bytes() for p in built.files}
    members["s/.pad"] = os.urandom(pad)
    return _zip(members, method=zipfile.ZIP_STORED)


def test_study_uploads_have_their_own_limit(service, ct_study) -> None:
    from medic_ad.serve.api import ServeSettings, create_app

    built, _ = ct_study
    one = built.files[0].read_bytes()
    big = _padded_zip(built, 800 * 1024)
    settings = ServeSettings(limits=Limits(max_bytes=2 * len(one)), max_concurrent=1, max_waiting=0)
    assert settings.max_body < len(big) < settings.limits.max_study_upload_bytes
    with TestClient(create_app(service, settings), raise_server_exceptions=False) as c:
        # the single-image limit refuses the body on /v1/detect, the study limit lets it through on /v1/study
        detect = _error(c.post("/v1/detect", files={"image": ("x", big)}), 413, "too_large")
        assert f"upload limit (2 x {settings.limits.max_bytes} bytes" in detect and "study" not in detect
        r = c.post("/v1/study", files={"zip": ("s.zip", big)})
        assert r.status_code == 200 and r.json()["n_slices"] == 5, r.text
    # over the study limit: refused by the body limit (Content-Length), then by the route (the zip itself)
    for limit, where in ((len(big) // 2, "request body of"), (len(big) - 1, f"over the {len(big) - 1}-byte")):
        tight = ServeSettings(limits=Limits(max_study_upload_bytes=limit), max_concurrent=1, max_waiting=0)
        with TestClient(create_app(service, tight), raise_server_exceptions=False) as c:
            message = _error(c.post("/v1/study", files={"zip": ("s.zip", big)}), 413, "too_large")
            assert "study upload limit" in message and where in message and str(limit) in message, message
    # the files of a study count together against it; each file still against the per-file limit
    tight = ServeSettings(limits=Limits(max_study_upload_bytes=len(one) * 3 // 2), max_concurrent=1, max_waiting=0)
    with TestClient(create_app(service, tight), raise_server_exceptions=False) as c:
        two = [("files", ("a", one)), ("files", ("b", built.files[1].read_bytes()))]
        assert "study upload limit" in _error(c.post("/v1/study", files=two), 413, "too_large")
    assert list(service.tmp_dir.iterdir()) == []
    # the service (the web UI's path) applies it as well
    err = _refused(service.with_limits(Limits(max_study_upload_bytes=len(big) - 1)), big, "too_large")
    assert "study upload limit" in str(err)


def _lying_zip(members: dict[str, bytes], liar: str, stated: int) -> bytes:
    """A deflated zip whose member ``liar`` states ``stated`` bytes uncompressed in both its local header
    and the central directory, whatever it really inflates to."""
    import struct

    data = bytearray(_zip(members))
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo(liar)
    assert data[info.header_offset:info.header_offset + 4] == b"PK\x03\x04"
    struct.pack_into("<I", data, info.header_offset + 22, stated)  # local header: uncompressed size
    name = liar.encode()
    at = data.find(b"PK\x01\x02")
    while at >= 0:  # central directory entries: the one whose file name is the liar's
        n = struct.unpack_from("<H", data, at + 28)[0]
        if bytes(data[at + 46:at + 46 + n]) == name:
            struct.pack_into("<I", data, at + 24, stated)
            break
        at = data.find(b"PK\x01\x02", at + 4)
    assert at >= 0 and zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo(liar).file_size == stated
    return bytes(data)


def test_a_zip_whose_directory_understates_sizes_is_cut_off(service, ct_study, tmp_path, clean_tmp) -> None:
    from medic_ad.serve.uploads import StudyFolder

    built, _ = ct_study
    slice_bytes = built.files[0].read_bytes()
    limits = Limits(max_bytes=1 << 20)
    # 3 MiB of zeros stated as 2000 bytes: the ratio check sees nothing (2000 bytes from ~3 KiB)
    bomb = _lying_zip({"a.dcm": slice_bytes, "b.dcm": b"\0" * (3 << 20)}, "b.dcm", 2000)
    # 100 KiB stated as 2000 bytes: under the limit, but not the size the directory states
    liar = _lying_zip({"a.dcm": slice_bytes, "b.dcm": b"\1" * (100 << 10)}, "b.dcm", 2000)
    for data, reason, phrase in ((bomb, "too_large", "inflates past the upload limits"),
                                 (liar, "bad_archive", f"inflates to {100 << 10} bytes, not the 2000")):
        with StudyFolder(limits, tmp_dir=tmp_path / "t") as folder:
            folder.add(slice_bytes)
            with pytest.raises(SanityError) as info:
                folder.add(data)
            assert info.value.reason == reason and phrase in str(info.value) and "member 2" in str(info.value)
            # nothing of the refused zip stays: not its honest member, not the cut-off one
            assert [p.name for p in folder.path.iterdir()] == ["00000"] and len(folder.files) == 1
        _refused(service.with_limits(limits), data, reason)
