"""``medic-ad serve``: options, loopback default, and a real server process answering /healthz."""

from __future__ import annotations

import pytest


def test_defaults_and_settings() -> None:
    from medic_ad.cli.main import build_parser
    from medic_ad.cli.serve import _is_loopback, settings_from_args

    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.port == 8000 and not args.api and not args.ui
    s = settings_from_args(build_parser().parse_args(["serve", "--max-upload-mb", "2", "--max-waiting", "3"]))
    assert s.limits.max_bytes == 2 * 1024 * 1024 and s.max_waiting == 3
    assert s.limits.max_study_upload_bytes == 512 * 1024 * 1024
    s = settings_from_args(build_parser().parse_args(["serve", "--max-study-upload-mb", "3"]))
    assert s.limits.max_study_upload_bytes == 3 * 1024 * 1024 and s.max_study_body > s.limits.max_study_upload_bytes
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0")


@pytest.mark.parametrize("argv, phrase", [
    (["serve", "--port", "0"], "--port must be 1-65535"),
    (["serve", "--max-concurrent", "0"], "--max-concurrent must be at least 1"),
    (["serve", "--timeout", "-1"], "must be positive"),
    (["serve", "--max-study-upload-mb", "0"], "must be positive"),
])
def test_bad_options(capsys, tiny_checkpoint, argv, phrase) -> None:
    from medic_ad.cli.main import main

    assert main(argv + ["--model", str(tiny_checkpoint)]) == 2
    err = capsys.readouterr().err
    assert phrase in err and len(err.strip().splitlines()) == 1


def test_no_model_is_one_line(capsys, monkeypatch) -> None:
    import medic_ad.paths
    from medic_ad.cli.main import main

    monkeypatch.setattr(medic_ad.paths, "default_checkpoint", lambda: None)
    assert main(["serve", "--api"]) == 2
    assert "no model given and no demo checkpoint found" in capsys.readouterr().err


def test_serve_wires_api_and_ui_on_loopback(tiny_checkpoint, monkeypatch, capsys) -> None:
    """``medic-ad serve`` with defaults: both API and UI, bound to 127.0.0.1 (uvicorn.run captured)."""
    import uvicorn
    from fastapi.testclient import TestClient

    from medic_ad.cli.main import main

    seen = {}
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    assert main(["serve", "--port", "8765", "--model", str(tiny_checkpoint)]) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8765
    err = capsys.readouterr().err
    assert "API http://127.0.0.1:8765/v1" in err and "UI http://127.0.0.1:8765/ui/" in err and "warning" not in err
    with TestClient(seen["app"]) as c:
        assert c.get("/healthz").json()["model_loaded"] is True
        assert "/v1/detect" in c.get("/openapi.json").json()["paths"]
        assert c.get("/ui/").status_code == 200
        assert c.get("/", follow_redirects=False).headers["location"] == "/ui/"

    assert main(["serve", "--api", "--host", "0.0.0.0", "--model", str(tiny_checkpoint)]) == 0
    assert seen["host"] == "0.0.0.0" and "reachable from other machines" in capsys.readouterr().err
    with TestClient(seen["app"]) as c:
        assert c.get("/ui/").status_code == 404 and c.get("/", follow_redirects=False).headers["location"] == "/docs"
