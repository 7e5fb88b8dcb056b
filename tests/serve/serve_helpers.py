"""Helpers of the serving tests: the privacy needles and a live uvicorn server on loopback."""

from __future__ import annotations

import socket
import threading
import time

SECRET_NAME = "Doe^Jane"
SECRET_ID = "MRN12345"
NEEDLES = ("Doe^Jane", "MRN12345", "19600101")  # long enough never to occur by chance in base64 or PNG bytes
TEXT_NEEDLES = NEEDLES + ("Doe", "Jane")  # for messages and logs: no piece of the name either


def leaks(text: str | bytes) -> list[str]:
    """Patient values found in ``text``: whole values in bytes, also name parts in text."""
    if isinstance(text, bytes):
        return [n for n in NEEDLES if n.encode() in text]
    return [n for n in TEXT_NEEDLES if n in text]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """A uvicorn server on 127.0.0.1 in a thread; ``with LiveServer(app) as base_url: ...``."""

    def __init__(self, app, port: int | None = None) -> None:
        import uvicorn

        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
