"""The HTTP service: `create_app` turns a `Detector` and a `ServeConfig` into a FastAPI app.

Endpoints (JSON unless said otherwise; every error is ``{"error": {"code", "message"}, "request_id"}``):

* ``POST /v1/detect``: one image as the raw body (``Content-Type: image/*`` or
  ``application/octet-stream``) or as the multipart field ``image``. Query: ``conf`` (one threshold
  for every class; default the model's operating points), ``iou``, ``max_det``, ``classes`` (names or
  ids, comma-separated), ``name`` (the image's name in the answer and the log). Answer: schema
  ``edgevision.detect/1`` with the detections in original image pixels and the image-level
  ``decision`` (``reject`` when any returned detection passes its class's operating point, else
  ``accept``; ``conf`` changes which detections are returned, never the decision rule).
* ``GET /v1/model``: the model's EdgeVision metadata, file hash, providers and the operating points.
* ``GET /healthz``: 200 while the process answers (liveness). ``GET /readyz``: 200 when the model is
  loaded and warmed up, 503 while starting or draining (readiness).
* ``GET /metrics``: Prometheus text (see `edgevision.serve.metrics.Metrics`).

With a token configured, every path except ``/healthz`` needs ``Authorization: Bearer TOKEN``: 401
before anything else is looked at (parameters, body, even unknown paths); ``/readyz`` and
``/openapi.json`` are open only with ``public_info``. Bodies above ``max_body_mb`` get 413 (from
``Content-Length`` before anything is read, or as soon as a chunked body passes the limit); undecodable
or oversized images (sized from the header before decoding, every format), bad or unknown parameters
and multipart bodies with other than one file get 400; other content types 415; a full queue, or more
request bodies in memory than ``(concurrency + max_queue) x max_body_mb``, 503 with ``Retry-After``.
Every client-controlled string written to the log (path, name, file name, client address) is escaped.
Inference runs in worker threads (``concurrency`` at a time) on one shared onnxruntime session, so the
event loop keeps answering probes and metrics while images are inferred. Idle and slow connections,
the connection cap and JSON for malformed HTTP are the protocol's (`edgevision.serve.protocol`).
"""

from __future__ import annotations

import difflib
import hmac
import logging
import re
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgevision import __version__
from edgevision.core.errors import EdgeVisionError
from edgevision.core.io import sha256_file
from edgevision.runtime.detector import Detections, Detector
from edgevision.runtime.images import ImageReadError, ImageTooLargeError, decode_image
from edgevision.serve.config import ServeConfig
from edgevision.serve.metrics import CONTENT_TYPE, Metrics

__all__ = ["DETECT_SCHEMA", "ApiError", "ServiceState", "create_app", "log_escape"]

log = logging.getLogger("edgevision.serve")
access_log = logging.getLogger("edgevision.serve.access")

DETECT_SCHEMA = "edgevision.detect/1"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_RAW_TYPES = ("image/", "application/octet-stream")
_DETECT_PARAMS = ("conf", "iou", "max_det", "classes", "name")
_CLASS_ID = re.compile(r"[0-9]{1,9}")  # ASCII digits only: '²'.isdigit() is True and int('²') fails
OPEN_PATHS = ("/healthz",)
"""Paths served without the token (liveness reveals nothing)."""
INFO_PATHS = ("/readyz", "/openapi.json")
"""Paths that reveal the model (name, sha256) or the API schema: open only with ``public_info``."""
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class ApiError(Exception):
    """An answer other than 200: HTTP status, a stable machine-readable code and a one-line message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class ServiceState:
    """What the endpoints share: the detector, the config, the operating points, counters and readiness."""

    def __init__(self, detector: Detector, config: ServeConfig, token: str | None) -> None:
        self.detector, self.config = detector, config
        self._token = None if token is None else token.encode()
        meta = detector.metadata
        self.sha256 = sha256_file(detector.path)
        decision = meta.decision_thresholds()
        self.operating, self.operating_source, self.operating_rules = \
            decision.classes, decision.source, decision.rules
        self.metrics = Metrics({
            "model": detector.path.name, "sha256": self.sha256, "precision": meta.precision,
            "layout": meta.output.layout, "input_hw": "x".join(map(str, meta.input.size_hw)),
            "classes": str(len(detector.names)), "providers": ",".join(detector.providers),
            "edgevision_version": __version__,
        })
        self.limiter: anyio.CapacityLimiter | None = None
        self.ready = False
        self.draining = False
        self.inflight = 0
        self.served = 0
        # Request bodies are held in memory until decoded: all of them together stay below this many bytes,
        # however many slow clients upload at once (each is also cut by the request timeout).
        self.body_budget = max(config.concurrency + config.max_queue, 4) * config.max_body_bytes
        self.buffered = 0

    # ---------------------------------------------------------------- lifecycle
    def set_ready(self, ready: bool) -> None:
        self.ready = ready
        self.metrics.ready.set(1 if ready and not self.draining else 0)

    def begin_drain(self, why: str) -> None:
        """Called from the signal handler: stop advertising readiness; in-flight requests finish."""
        if not self.draining:
            self.draining = True
            self.metrics.ready.set(0)
            log.info("%s: draining %d in-flight request(s) (up to %g s), then stopping", why, self.inflight,
                     self.config.drain_timeout_s)

    # ---------------------------------------------------------------- auth
    def needs_token(self, path: str) -> bool:
        """Whether ``path`` is refused without the token (every path, unknown ones included, but the open ones)."""
        if self._token is None or path in OPEN_PATHS:
            return False
        return not (self.config.public_info and path in INFO_PATHS)

    def auth_error(self, authorization: str) -> ApiError | None:
        """The 401 for this ``Authorization`` header value, or None when it carries the token."""
        if self._token is None:
            return None
        scheme, _, given = authorization.partition(" ")
        challenge = 'Bearer realm="edgevision"'
        if scheme.lower() != "bearer" or not given.strip():
            return ApiError(401, "unauthorized", "missing bearer token: send 'Authorization: Bearer TOKEN' "
                            "(the token is in the server's --token-file)", {"WWW-Authenticate": challenge})
        if not hmac.compare_digest(given.strip().encode("utf-8", "replace"), self._token):
            return ApiError(401, "unauthorized", "wrong bearer token; use the token in the server's --token-file",
                            {"WWW-Authenticate": challenge + ', error="invalid_token"'})
        return None

    def check_auth(self, request: Request) -> None:
        """Raise the 401 `ApiError` unless ``request`` carries the token (the `_Auth` middleware does this first)."""
        error = self.auth_error(request.headers.get("authorization", ""))
        if error is not None:
            raise error

    # ---------------------------------------------------------------- inference
    def parse_classes(self, classes: str | None) -> list[int | str] | None:
        """The ``classes`` filter: None when absent; names or ids otherwise. Empty, unknown or malformed: 400
        (an empty list would silently turn every ``reject`` into an ``accept``)."""
        if classes is None:
            return None
        names = self.detector.names
        listing = f"the model's classes: {', '.join(f'{i}={n}' for i, n in enumerate(names))}"
        parts = [p.strip() for p in classes.split(",")]
        if not any(parts):
            raise ApiError(400, "bad_parameter", f"classes: empty list; give class names or ids separated by commas "
                           f"({listing}), or leave the parameter out for every class")
        out: list[int | str] = []
        for k, part in enumerate(parts, 1):
            if not part:
                raise ApiError(400, "bad_parameter", f"classes: item {k} of {len(parts)} is empty; give class names "
                               f"or ids separated by single commas ({listing})")
            if part in names:
                out.append(part)
            elif part.isascii() and part.isdigit():
                if not _CLASS_ID.fullmatch(part) or int(part) >= len(names):
                    raise ApiError(400, "bad_parameter", f"classes: id {_clip(part, 12)} is out of range; the model "
                                   f"has {len(names)} classes (0..{len(names) - 1}; {listing})")
                out.append(int(part))
            else:
                close = difflib.get_close_matches(part, names, 1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ApiError(400, "bad_parameter", f"classes: unknown class {_clip(part, 40)!r}{hint}; {listing}")
        return out

    def infer(self, data: bytes, conf: float | None, iou: float | None, max_det: int | None,
              classes: list[int | str] | None) -> tuple[Detections, str, dict[str, float]]:
        """Decode and detect one image (runs in a worker thread). Returns detections, decision, timings (ms)."""
        t0 = time.perf_counter()
        try:  # sized from the header first, for every format: a decompression bomb is never decoded
            image = decode_image(data, max_pixels=self.config.max_pixels)
        except ImageTooLargeError as e:
            h, w = e.header.size_hw
            raise ApiError(400, "image_too_large", f"{e.header.format} image is {w}x{h} = {h * w / 1e6:.1f} MP"
                           + (f" (tiles / frames of {e.header.buffer_pixels / 1e6:.1f} MP)"
                              if e.header.buffer_pixels > h * w else "")
                           + f", above this server's limit of {self.config.max_pixels_mp:g} MP; send a smaller "
                           "image or raise --max-pixels-mp") from None
        except ImageReadError as e:
            raise ApiError(400, "bad_image", f"{e}") from None
        t1 = time.perf_counter()
        op = self.operating
        call_conf: dict[str, float] | None = None if conf is None else {n: min(conf, t) for n, t in op.items()}
        try:
            det = self.detector(image, conf=call_conf, iou=iou, max_det=max_det, classes=classes)
        except ImageReadError as e:
            raise ApiError(400, "bad_image", f"{e}") from None
        except EdgeVisionError as e:  # a request the model cannot honour (our own errors are all bad input)
            raise ApiError(400, "bad_parameter", f"{e}") from None
        t2 = time.perf_counter()
        thr = np.array([op[n] for n in det.names], np.float32)
        passes = det.scores >= thr[det.class_ids] if len(det) else np.zeros(0, bool)
        decision = "reject" if bool(passes.any()) else "accept"
        if conf is not None:
            keep = det.scores >= np.float32(conf)
            det = Detections(det.xyxy[keep], det.scores[keep], det.class_ids[keep], det.names, det.image_size)
        return det, decision, {"decode": (t1 - t0) * 1e3, "detect": (t2 - t1) * 1e3}

    def model_doc(self) -> dict[str, Any]:
        d = self.detector
        return {
            "file": d.path.name, "sha256": self.sha256, "bytes": d.path.stat().st_size,
            "providers": d.providers, "edgevision_version": __version__,
            "operating_points": {"source": self.operating_source, "classes": self.operating,
                                 "rules": self.operating_rules},
            "metadata": d.metadata.to_dict(),
        }


def _error(status: int, code: str, message: str, request_id: str | None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}, "request_id": request_id},
                        status_code=status, headers=headers)


def _request_id(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


def _clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (a client's value quoted in an error message stays short)."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def log_escape(text: str, limit: int = 256) -> str:
    """``text`` safe for one log line: backslash, double quote and every non-printable character (newlines,
    other control and format characters, line separators) escaped, cut to ``limit`` characters."""
    out = []
    for c in text[:limit]:
        if c in '\\"':
            out.append("\\" + c)
        elif c.isprintable():
            out.append(c)
        elif c in "\n\r\t":
            out.append(repr(c)[1:-1])
        else:
            code = ord(c)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out) + ("..." if len(text) > limit else "")


async def _read_body(request: Request, state: ServiceState) -> bytes:
    """The request body, refused with 413 as soon as it passes ``max_body_mb``, with 503 when the bodies held by
    all requests would pass their budget, and with 408 when the connection's receive deadline cuts it."""
    limit = state.config.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"request body is {_clip(declared, 20)} bytes, above this server's limit "
                       f"of {limit} bytes; send a smaller image or raise --max-body-mb")
    from starlette.requests import ClientDisconnect

    chunks, n = [], 0
    try:
        async for chunk in request.stream():
            n += len(chunk)
            if n > limit:
                raise ApiError(413, "too_large", f"request body passed this server's limit of {limit} bytes; "
                               "send a smaller image or raise --max-body-mb")
            if state.buffered + len(chunk) > state.body_budget:
                raise ApiError(503, "overloaded", "too many image uploads in progress at once; retry shortly",
                               {"Retry-After": "1"})
            state.buffered += len(chunk)
            chunks.append(chunk)
    except ClientDisconnect:  # the client went away mid-upload, or was too slow: nothing to answer it with
        if request.scope.get("state", {}).get("receive_timeout"):
            raise ApiError(408, "request_timeout", f"the request was not received within "
                           f"{state.config.request_timeout_s:g} s ({n} bytes of the body arrived)") from None
        raise ApiError(400, "client_disconnected", f"the client closed the connection after {n} bytes of the "
                       "body") from None
    finally:
        state.buffered -= sum(len(c) for c in chunks)
    return b"".join(chunks)


def _printable(text: str) -> str:
    """``text`` without control characters (a name from a client, echoed in the answer)."""
    return "".join(c if c.isprintable() else "?" for c in text)[:256]


async def _image_from_multipart(request: Request, body: bytes) -> tuple[bytes, str | None]:
    """The bytes and file name of the one file of a multipart body (the field ``image``, or any single file).

    Several files (two ``image`` parts included) and an ``image`` field that is text, not a file, are 400: the
    service never picks one of several images for the client.
    """
    from starlette.datastructures import UploadFile

    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=4, max_fields=32)
    except Exception as e:  # starlette raises HTTPException / MultiPartException for malformed bodies
        detail = getattr(e, "detail", None) or getattr(e, "message", None) or e.__class__.__name__
        raise ApiError(400, "bad_multipart", f"multipart body could not be parsed ({_clip(str(detail), 120)}); "
                       "send the image as the form field 'image'") from None
    try:
        files = [(k, v) for k, v in form.multi_items() if isinstance(v, UploadFile)]
        texts = [k for k, v in form.multi_items() if not isinstance(v, UploadFile)]
        if "image" in texts:
            raise ApiError(400, "bad_multipart", "the form field 'image' is text, not a file; send the image file "
                           "(curl -F image=@part.png, with the @)")
        if not files:
            raise ApiError(400, "bad_multipart", "multipart body has no file; send the image as the form field "
                           "'image' (curl -F image=@part.png)")
        if len(files) > 1:
            fields = ", ".join(repr(_clip(k, 40)) for k, _ in files)
            raise ApiError(400, "bad_multipart", f"multipart body has {len(files)} files ({fields}); send one image "
                           "per request as the form field 'image'")
        upload = files[0][1]
        return await upload.read(), upload.filename
    finally:
        await form.close()


class _Observe:
    """ASGI middleware: request id, metrics for every request (401 / 404 / 413 / 500 included), access log."""

    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"x-request-id"), "")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex[:16]
        info = scope.setdefault("state", {})
        info["request_id"] = rid
        status = 500
        t0 = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            status = 500
            info.setdefault("reason", "internal")
            raise
        finally:
            dt = time.perf_counter() - t0
            path = scope.get("path", "")
            self.state.metrics.observe(path, status, dt, info.get("reason"))
            if self.state.config.access_log and path not in ("/healthz", "/readyz", "/metrics"):
                client = scope.get("client")
                extra = f" {info['summary']}" if "summary" in info else ""
                extra += f" ({info['reason']})" if status >= 400 and "reason" in info else ""
                # the path is percent-decoded by the server: '%0A' is a newline here, hence the escaping
                access_log.info('%s "%s %s" %d %.1f ms%s id=%s', log_escape(str(client[0]), 64) if client else "-",
                                log_escape(str(scope.get("method")), 16), log_escape(path), status, dt * 1e3, extra,
                                rid)


class _Auth:
    """ASGI middleware: the bearer token is checked before anything else (parameters, body, routing), so a
    client without it learns nothing about the API but the 401."""

    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] == "http" and self.state.needs_token(scope.get("path", "")):
            given = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"authorization"), "")
            error = self.state.auth_error(given)
            if error is not None:
                info = scope.setdefault("state", {})
                info["reason"] = error.code
                response = _error(error.status, error.code, error.message, info.get("request_id"), error.headers)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _summary_name(name: str) -> str:
    """The image name in the access line: escaped, and quoted when it has spaces (no field can be forged)."""
    escaped = log_escape(name, 128)
    return f'"{escaped}"' if not escaped or " " in escaped else escaped


def create_app(detector: Detector, config: ServeConfig, token: str | None = None) -> FastAPI:
    """The FastAPI app serving ``detector`` (see the module docstring for the endpoints).

    Args:
        detector: a loaded `Detector` (shared by the worker threads; it holds no mutable state).
        config: limits and knobs (`ServeConfig`); ``model``, ``host`` and ``port`` are not used here.
        token: the bearer token, or None for no authentication.
    """
    state = ServiceState(detector, config, token)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        state.limiter = anyio.CapacityLimiter(config.concurrency)
        state.set_ready(True)
        log.info("ready: %s (%s, %d classes, input %s, providers %s), concurrency %d, queue %d",
                 detector.path, detector.metadata.precision, len(detector.names),
                 "x".join(map(str, detector.metadata.input.size_hw)), ",".join(detector.providers),
                 config.concurrency, config.max_queue)
        yield
        state.set_ready(False)

    # The interactive docs pages load their scripts from a CDN, which a factory network does not reach:
    # only the machine-readable /openapi.json is served.
    app = FastAPI(title="EdgeVision detection service", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.service = state
    app.add_middleware(_Auth, state=state)
    app.add_middleware(_Observe, state=state)  # added last: outermost, so it also sees the 401s

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        request.state.reason = e.code
        return _error(e.status, e.code, e.message, _request_id(request), e.headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_parameter(request: Request, e: RequestValidationError) -> JSONResponse:
        request.state.reason = "bad_parameter"
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "query")
        return _error(400, "bad_parameter", f"{where}: {first.get('msg', 'invalid value')} (got "
                      f"{_clip(repr(first.get('input')), 60)})", _request_id(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, f"http_{e.status_code}")
        request.state.reason = code
        message = (f"no endpoint {_clip(request.url.path, 80)}; the endpoints are POST /v1/detect, GET /v1/model, "
                   "/healthz, /readyz, /metrics" if e.status_code == 404 else str(e.detail))
        return _error(e.status_code, code, message, _request_id(request), dict(e.headers or {}))

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception) -> JSONResponse:
        # One record, one traceback: the code locations, then the exception's text escaped (it may quote the client).
        stack = "".join(traceback.format_tb(e.__traceback__)).rstrip()
        log.error("internal error on %s %s (request %s): %s: %s\n%s", log_escape(request.method, 16),
                  log_escape(request.url.path), _request_id(request), type(e).__name__, log_escape(str(e), 500), stack)
        return _error(500, "internal", "internal error; the server log has the details under this request id",
                      _request_id(request))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        status = "draining" if state.draining else "ready" if state.ready else "starting"
        return JSONResponse({"status": status, "model": detector.path.name, "sha256": state.sha256},
                            status_code=200 if status == "ready" else 503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        state.check_auth(request)
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/model")
    async def model(request: Request) -> dict[str, Any]:
        state.check_auth(request)
        return state.model_doc()

    @app.post("/v1/detect")
    async def detect(
        request: Request,
        conf: float | None = Query(None, ge=0.0, le=1.0, description="One threshold for every class."),
        iou: float | None = Query(None, ge=0.0, le=1.0, description="NMS IoU threshold."),
        max_det: int | None = Query(None, ge=1, le=10000, description="Most detections returned."),
        classes: str | None = Query(None, max_length=4096,
                                    description="Class names or ids to keep, comma-separated (not empty)."),
        name: str | None = Query(None, max_length=256, description="The image's name in the answer and the log."),
    ) -> JSONResponse:
        state.check_auth(request)
        _check_query(request)
        if not state.ready:
            raise ApiError(503, "not_ready", "the service is starting; retry when /readyz answers 200",
                           {"Retry-After": "1"})
        t0 = time.perf_counter()
        state.inflight += 1
        state.metrics.inflight.inc()
        try:
            wanted = state.parse_classes(classes)
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype and ctype != "multipart/form-data" and not ctype.startswith(_RAW_TYPES):
                raise ApiError(415, "unsupported_media_type", f"Content-Type {_clip(ctype, 60)} is not an image; send "
                               "the image bytes as the body (image/png, image/jpeg, application/octet-stream) or as "
                               "the multipart form field 'image'")
            body = await _read_body(request, state)
            filename = None
            if ctype == "multipart/form-data":
                body, filename = await _image_from_multipart(request, body)
            if not body:
                raise ApiError(400, "bad_image", "empty body; send the image bytes (PNG, JPEG, BMP, TIFF)")
            assert state.limiter is not None
            if state.limiter.statistics().tasks_waiting >= config.max_queue and state.limiter.available_tokens < 1:
                raise ApiError(503, "overloaded", f"{config.max_queue} request(s) already wait for inference; "
                               "retry shortly", {"Retry-After": "1"})
            t_queue = time.perf_counter()
            async with state.limiter:
                state.metrics.queue_wait.observe(time.perf_counter() - t_queue)
                t_inf = time.perf_counter()
                det, decision, timing = await anyio.to_thread.run_sync(
                    state.infer, body, conf, iou, max_det, wanted)
                state.metrics.inference.observe(time.perf_counter() - t_inf)
        finally:
            state.inflight -= 1
            state.metrics.inflight.dec()
        state.served += 1
        state.metrics.count_result(decision, det.class_names)
        shown = _printable(name or filename or "image")
        request.state.summary = f"{_summary_name(name or filename or 'image')} {decision} {len(det)} det"
        doc = {
            "schema": DETECT_SCHEMA,
            "request_id": _request_id(request),
            "model": {"file": detector.path.name, "sha256": state.sha256, "precision": detector.metadata.precision},
            "image": {"name": shown, "bytes": len(body)},
            "decision": decision,
            "thresholds": {"decision": state.operating_source,
                           "detections": state.operating_source if conf is None else f"conf {conf:g} (request)"},
            **det.to_dict(),
            "timing_ms": {**{k: round(v, 3) for k, v in timing.items()},
                          "total": round((time.perf_counter() - t0) * 1e3, 3)},
        }
        return JSONResponse(doc)

    return app


def _check_query(request: Request) -> None:
    """Unknown or repeated query parameters are 400 (a typo such as ``cof=0.1`` must not be ignored silently)."""
    seen: set[str] = set()
    for key, _ in request.query_params.multi_items():
        if key not in _DETECT_PARAMS:
            close = difflib.get_close_matches(key, _DETECT_PARAMS, 1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ApiError(400, "bad_parameter", f"unknown query parameter {_clip(key, 40)!r}{hint}; the parameters "
                           f"are {', '.join(_DETECT_PARAMS)}")
        if key in seen:
            raise ApiError(400, "bad_parameter", f"{key}: given more than once; give each parameter once")
        seen.add(key)
