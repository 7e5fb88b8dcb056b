"""Load on loopback: 50 concurrent requests against uvicorn in-process; only deliberate 503s, server alive."""

from __future__ import annotations

import threading
import time

import httpx

from serve_helpers import LiveServer
from medic_ad.serve.api import ServeSettings, create_app


def test_fifty_concurrent_requests(service, br35h) -> None:
    settings = ServeSettings(max_concurrent=1, max_waiting=6, timeout_s=60, retry_after_s=2)
    app = create_app(service, settings)
    data = br35h[0].read_bytes()
    n = 50
    results: list[tuple[int, dict, dict] | BaseException] = [None] * n  # type: ignore[list-item]
    start = threading.Barrier(n)

    def worker(i: int, client: httpx.Client) -> None:
        try:
            start.wait(timeout=30)
            r = client.post("/v1/detect", files={"image": ("x.png", data, "image/png")})
            results[i] = (r.status_code, dict(r.headers), r.json())
        except BaseException as exc:  # noqa: BLE001 - recorded and asserted on below
            results[i] = exc

    with LiveServer(app) as base, httpx.Client(base_url=base, timeout=90,
                                               limits=httpx.Limits(max_connections=n + 5)) as shared:
        # one client (thread-safe, one connection per request in flight): 50 TLS contexts would cost seconds
        threads = [threading.Thread(target=worker, args=(i, shared), daemon=True) for i in range(n)]
        began = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        elapsed = time.monotonic() - began
        assert not any(t.is_alive() for t in threads), "load test did not finish"

        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, errors[:3]
        codes = [r[0] for r in results]
        assert set(codes) <= {200, 503}, codes
        ok = [r for r in results if r[0] == 200]
        busy = [r for r in results if r[0] == 503]
        assert len(ok) >= 1 and len(ok) + len(busy) == n
        for _, headers, body in busy:
            assert headers["retry-after"] == "2" and body["reason"] == "overloaded"
        for _, _, body in ok:
            assert 0 <= body["score"] <= 1

        # alive afterwards, queue drained, and requests within capacity all succeed
        with httpx.Client(base_url=base, timeout=30) as c:
            assert c.get("/healthz").status_code == 200
            assert c.get("/healthz").json()["admitted"] == 0
            follow = [c.post("/v1/detect", files={"image": ("x.png", data)}).status_code for _ in range(3)]
        assert follow == [200, 200, 200]
    print(f"50 concurrent: {len(ok)} answered, {len(busy)} told to retry, {elapsed:.1f} s")
