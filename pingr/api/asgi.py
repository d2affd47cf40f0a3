"""The HTTP API: FastAPI app factory, error format, OpenAPI, and the alert-status fast path."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pingr import __version__
from pingr.access import key_from_headers
from pingr.api import (
    alerts,
    channels,
    checks,
    containers,
    events,
    fleet,
    health,
    history,
    keys,
    metrics,
    notifications,
    outputs,
    pair,
    push,
    results,
    silence,
    stats,
    statuspage,
    system,
    targets,
    webhooks,
)
from pingr.api.deps import error_body, error_response
from pingr.api.guard import Guard
from pingr.app import App
from pingr.errors import AppError
from pingr.probes.registry import KINDS
from pingr.validation import describe
from pingr.web import pages, status
from pingr.web.site import PageError, SignIn, Site

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
STATUS_PATH = PREFIX + "/alert-status"

#: Routers in the order they appear in the OpenAPI document. Each guards itself with
#: `require(scope)`; only health is public.
ROUTERS = [health.router, alerts.router, targets.router, results.router, keys.router,
           silence.router, events.router, push.router, channels.router, notifications.router,
           webhooks.router, outputs.router, system.router, containers.router, checks.router,
           pair.router, fleet.router, history.router,
           stats.router, statuspage.router]


#: Where FastAPI says a bad value came from; not part of what the user wrote.
_SOURCES = ("body", "query", "path", "header", "cookie")
#: The draft's wording for an unexpected server error.
SERVER_ERROR = "unexpected server error"
#: PiAlert's wording when alert-status cannot be produced.
STATUS_ERROR = "Unable to fetch alert status"


def validation_message(exc: RequestValidationError) -> str:
    """One message in the user's terms for everything wrong with a request."""
    lines: list[str] = []
    for err in exc.errors():
        loc = list(err.get("loc", ()))
        source = loc[0] if loc and loc[0] in _SOURCES else None
        data = exc.body if source == "body" else None
        for line in describe([err], data, tags=KINDS, skip=1 if source else 0):
            if line not in lines:
                lines.append(line)
    return "; ".join(lines) or "invalid request"


def create_api(app: App) -> Any:
    """Build the ASGI application serving `app`."""
    api = FastAPI(
        title="pingr",
        version=__version__,
        description="Network monitor appliance API. Every endpoint except /api/v1/health needs "
        "an API key in the `x-api-key` header (or `Authorization: Bearer`).",
    )
    api.state.pingr = app
    for router in ROUTERS:
        api.include_router(router, prefix=PREFIX)
    # At the root: heartbeat pings (/ping/{token}), and /metrics where scrapers look for it.
    api.include_router(push.ping_router)
    if app.metrics is not None:
        api.include_router(metrics.metrics_router(app.metrics.config.public))
    # The dashboard (/) and the public status page (/status): pingr/web.
    api.state.web = Site(app)
    if app.config.web.dashboard:
        api.include_router(pages.router)
    api.include_router(status.router)
    api.add_exception_handler(PageError, pages.page_error)
    api.add_exception_handler(SignIn, pages.page_error)

    @api.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return error_response(exc.status, exc.detail)

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), exc.headers)

    @api.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, validation_message(exc))

    @api.exception_handler(Exception)
    async def _server_error(_: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises it after this answer: uvicorn logs the traceback.
        return error_response(500, SERVER_ERROR)

    def openapi() -> dict[str, Any]:
        if api.openapi_schema:
            return api.openapi_schema
        schema = get_openapi(title=api.title, version=api.version, description=api.description,
                             routes=api.routes)
        # We answer invalid input with 400 {"error", "detail"}, never FastAPI's 422 list.
        for path in schema.get("paths", {}).values():
            for op in path.values():
                responses = op.get("responses", {})
                if "422" in responses:
                    del responses["422"]
                    responses.setdefault("400", {
                        "description": "Invalid parameter or body",
                        "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/ErrorOut"}}},
                    })
        comps = schema.setdefault("components", {})
        for name in ("HTTPValidationError", "ValidationError"):
            comps.get("schemas", {}).pop(name, None)
        comps.setdefault("schemas", {}).setdefault(
            "ErrorOut", {"type": "object", "title": "ErrorOut",
                         "properties": {"error": {"type": "string"},
                                        "detail": {"type": "string"}},
                         "required": ["error", "detail"]})

        api.openapi_schema = schema
        return schema

    api.openapi = openapi  # type: ignore[method-assign]
    return Guard(AlertStatusFastPath(api, app), app, api.routes)


class AlertStatusFastPath:
    """Answers GET /api/v1/alert-status before FastAPI's routing and dependency machinery.

    Pollers hit this path every few seconds; the same Authenticator checks the key, scope and
    rate limits, the body comes cached from the monitor's snapshot, and ETag gives 304s.
    Everything else goes to the FastAPI app unchanged.
    """

    def __init__(self, inner: FastAPI, app: App) -> None:
        self.inner = inner
        self.app = app
        # Starlette's TestClient and other tooling look for these on the ASGI app.
        self.state = inner.state
        self.openapi = inner.openapi

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (scope["type"] != "http" or scope["path"] != STATUS_PATH
                or scope["method"] not in ("GET", "HEAD")):
            await self.inner(scope, receive, send)
            return
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name in (b"x-api-key", b"authorization", b"if-none-match", b"x-forwarded-for"):
                key, text = name.decode(), value.decode("latin-1")
                # A repeated field is one list (RFC 9110 5.3): If-None-Match may come twice.
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
        auth = self.app.auth
        peer = scope.get("client")
        ip = auth.client_ip(peer[0] if peer else None, headers.get("x-forwarded-for"))
        outcome = auth.check(key_from_headers(headers.get), ip, "read")
        out_headers = outcome.headers
        if outcome.status != 200:
            status, body = outcome.status, json.dumps(error_body(outcome.detail or "")).encode()
        else:
            try:
                status, body, etag = alerts.alert_status_response(
                    self.app, headers.get("if-none-match"))
            except Exception:  # a bug must still answer JSON, as the document says
                log.exception("alert-status failed")
                status, body = 500, json.dumps(error_body(STATUS_ERROR)).encode()
            else:
                out_headers = {**out_headers, "ETag": etag, "Cache-Control": "no-cache"}
        raw = []
        if status != 304:  # a 304 carries the validators, not the representation's metadata
            raw += [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())]
        raw += [(k.lower().encode(), v.encode()) for k, v in out_headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body",
                    "body": body if scope["method"] == "GET" else b""})
