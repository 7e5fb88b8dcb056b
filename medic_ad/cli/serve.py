"""``medic-ad serve [--api] [--ui] [--host 127.0.0.1] [--port 8000]``: the REST API and/or the web UI.

With neither ``--api`` nor ``--ui`` both are served: the API under ``/v1`` (OpenAPI at ``/docs``) and
the UI at ``/ui``. The server binds the loopback address unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

log = logging.getLogger("medic_ad.serve")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the REST API and/or the web UI",
                       description="Serve MEDIC-AD over HTTP: the REST API (/v1/detect, /v1/compare, /v1/explain, "
                                   "/healthz, OpenAPI at /docs) and the Gradio web UI (/ui). Both by default.")
    p.add_argument("--api", action="store_true", help="serve the REST API")
    p.add_argument("--ui", action="store_true", help="serve the web UI at /ui")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--model", metavar="DIR", help="MEDIC-AD checkpoint folder (default: $MEDIC_AD_MODEL or the "
                                                  "demo's runs/demo/checkpoint)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--max-upload-mb", type=float, default=64.0,
                   help="largest image upload, and largest file of a study, in MiB (default: 64)")
    p.add_argument("--max-study-upload-mb", type=float, default=512.0,
                   help="largest study upload (all its files, or its zip) in MiB (default: 512)")
    p.add_argument("--max-pixels", type=int, default=50_000_000, help="largest image in pixels (default: 50e6)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request before 503 (default: 60)")
    p.add_argument("--max-concurrent", type=int, default=1, help="model jobs at once (default: 1)")
    p.add_argument("--max-waiting", type=int, default=8, help="jobs queued before 503 (default: 8)")
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace):
    from medic_ad.serve.api import ServeSettings
    from medic_ad.serve.sanity import Limits

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be 1-65535, got {args.port}")
    if args.max_upload_mb <= 0 or args.max_study_upload_mb <= 0 or args.max_pixels <= 0 or args.timeout <= 0:
        raise ValueError("--max-upload-mb, --max-study-upload-mb, --max-pixels and --timeout must be positive")
    if args.max_concurrent < 1 or args.max_waiting < 0:
        raise ValueError("--max-concurrent must be at least 1 and --max-waiting at least 0")
    limits = Limits(max_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=args.max_pixels,
                    max_study_upload_bytes=int(args.max_study_upload_mb * 1024 * 1024))
    return ServeSettings(limits=limits, timeout_s=args.timeout, max_concurrent=args.max_concurrent,
                         max_waiting=args.max_waiting)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from medic_ad.serve.api import create_app
    from medic_ad.serve.service import Service

    settings = settings_from_args(args)
    api, ui = (args.api, args.ui) if (args.api or args.ui) else (True, True)
    service = Service.from_checkpoint(args.model, device=args.device, limits=settings.limits)
    app = create_app(service, settings, api=api, ui=ui)
    if not _is_loopback(args.host):
        print(f"medic-ad: warning: binding {args.host}: the server is reachable from other machines and has no "
              "authentication; put it behind an authenticating proxy", file=sys.stderr)
    base = f"http://{args.host}:{args.port}"
    parts = ([f"API {base}/v1 (docs {base}/docs)"] if api else []) + ([f"UI {base}/ui/"] if ui else [])
    print("medic-ad serve: " + ", ".join(parts), file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning")
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
