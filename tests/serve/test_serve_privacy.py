"""DICOM patient fields never reach responses, logs, file names or file contents (CLI, API, UI path)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from serve_helpers import leaks


def _tree_leaks(folder: Path) -> list[tuple[str, list[str]]]:
    found = []
    for p in folder.rglob("*"):
        hit = leaks(str(p.relative_to(folder)))
        if p.is_file():
            hit += leaks(p.read_bytes())
        if hit:
            found.append((str(p), hit))
    return found


def test_cli_never_leaks(private_dicom, tiny_checkpoint, tmp_path, capsys, caplog) -> None:
    from medic_ad.cli.main import main

    out = tmp_path / "outputs"
    model = ["--model", str(tiny_checkpoint)]
    runs = [
        ["-v", "detect", str(private_dicom), "--json", "--out", str(out / "results.jsonl")],
        ["-v", "detect", str(private_dicom.parent), "--out", str(out / "results.csv")],
        ["-v", "explain", str(private_dicom), "-o", str(out / "overlay.png"), "--heatmap", str(out / "heat.png"),
         "--json"],
        ["-v", "compare", str(private_dicom), str(private_dicom), "-o", str(out / "sidebyside.png"), "--json"],
    ]
    with caplog.at_level(logging.DEBUG):
        for argv in runs:
            assert main(argv + model) == 0
            captured = capsys.readouterr()
            assert not leaks(captured.out) and not leaks(captured.err), argv
    assert not leaks(caplog.text)
    assert sorted(p.name for p in out.iterdir()) == ["heat.png", "overlay.png", "results.csv", "results.jsonl",
                                                     "sidebyside.png"]
    assert not _tree_leaks(out)


def test_cli_refusal_never_leaks(private_dicom, tiny_checkpoint, tmp_path, capsys) -> None:
    from medic_ad.cli.main import main

    raw = private_dicom.read_bytes()
    cut = private_dicom.parent / "cut.dcm"
    cut.write_bytes(raw[: len(raw) - 5000])
    assert main(["detect", str(cut), "--model", str(tiny_checkpoint)]) == 2
    err = capsys.readouterr().err
    assert "refused (unreadable)" in err and not leaks(err)


def test_api_never_leaks(service, private_dicom, caplog) -> None:
    from medic_ad.serve.api import create_app

    data = private_dicom.read_bytes()
    with caplog.at_level(logging.DEBUG), TestClient(create_app(service)) as c:
        responses = [
            c.post("/v1/detect?overlay=true", files={"image": ("study.dcm", data)}),
            c.post("/v1/explain?heatmap=true", files={"image": ("study.dcm", data)}),
            c.post("/v1/explain?format=png", files={"image": ("study.dcm", data)}),
            c.post("/v1/compare", files={"prior": ("a.dcm", data), "current": ("b.dcm", data)}),
            c.post("/v1/detect", files={"image": ("cut.dcm", data[:-5000])}),  # a refusal
        ]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 422]
    for r in responses:
        assert not leaks(r.content) and not leaks(str(r.headers)), r.url
        if r.headers["content-type"].startswith("application/json"):
            assert not leaks(str({k: v for k, v in r.json().items() if not k.endswith("_png")})), r.url
        if r.headers["content-type"].startswith("application/json"):
            import base64

            for key, value in r.json().items():
                if key.endswith("_png"):
                    assert not leaks(base64.b64decode(value)), key
    assert not leaks(caplog.text)
    assert list(service.tmp_dir.iterdir()) == []  # uploads are deleted once decoded


def test_ui_path_never_leaks(service, private_dicom, caplog) -> None:
    from medic_ad.serve.ui import compare_studies, detect_study, redraw_overlay

    data = private_dicom.read_bytes()
    with caplog.at_level(logging.DEBUG):
        md, label, picture, state = detect_study(service, data)
        again = redraw_overlay(state, 0.8)
        cmd, probs, side, _ = compare_studies(service, data, data, "left lung")
        refused, *_ = detect_study(service, data[:-5000])
    assert "Answer" in md and "Refused" in refused
    for text in (md, str(label), cmd, str(probs), refused):
        assert not leaks(text)
    for arr in (picture, again, side):
        buf = io.BytesIO()
        Image.fromarray(np.asarray(arr)).save(buf, format="PNG")
        assert not leaks(buf.getvalue())
    assert not leaks(caplog.text)
    assert list(service.tmp_dir.iterdir()) == []
