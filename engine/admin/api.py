"""The relay's admin API: a Starlette app over a `Control`, and a uvicorn server inside the relay's loop.

Routes (see `docs/admin-api.md` and `engine.admin.openapi`): `GET /v1/config`, `POST /v1/plan`,
`POST /v1/apply`, `GET /v1/status`, `GET /v1/audit`, `GET /openapi.json` and, without
authentication, `GET /healthz`.

The API does not decide what a config means; the relay does (`Control`). The API's jobs:
authenticate (`Authorization: Bearer`, compared in constant time: missing → 401, wrong →
403), bound request bodies (413), run one apply at a time (an asyncio lock) and refuse a
stale base before the relay is asked (409; Caddy-style `If-Match: "<hash>"` → 412),
write one audit record per apply attempt, and turn each `ErrorCode` into its HTTP status.
Every error is JSON: `{"error": <code>, "detail": <words>, ...}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from array import array
from collections.abc import Iterator
from datetime import datetime
from itertools import accumulate
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.admin.audit import Audit, AuditRecord
from engine.admin.contract import (
    HTTP_STATUS,
    ApplyRequest,
    ApplyResult,
    Control,
    ErrorCode,
    WireError,
)
from engine.admin.openapi import openapi_document
from engine.admin.token import same_token, token_id

__all__ = ["MAX_BODY", "OPEN_PATHS", "make_app", "serve_admin", "stop_admin"]

MAX_BODY = 10 * 1024 * 1024  # a config is a few hundred KB at most; 10 MiB leaves room for certificates
MAX_AUDIT_LIMIT = 10_000
OPEN_PATHS = frozenset({"/healthz"})

log = logging.getLogger(__name__)

_ERROR_NAMES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


class ApiError(Exception):
    """An HTTP error with a code and a detail; `extra` goes into the JSON body beside them."""

    def __init__(self, status: int, error: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.extra = status, error, detail, extra


def _error(status: int, error: str, detail: str, headers: dict | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status, headers=headers)


class BearerAuth:
    """ASGI middleware: every path but `open_paths` needs `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: str, open_paths: frozenset[str] = OPEN_PATHS) -> None:
        self.app, self.token, self.open_paths = app, token, open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        presented = _bearer(scope)
        if presented is None:
            response = _error(
                401,
                "unauthorized",
                "this API needs `Authorization: Bearer <token>` (the token is in <data_dir>/admin.token)",
                headers={"WWW-Authenticate": 'Bearer realm="sealrelay"'},
            )
        elif not same_token(presented, self.token):
            client = scope.get("client") or ("?", 0)
            log.warning("admin API: wrong token from %s for %s %s", client[0], scope["method"], scope["path"])
            response = _error(403, "forbidden", "the bearer token is not this relay's admin token")
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
            return None
    return None


class _AdminApi:
    """The handlers, sharing the control, the audit log and the apply lock."""

    def __init__(self, control: Control, token: str, audit: Audit, max_body: int) -> None:
        self.control, self.audit, self.max_body = control, audit, max_body
        self.who = token_id(token)
        self.apply_lock = asyncio.Lock()

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def get_config(self, request: Request) -> Response:
        running = self.control.running()
        etag = f'"{running.hash}"'
        if _etag_matches(request.headers.get("if-none-match"), running.hash):
            return Response(status_code=304, headers={"ETag": etag})
        return JSONResponse(running.to_json(), headers={"ETag": etag})

    async def get_status(self, request: Request) -> Response:
        return JSONResponse(self.control.status().to_json())

    async def get_audit(self, request: Request) -> Response:
        limit = _int_param(request, "limit", 100, 1, MAX_AUDIT_LIMIT)
        since = request.query_params.get("since")
        if since is not None:
            try:
                since = datetime.fromisoformat(since)
            except ValueError:
                raise ApiError(400, "bad_request", f"`since` is not an ISO 8601 time: {since!r}") from None
        records = await asyncio.to_thread(self.audit.read, limit, since)
        return JSONResponse({"records": [r.to_json() for r in records]})

    async def get_portal_audit(self, request: Request) -> Response:
        limit = _int_param(request, "limit", 100, 1, MAX_AUDIT_LIMIT)
        since = request.query_params.get("since")
        try:
            start = datetime.fromisoformat(since).timestamp() if since else 0.0
        except ValueError:
            raise ApiError(400, "bad_request", f"`since` is not an ISO 8601 time: {since!r}") from None
        address, event = request.query_params.get("address"), request.query_params.get("event")
        events = await asyncio.to_thread(self.control.portal_events, start, address, event, limit)
        if events is None:
            raise ApiError(404, "not_found", "no secure portal runs in this relay")
        return JSONResponse({"events": events})

    async def post_plan(self, request: Request) -> Response:
        body = await self._json_body(request)
        if not isinstance(body, dict) or set(body) != {"config"} or not isinstance(body["config"], dict):
            raise ApiError(400, "bad_request", 'the body must be {"config": {...}}')
        result = await self.control.plan(body["config"])
        if result.ok:
            return JSONResponse(result.to_json())
        code = result.error or ErrorCode.INVALID
        return _error(
            HTTP_STATUS.get(code, 500),
            code,
            result.detail or code,
            running_version=result.base_version,
            diagnostics=list(result.diagnostics),
            result=result.to_json(),
        )

    async def post_apply(self, request: Request) -> Response:
        body = await self._json_body(request)
        try:
            apply = ApplyRequest.from_json(body)
        except WireError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        async with self.apply_lock:
            running = self.control.running()
            if_match = request.headers.get("if-match")
            if if_match is not None and not _etag_matches(if_match, running.hash):
                detail = f"If-Match {if_match} is not the running config {running.hash} (version {running.version})"
                await self._record(apply, ApplyResult.refused("precondition_failed", detail, version=running.version))
                return _error(412, "precondition_failed", detail, running_version=running.version, hash=running.hash)
            if apply.base_version != running.version:
                result = ApplyResult.refused(
                    ErrorCode.STALE_BASE,
                    f"planned against version {apply.base_version} but the relay runs version "
                    f"{running.version}: plan again",
                    version=running.version,
                )
            else:
                result = await self._apply(apply, running.version)
            audit_error = await self._record(apply, result)
        return self._apply_response(result, audit_error)

    async def _apply(self, apply: ApplyRequest, running_version: int) -> ApplyResult:
        try:
            return await self.control.apply(apply, self.who)
        except Exception as exc:  # the relay's bug must not take the API down; it keeps its old config
            log.exception("admin API: apply raised")
            return ApplyResult.refused(
                ErrorCode.APPLY_FAILED, f"the relay failed: {type(exc).__name__}: {exc}", version=running_version
            )

    async def _record(self, apply: ApplyRequest, result: ApplyResult) -> str | None:
        """Append the audit record; the error in words if it could not be made durable."""
        if result.ok:
            outcome = "applied" if result.changed else "unchanged"
        else:
            outcome = "failed" if result.error == ErrorCode.APPLY_FAILED else "refused"
        record = AuditRecord(
            who=self.who,
            from_version=result.previous_version,
            to_version=result.version,
            result=outcome,
            commit=apply.commit,
            hash=self.control.running().hash,
            reason=apply.reason,
            allow_downgrade=apply.allow_downgrade,
            summary=result.summary,
            error=result.error,
            detail=result.detail,
        )
        try:
            await asyncio.to_thread(self.audit.append, record)
        except OSError as exc:
            log.error("admin API: the audit record could not be written to %s: %s", self.audit.path, exc)
            return f"{type(exc).__name__}: {exc}"
        return None

    def _apply_response(self, result: ApplyResult, audit_error: str | None) -> Response:
        extra = {"audit_error": audit_error} if audit_error else {}
        if result.ok:
            return JSONResponse({**result.to_json(), **extra})
        code = result.error or ErrorCode.APPLY_FAILED
        return _error(
            HTTP_STATUS.get(code, 500),
            code,
            result.detail or code,
            running_version=result.version,
            diagnostics=list(result.diagnostics),
            summary=result.summary.to_json(),
            result=result.to_json(),
            **extra,
        )

    async def _json_body(self, request: Request) -> Any:
        """The request's JSON body, read up to `max_body` bytes (413 beyond)."""
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise ApiError(400, "bad_request", "Content-Length is not a number")
            if int(length) > self.max_body:
                raise ApiError(413, "too_large", f"the body is {length} bytes; at most {self.max_body} are accepted")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > self.max_body:
                raise ApiError(413, "too_large", f"the body is over the limit of {self.max_body} bytes")
        try:
            body = json.loads(data)
        except ValueError as exc:
            raise ApiError(400, "bad_request", f"the body is not JSON: {exc}") from None
        except RecursionError:  # nesting deeper than the parser's stack
            raise ApiError(400, "bad_request", f"the body is nested more than {MAX_BODY_DEPTH} levels deep") from None
        if nesting(data) > MAX_BODY_DEPTH:
            raise ApiError(400, "bad_request", f"the body is nested more than {MAX_BODY_DEPTH} levels deep")
        return body


MAX_BODY_DEPTH = 64  # a config is about 10 levels deep; validation recurses, so bound it here
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_NOT_MARKS = bytes(sorted(set(range(256)) - set(b'"[]{}')))


def nesting(raw: bytes | bytearray) -> int:
    """How deep well-formed JSON nests its arrays and objects, read from its bytes: strings
    removed, the brackets left as +1/-1 steps, their running sum's peak (C loops only; the
    walk over the parsed body it replaces took 7.5 ms of a 250 KB config's apply).

    Strings go without a regular expression (4 ms of 250 KB, 1.7 now): escaped backslashes
    removed, then escaped quotes (pairs are read left to right, as JSON reads them: in
    `\\\\\"` the last backslash escapes the quote), so every quote left opens or closes a
    string; of the quotes and brackets alone, what lies between a quote and the next one is
    a string's."""
    text = bytes(raw).replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(text.translate(None, _NOT_MARKS).split(b'"')[::2])
    steps = outside.translate(_BRACKET_STEPS, _NOT_BRACKETS)
    return max(accumulate(array("b", steps)), default=0)


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ApiError(400, "bad_request", f"`{name}` must be an integer from {low} to {high}")
    return int(raw)


def _etag_matches(header: str | None, hash_: str) -> bool:
    if header is None:
        return False
    tags = [tag.strip().removeprefix("W/").strip('"') for tag in header.split(",")]
    return "*" in tags or hash_ in tags


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error(exc.status, exc.error, exc.detail, **exc.extra)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, _ERROR_NAMES.get(exc.status_code, "error"), str(exc.detail), headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    return _error(500, "internal", f"{type(exc).__name__}: {exc}")


def make_app(control: Control, token: str, audit: Audit, *, max_body: int = MAX_BODY) -> Starlette:
    """The admin API over `control`, for the holder of `token`, auditing into `audit`."""
    api = _AdminApi(control, token, audit, max_body)
    routes = [
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/openapi.json", api.openapi, methods=["GET"]),
        Route("/v1/config", api.get_config, methods=["GET"]),
        Route("/v1/plan", api.post_plan, methods=["POST"]),
        Route("/v1/apply", api.post_apply, methods=["POST"]),
        Route("/v1/status", api.get_status, methods=["GET"]),
        Route("/v1/audit", api.get_audit, methods=["GET"]),
        Route("/v1/portal/audit", api.get_portal_audit, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(BearerAuth, token=token)],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _internal_error},
    )


# --- serving inside the caller's loop --------------------------------------------------------


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handling: the relay owns SIGTERM/SIGINT and sets `should_exit`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        pass


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def serve_admin(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    ready_timeout: float = 10.0,
    name: str = "admin API",
    tls: tuple[Path, Path] | None = None,
) -> tuple[uvicorn.Server, asyncio.Task]:
    """Serve `app` on `host:port` (port 0: any free one) in the running loop; return once it accepts.

    Binding happens here, so an address in use raises OSError at once. `server.config.port`
    is the bound port. Stop with `stop_admin(server, task)` (or `server.should_exit = True`).
    """
    sock = _bind(host, port)
    config = uvicorn.Config(
        app,
        host=host,
        port=sock.getsockname()[1],
        lifespan="off",
        log_config=None,  # uvicorn's dictConfig would close the relay's own log handlers
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=5,
        ssl_certfile=str(tls[0]) if tls else None,
        ssl_keyfile=str(tls[1]) if tls else None,
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"admin-api {host}:{config.port}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ready_timeout
    while not server.started:  # uvicorn offers a flag, not an event
        if task.done():
            sock.close()
            exc = task.exception()
            raise RuntimeError(f"the {name} on {host}:{config.port} did not start: {exc!r}") from exc
        if loop.time() > deadline:
            await stop_admin(server, task)
            raise TimeoutError(f"the {name} on {host}:{config.port} did not start in {ready_timeout}s")
        await asyncio.sleep(0.005)
    log.info("%s listening on %s:%d", name, host, config.port)
    return server, task


async def stop_admin(server: uvicorn.Server, task: asyncio.Task, timeout: float = 10.0) -> None:
    """Ask uvicorn to finish (in-flight requests complete) and wait for it."""
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout)
