"""REST API: results on real inputs, JSON 4xx for every bad input, limits, overload and timeouts."""

from __future__ import annotations

import base64
import io
import threading
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from medic_ad.serve.api import Admission, ServeSettings, create_app
from medic_ad.serve.sanity import REASONS, Limits
from medic_ad.serve.service import Service


@pytest.fixture(scope="module")
def client(service):
    with TestClient(create_app(service), raise_server_exceptions=False) as c:
        yield c


def _files(path, field="image", filename="upload.bin"):
    return {field: (filename, path.read_bytes(), "application/octet-stream")}


def _is_error(r, status: int, reason: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "reason"}, body
    assert "Traceback" not in r.text and "\n" not in body["error"]
    if reason is not None:
        assert body["reason"] == reason, body
    return body


# ------------------------------------------------------------------------------------------ happy paths


def test_healthz_and_openapi(client) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    assert {"/v1/detect", "/v1/compare", "/v1/explain", "/healthz"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/v1/detect"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200


def test_detect_real_png(client, br35h) -> None:
    # the content type and file name lie; the bytes decide
    r = client.post("/v1/detect", files={"image": ("scan.dcm", br35h[0].read_bytes(), "text/plain")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert 0 <= body["score"] <= 1 and body["abnormal"] == (body["score"] >= 0.5)
    assert body["image"]["format"] == "png" and "overlay_png" not in body
    r = client.post("/v1/detect?overlay=true", files=_files(br35h[0]))
    png = base64.b64decode(r.json()["overlay_png"])
    assert Image.open(io.BytesIO(png)).format == "PNG"


def test_explain_json_and_png(client, br35h) -> None:
    r = client.post("/v1/explain?heatmap=true", files=_files(br35h[1]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert 0 <= body["heatmap"]["min"] <= body["heatmap"]["max"] <= 1
    raw = Image.open(io.BytesIO(base64.b64decode(body["heatmap_png"])))
    with Image.open(br35h[1]) as src:
        assert raw.size == src.size
    r = client.post("/v1/explain?format=png&alpha=0.3", files=_files(br35h[1]))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).width > raw.width


def test_compare_real_pair(client, cxr_pair) -> None:
    prior, current = cxr_pair
    files = {"prior": ("a", prior.read_bytes()), "current": ("b", current.read_bytes())}
    r = client.post("/v1/compare", files=files, data={"region": "left lower lung zone"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] in {"worsened", "improved", "no change"}
    assert abs(sum(body["probs"].values()) - 1) < 1e-4
    assert Image.open(io.BytesIO(base64.b64decode(body["sidebyside_png"]))).format == "PNG"
    r = client.post("/v1/compare?format=png", files=files)
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG")


@pytest.mark.parametrize("name, form", [("CT_small.dcm", {}), ("MR_small.dcm", {}), ("RG3_UNCR.dcm", {}),
                                        ("emri_small.dcm", {"frame": "2"})])
def test_real_dicoms(client, dicom_file, name, form) -> None:
    r = client.post("/v1/detect", files=_files(dicom_file(name)), data=form)
    assert r.status_code == 200, r.text
    assert r.json()["image"]["format"] == "dicom"


# ------------------------------------------------------------------------------------------ refusals


def test_bad_corpus_gets_json_4xx(client, bad_corpus) -> None:
    folder, expected = bad_corpus
    assert len(expected) >= 30
    wrong = []
    for name, reason in expected.items():
        for endpoint in ("/v1/detect", "/v1/explain"):
            r = client.post(endpoint, files=_files(folder / name, filename=name))
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            if r.status_code != REASONS[reason] or body.get("reason") != reason or set(body) != {"error", "reason"}:
                wrong.append((endpoint, name, r.status_code, r.text[:200]))
        assert name not in r.text  # the upload's file name is never echoed
    assert not wrong, wrong


def test_bad_pairs_get_json_4xx(client, bad_pairs) -> None:
    for name, (prior, current, reason) in bad_pairs.items():
        files = {"prior": ("p", prior.read_bytes()), "current": ("c", current.read_bytes())}
        r = client.post("/v1/compare", files=files)
        _is_error(r, REASONS[reason], reason)


def test_request_errors_are_json(client, br35h) -> None:
    _is_error(client.get("/nope"), 404, "not_found")
    _is_error(client.get("/v1/detect"), 405, "method_not_allowed")
    _is_error(client.post("/v1/detect"), 422, "invalid_request")
    _is_error(client.post("/v1/detect", content=b"not multipart", headers={"content-type": "text/plain"}), 422)
    _is_error(client.post("/v1/detect?format=gif", files=_files(br35h[0])), 422, "invalid_request")
    _is_error(client.post("/v1/detect", files=_files(br35h[0]), data={"frame": "-1"}), 422, "invalid_request")
    _is_error(client.post("/v1/detect", files=_files(br35h[0]), data={"frame": "7"}), 422, "bad_option")
    body = b"--xyz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a\"\r\n\r\nabc"  # no closing boundary
    r = client.post("/v1/detect", content=body, headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert 400 <= r.status_code < 500 and set(r.json()) == {"error", "reason"}
    files = {"prior": ("p", br35h[0].read_bytes()), "current": ("c", br35h[1].read_bytes())}
    _is_error(client.post("/v1/compare", files=files, data={"region": "x" * 500}), 422, "bad_option")


def test_upload_limit_before_decoding(service, br35h) -> None:
    settings = ServeSettings(limits=Limits(max_bytes=4096))
    small = Service(service.model, limits=settings.limits, tmp_dir=service.tmp_dir)
    with TestClient(create_app(small, settings)) as c:
        big = br35h[0].read_bytes() * (settings.max_body // len(br35h[0].read_bytes()) + 2)
        assert len(big) > settings.max_body
        _is_error(c.post("/v1/detect", files={"image": ("x", big)}), 413, "too_large")

        def chunks():  # no Content-Length: the streamed byte count decides
            for i in range(0, len(big), 1024):
                yield big[i:i + 1024]

        r = c.post("/v1/detect", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
        _is_error(r, 413, "too_large")
        mid = big[: settings.limits.max_bytes + 100]  # over the per-file limit, under the body limit
        _is_error(c.post("/v1/detect", files={"image": ("x", mid)}), 413, "too_large")
        assert c.get("/healthz").status_code == 200


def test_pixel_limit_from_header(service) -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from bad_inputs.generate import png_header_only

    settings = ServeSettings(limits=Limits(max_pixels=100 * 100))
    with TestClient(create_app(Service(service.model, limits=settings.limits), settings)) as c:
        r = c.post("/v1/detect", files={"image": ("x", png_header_only(200, 200))})
        _is_error(r, 413, "too_many_pixels")


class _SlowModel:
    """Stands in for MedicAD: answers after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def detect(self, images, batch_size=8):
        from medic_ad.models.results import Detection

        time.sleep(self.delay)
        return [Detection(answer="No", abnormal=False, score=0.1) for _ in images]


def test_timeout_answers_503(br35h) -> None:
    settings = ServeSettings(timeout_s=0.2, retry_after_s=3)
    with TestClient(create_app(Service(_SlowModel(1.0)), settings)) as c:
        r = c.post("/v1/detect", files=_files(br35h[0]))
        body = _is_error(r, 503, "timeout")
        assert r.headers["retry-after"] == "3" and "0.2" in body["error"]
        assert c.get("/healthz").status_code == 200


def test_overload_answers_503_with_retry_after(br35h) -> None:
    settings = ServeSettings(max_concurrent=1, max_waiting=0, timeout_s=10)
    app = create_app(Service(_SlowModel(0.6)), settings)
    with TestClient(app) as c:
        results = []

        def call():
            results.append(c.post("/v1/detect", files=_files(br35h[0])))

        first = threading.Thread(target=call)
        first.start()
        deadline = time.monotonic() + 5
        while app.state.admission.admitted == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        r = c.post("/v1/detect", files=_files(br35h[0]))
        first.join()
        body = _is_error(r, 503, "overloaded")
        assert r.headers["retry-after"] == "5" and "busy" in body["error"]
        assert results[0].status_code == 200
        assert c.get("/healthz").json()["admitted"] == 0


def test_admission_frees_slots_when_jobs_finish() -> None:
    adm = Admission(max_concurrent=1, max_waiting=1)
    gate = threading.Event()
    a = adm.try_submit(gate.wait)
    b = adm.try_submit(lambda: 1)
    assert a is not None and b is not None and adm.try_submit(lambda: 2) is None
    gate.set()
    a.result(5), b.result(5)
    time.sleep(0.05)
    assert adm.admitted == 0 and adm.try_submit(lambda: 3).result(5) == 3
    adm.shutdown()


def test_internal_errors_are_json_without_traceback(br35h) -> None:
    class Broken:
        def detect(self, images, batch_size=8):
            raise RuntimeError("secret internals")

    with TestClient(create_app(Service(Broken())), raise_server_exceptions=False) as c:
        r = c.post("/v1/detect", files=_files(br35h[0]))
        assert r.status_code == 500 and r.json() == {"error": "internal error; the server log names it",
                                                     "reason": "internal"}
        assert "secret" not in r.text
