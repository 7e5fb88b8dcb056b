"""REST API: ``POST /v1/detect``, ``/v1/compare``, ``/v1/explain``, ``/v1/study``, ``GET /healthz`` (FastAPI).

Uploads are multipart. Before anything is decoded a request passes, in order:

1. the body limit (``Content-Length``, and a byte count of the stream when it has none) -> 413;
2. admission: at most ``max_concurrent`` jobs run in the model's worker threads and ``max_waiting``
   wait; one more is answered ``503`` with ``Retry-After`` instead of piling up;
3. the sanity checks of :mod:`medic_ad.serve.sanity` (magic bytes, header size, pixels, pair).

Each job has a deadline (``timeout_s``): past it the client gets ``503`` (reason ``timeout``) while
the job's slot stays taken until the thread really finishes, so a slow model cannot over-fill the
queue. Every error is JSON ``{"error": "...", "reason": "..."}``; no traceback is ever sent. The
uploader's file name is never read, echoed or logged.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from medic_ad.models.results import Detection
from medic_ad.serve.sanity import Limits, SanityError
from medic_ad.serve.service import Service
from medic_ad.serve.uploads import is_zip

__all__ = ["Admission", "ServeSettings", "create_app"]

log = logging.getLogger("medic_ad.serve.api")

#: room for the multipart framing and the form fields around the uploaded files
_FORM_SLACK = 256 * 1024
STUDY_PATH = "/v1/study"

_STATUS_REASON = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 408: "timeout",
                  413: "too_large", 415: "not_an_image", 422: "invalid_request", 503: "overloaded"}


@dataclass(frozen=True)
class ServeSettings:
    """Limits of the server. ``max_concurrent`` model jobs at once, ``max_waiting`` more queued."""

    limits: Limits = field(default_factory=Limits)
    timeout_s: float = 60.0
    max_concurrent: int = 1
    max_waiting: int = 8
    retry_after_s: int = 5

    @property
    def max_body(self) -> int:
        return 2 * self.limits.max_bytes + _FORM_SLACK  # two images and the form fields

    @property
    def max_study_body(self) -> int:
        """The body limit of ``POST /v1/study``: one study upload (all its files, or its zip) and the form fields."""
        return self.limits.max_study_upload_bytes + _FORM_SLACK

    def body_limits(self) -> dict[str, tuple[int, str]]:
        """Per path, the body limit that replaces ``max_body`` and how a 413's message names it."""
        return {STUDY_PATH: (self.max_study_body, f"study upload limit ({self.limits.max_study_upload_bytes} "
                                                  f"bytes, and {_FORM_SLACK} for the form fields)")}

    def body_limit_name(self) -> str:
        """How a 413's message names ``max_body``."""
        return f"upload limit (2 x {self.limits.max_bytes} bytes, and {_FORM_SLACK} for the form fields)"


class Admission:
    """A bounded queue in front of the model's worker threads.

    ``try_submit`` returns None when ``max_concurrent + max_waiting`` jobs are already admitted; a
    slot is freed when its job's thread finishes (not when its client gives up).
    """

    def __init__(self, max_concurrent: int, max_waiting: int) -> None:
        if max_concurrent < 1 or max_waiting < 0:
            raise ValueError("max_concurrent must be >= 1 and max_waiting >= 0")
        self.capacity = max_concurrent + max_waiting
        self._admitted = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="medic-ad-model")

    @property
    def admitted(self) -> int:
        return self._admitted

    def try_submit(self, fn: Callable[[], Any]) -> Future | None:
        with self._lock:
            if self._admitted >= self.capacity:
                return None
            self._admitted += 1
        try:
            future = self._pool.submit(fn)
        except RuntimeError:  # pool shut down
            self._release(None)
            return None
        future.add_done_callback(self._release)
        return future

    def _release(self, _future: Future | None) -> None:
        with self._lock:
            self._admitted -= 1

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class _Internal(Exception):
    pass


class _Overloaded(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# ------------------------------------------------------------------------------------------ response models


class ErrorResponse(BaseModel):
    error: str
    reason: str


class ImageInfo(BaseModel):
    format: str
    modality: str | None = None
    height: int
    width: int
    spacing_mm: list[float] | None = None
    photometric: str | None = None
    n_frames: int = 1
    orientation: str | None = None


class DetectResponse(BaseModel):
    answer: str
    abnormal: bool
    score: float
    image: ImageInfo
    overlay_png: str | None = None


class HeatmapStats(BaseModel):
    min: float
    max: float
    mean: float
    peak_row_col: list[int]


class ExplainResponse(DetectResponse):
    heatmap: HeatmapStats
    heatmap_png: str | None = None


class ChangeStats(BaseModel):
    min: float
    max: float
    mean: float
    worse_fraction: float
    better_fraction: float


class CompareResponse(BaseModel):
    label: Literal["worsened", "improved", "no change"]
    answer: str
    probs: dict[str, float]
    change_map: ChangeStats
    prior: ImageInfo
    current: ImageInfo
    sidebyside_png: str | None = None


class SliceScore(BaseModel):
    index: int
    score: float
    overlay_png: str | None = None


class StudyResponse(BaseModel):
    """The ``studies.jsonl`` row (no patient field), then the answer, every scored slice and what the upload held."""

    study_uid: str
    series_uid: str
    n_slices: int
    score: float
    abnormal: bool
    key_slice_index: int
    key_sop_uid: str | None = None
    status: Literal["ok"]
    reason: str | None = None
    answer: str
    modality: str | None = None
    score_rule: str
    slices: list[SliceScore]
    series_found: int
    files_read: int
    files_skipped: int
    notes: list[str]


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in ((413, "upload or image too large"), (415, "not an image"),
                       (422, "refused by the sanity checks, or an invalid form"),
                       (503, "overloaded or timed out; see Retry-After"))
}
_PNG = {"content": {"image/png": {}}, "description": "JSON, or the picture itself with ?format=png"}


# ------------------------------------------------------------------------------------------ body limit


class BodyLimit:
    """ASGI middleware: refuse bodies over ``max_body`` bytes before they are parsed; a path in
    ``per_path`` (path -> (limit, its name)) has its own limit, which its 413 names."""

    def __init__(self, app: Any, max_body: int, per_path: dict[str, tuple[int, str]] | None = None,
                 name: str | None = None) -> None:
        self.app = app
        self.max_body = max_body
        self.per_path = dict(per_path or {})
        self.name = name or f"limit of {max_body} bytes"

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_body, name = self.per_path.get(str(scope.get("path", "")).rstrip("/") or "/",
                                           (self.max_body, self.name))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > max_body
            except ValueError:
                too_big = False
            if too_big:
                await self._refuse(send, f"request body of {int(declared)} bytes is over the {name}")
                return
        seen = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_body:
                    raise StarletteHTTPException(413, f"request body is over the {name}")
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except StarletteHTTPException as exc:
            if exc.status_code != 413 or started:
                raise
            await self._refuse(send, str(exc.detail))

    @staticmethod
    async def _refuse(send: Callable, message: str) -> None:
        response = JSONResponse({"error": message, "reason": "too_large"}, status_code=413,
                                headers={"Connection": "close"})
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> dict:
    return {"type": "http.disconnect"}


# ------------------------------------------------------------------------------------------ app


def create_app(service: Service, settings: ServeSettings | None = None, *, api: bool = True,
               ui: bool = False) -> FastAPI:
    """The FastAPI app: the REST API (``api``) and/or the Gradio UI mounted at ``/ui`` (``ui``)."""
    settings = settings or ServeSettings()
    if service.limits != settings.limits:
        service = service.with_limits(settings.limits)  # the settings' limits rule; the model is shared
    admission = Admission(settings.max_concurrent, settings.max_waiting)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        admission.shutdown()

    app = FastAPI(
        title="MEDIC-AD",
        version="1",
        description="Detect, compare and explain medical images with MEDIC-AD. Uploads are multipart; the format "
                    "is sniffed from the bytes. Errors are JSON `{error, reason}`. Research use only: not a "
                    "medical device.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.settings = settings
    app.state.admission = admission
    app.add_middleware(BodyLimit, max_body=settings.max_body, per_path=settings.body_limits(),
                       name=settings.body_limit_name())
    _install_error_handlers(app)

    async def run_job(endpoint: str, job: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        future = admission.try_submit(job)
        if future is None:
            log.warning("%s: 503 overloaded (%d admitted)", endpoint, admission.admitted)
            raise _Overloaded("overloaded", f"the server is busy ({admission.capacity} requests already running "
                                            "or queued); retry later")
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), timeout=settings.timeout_s)
        except asyncio.TimeoutError:
            log.warning("%s: 503 timeout after %.1f s", endpoint, settings.timeout_s)
            raise _Overloaded("timeout", f"no answer within {settings.timeout_s:g} s; retry later") from None
        except SanityError as exc:
            log.info("%s: %d refused (%s) in %.2f s", endpoint, exc.status_code, exc.reason,
                     time.perf_counter() - started)
            raise
        except ValueError as exc:  # this code base's convention: a ValueError is about the input
            log.info("%s: 422 unprocessable (%s)", endpoint, type(exc).__name__)
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
            raise SanityError("unprocessable", first) from None
        except Exception as exc:
            # the type and the frames for the operator; the message is left out (it could quote input)
            log.error("%s: internal error %s at %s", endpoint, type(exc).__name__,
                      " <- ".join(f"{f.name}:{f.lineno}" for f in reversed(traceback.extract_tb(exc.__traceback__))))
            raise _Internal() from None
        log.info("%s: 200 in %.2f s", endpoint, time.perf_counter() - started)
        return result

    if api:
        _add_routes(app, service, settings, run_job)

    @app.get("/healthz", tags=["health"], summary="liveness and queue state")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "model_loaded": service.model_loaded, "admitted": admission.admitted,
                "capacity": admission.capacity}

    if ui:
        import gradio as gr

        from medic_ad.serve.ui import build_ui

        blocks = build_ui(service, max_waiting=settings.max_waiting)
        # Gradio's one file-size cap must let a study's zip through; the service applies each tab's own limit
        biggest = max(settings.limits.max_bytes, settings.limits.max_study_upload_bytes)
        gr.mount_gradio_app(app, blocks, path="/ui", footer_links=[], max_file_size=biggest)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/" if ui else "/docs")

    return app


async def _read_upload(upload: UploadFile | None, field_name: str, limits: Limits, *, max_bytes: int | None = None,
                       limit_name: str = "upload limit") -> bytes:
    """The upload's bytes, at most ``max_bytes`` (default ``limits.max_bytes``): over it, one ``too_large``
    naming the limit, read no further."""
    if upload is None:
        raise SanityError("empty_file", "no file uploaded", name=field_name)
    cap = limits.max_bytes if max_bytes is None else max_bytes
    data = await upload.read(cap + 1)
    if len(data) > cap:
        raise SanityError("too_large", f"over the {cap}-byte {limit_name}", name=field_name)
    return data


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _add_routes(app: FastAPI, service: Service, settings: ServeSettings, run_job: Callable) -> None:
    from medic_ad.serve.overlay import comparison_png, heatmap_png, overlay_png

    limits = settings.limits
    fmt_query = Query("json", description="`json` (default) or `png`: the picture alone")
    alpha_query = Query(0.5, ge=0.0, le=1.0, description="heatmap opacity in pictures")
    frame_form = Form(None, ge=0, description="frame of a multi-frame DICOM / volume of a 4-D NIfTI")
    slice_form = Form(None, ge=0, description="NIfTI slice along `axis` (default: middle)")
    axis_form = Form(2, ge=0, le=2, description="NIfTI axis: 0 sagittal, 1 coronal, 2 axial")

    @app.post("/v1/detect", tags=["v1"], response_model=DetectResponse, response_model_exclude_none=True,
              responses={**_ERRORS, 200: _PNG}, summary="Is there any abnormality? answer + score")
    async def detect(
        image: UploadFile = File(..., description="PNG, JPEG, TIFF, DICOM or NIfTI"),
        frame: int | None = frame_form,
        slice: int | None = slice_form,  # noqa: A002 - the form field's public name
        axis: int = axis_form,
        format: Literal["json", "png"] = fmt_query,  # noqa: A002
        overlay: bool = Query(False, description="also return the heatmap overlay (base64 PNG)"),
        alpha: float = alpha_query,
    ) -> Any:
        data = await _read_upload(image, "image", limits)
        want_png = overlay or format == "png"

        def job() -> tuple[dict[str, Any], bytes | None]:
            img = service.load(data, name="image", frame=frame, slice_index=slice, axis=axis)
            if not want_png:
                return service.detect([img])[0].to_dict(), None
            exp = service.explain(img)
            title = f"{'abnormal' if exp.abnormal else 'normal'} (score {exp.score:.2f})"
            return Detection.to_dict(exp), overlay_png(img, exp.heatmap, alpha=alpha, title=title)

        result, png = await run_job("detect", job)
        if format == "png":
            return Response(png, media_type="image/png")
        if png is not None:
            result["overlay_png"] = _b64(png)
        return result

    @app.post("/v1/explain", tags=["v1"], response_model=ExplainResponse, response_model_exclude_none=True,
              responses={**_ERRORS, 200: _PNG}, summary="Heatmap overlay + answer + score")
    async def explain(
        image: UploadFile = File(..., description="PNG, JPEG, TIFF, DICOM or NIfTI"),
        frame: int | None = frame_form,
        slice: int | None = slice_form,  # noqa: A002
        axis: int = axis_form,
        format: Literal["json", "png"] = fmt_query,  # noqa: A002
        alpha: float = alpha_query,
        heatmap: bool = Query(False, description="also return the raw heatmap as 8-bit grey PNG (base64)"),
    ) -> Any:
        data = await _read_upload(image, "image", limits)

        def job() -> tuple[dict[str, Any], bytes, bytes | None]:
            img = service.load(data, name="image", frame=frame, slice_index=slice, axis=axis)
            exp = service.explain(img)
            title = f"{'abnormal' if exp.abnormal else 'normal'} (score {exp.score:.2f})"
            raw = heatmap_png(exp.heatmap) if heatmap else None
            return exp.to_dict(), overlay_png(img, exp.heatmap, alpha=alpha, title=title), raw

        result, png, raw = await run_job("explain", job)
        if format == "png":
            return Response(png, media_type="image/png")
        result["overlay_png"] = _b64(png)
        if raw is not None:
            result["heatmap_png"] = _b64(raw)
        return result

    @app.post("/v1/compare", tags=["v1"], response_model=CompareResponse, response_model_exclude_none=True,
              responses={**_ERRORS, 200: _PNG},
              summary="Worsened / improved / no change between two studies, with the change map")
    async def compare(
        prior: UploadFile = File(..., description="the earlier study"),
        current: UploadFile = File(..., description="the later study"),
        region: str | None = Form(None, description="region named in the question, e.g. 'left lower lung zone'"),
        frame: int | None = frame_form,
        slice: int | None = slice_form,  # noqa: A002
        axis: int = axis_form,
        format: Literal["json", "png"] = fmt_query,  # noqa: A002
        alpha: float = alpha_query,
    ) -> Any:
        prior_data = await _read_upload(prior, "prior", limits)
        current_data = await _read_upload(current, "current", limits)

        def job() -> tuple[dict[str, Any], bytes]:
            a = service.load(prior_data, name="prior", frame=frame, slice_index=slice, axis=axis)
            b = service.load(current_data, name="current", frame=frame, slice_index=slice, axis=axis)
            res = service.compare(a, b, region=region)
            title = f"{res.label} (p = {res.probs[res.label]:.2f})"
            return res.to_dict(), comparison_png(a, b, res.prior_map, res.current_map, change=res.change,
                                                 alpha=alpha, title=title)

        result, png = await run_job("compare", job)
        if format == "png":
            return Response(png, media_type="image/png")
        result["sidebyside_png"] = _b64(png)
        return result

    @app.post(STUDY_PATH, tags=["v1"], response_model=StudyResponse, responses={**_ERRORS, 200: _PNG},
              summary="One study (a series' files, or a zip of them): study answer, score, key slice, slice scores")
    async def study(
        files: list[UploadFile] | None = File(None, description="the series' files: DICOM slices, a multi-frame "
                                                                 "DICOM or a NIfTI volume"),
        zip: UploadFile | None = File(None, description="a zip of the series' files"),  # noqa: A002
        slices: str = Form("all", description="`all`, or N evenly spaced slices"),
        window: str | None = Form(None, description="CT window: a name (brain, lung, ...) or centre/width, "
                                                    "e.g. `40/80`"),
        score: str = Form("max", description="`max` or `topk_mean:K`: the study score from the slice scores"),
        series_uid: str | None = Form(None, description="the series to read when the study has several "
                                                        "(default: the largest)"),
        format: Literal["json", "png"] = Query("json", description="`json` (default) or `png`: the key slice's "
                                                                   "overlay alone"),  # noqa: A002
        overlays: Literal["none", "key", "all"] = Query("none", description="overlay PNGs (base64) in `slices`: "
                                                                            "none, the key slice's, or every one"),
        alpha: float = alpha_query,
    ) -> Any:
        if files and zip is not None:
            raise SanityError("bad_option", "send the series as `files` or as one `zip`, not both", name="study")
        # each file is one image (max_bytes); together, or as one zip, the study upload limit
        uploads, total = [], 0
        for f in files or []:
            data = await _read_upload(f, "files", limits)
            total += len(data)
            if total > limits.max_study_upload_bytes:
                raise SanityError("too_large", f"the study's files are over the {limits.max_study_upload_bytes}-byte "
                                               "study upload limit", name="files")
            uploads.append(data)
        if zip is not None:
            data = await _read_upload(zip, "zip", limits, max_bytes=limits.max_study_upload_bytes,
                                      limit_name="study upload limit")
            if not is_zip(data):
                raise SanityError("bad_archive", "not a zip archive", name="zip")
            uploads.append(data)
        if not uploads:
            raise SanityError("empty_file", "no file uploaded: send `files` or a `zip`", name="study")
        draw = "key" if format == "png" else overlays

        def job() -> tuple[dict[str, Any], dict[int, bytes]]:
            res = service.study(uploads, slices=slices, window=window, score=score, series_uid=series_uid,
                                heatmaps=draw != "none")
            chosen = [] if draw == "none" else [res.key] if draw == "key" else range(len(res.images))
            return res.to_dict(), {k: res.overlay_png(k, alpha=alpha) for k in chosen}

        result, pngs = await run_job("study", job)
        if format == "png":
            return Response(next(iter(pngs.values())), media_type="image/png")
        for k, png in pngs.items():
            result["slices"][k]["overlay_png"] = _b64(png)
        return result


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SanityError)
    async def _sanity(_request: Request, exc: SanityError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.status_code)

    @app.exception_handler(_Overloaded)
    async def _overloaded(_request: Request, exc: _Overloaded) -> JSONResponse:
        retry = str(app.state.settings.retry_after_s)
        return JSONResponse({"error": str(exc), "reason": exc.reason}, status_code=503, headers={"Retry-After": retry})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = _STATUS_REASON.get(exc.status_code, "bad_request" if exc.status_code < 500 else "internal")
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 400 and "parsing the body" in detail:
            detail = "malformed multipart body"
        return JSONResponse({"error": detail, "reason": reason}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:3]:
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query"))
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
        return JSONResponse({"error": "invalid request: " + "; ".join(parts), "reason": "invalid_request"},
                            status_code=422)

    @app.exception_handler(_Internal)
    async def _internal(_request: Request, _exc: _Internal) -> JSONResponse:
        return JSONResponse({"error": "internal error; the server log names it", "reason": "internal"},
                            status_code=500)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error %s at %s", type(exc).__name__,
                  " <- ".join(f"{f.name}:{f.lineno}" for f in reversed(traceback.extract_tb(exc.__traceback__))))
        return JSONResponse({"error": "internal error; the server log names it", "reason": "internal"},
                            status_code=500)
