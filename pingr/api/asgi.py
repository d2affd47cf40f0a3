"""The whole HTTP API: the FastAPI app, its error format and OpenAPI document, behind the Guard.

Built on its first use by the front door (pingr/api/front.py), which answers alert-status and
health without it."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pingr import __version__
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
from pingr.api.deps import error_response
from pingr.api.front import PREFIX, SERVER_ERROR, AlertStatusFastPath
from pingr.api.guard import Guard
from pingr.app import App
from pingr.errors import AppError
from pingr.probes.registry import KINDS
from pingr.validation import describe
from pingr.web import pages, status
from pingr.web.site import PageError, SignIn, Site

log = logging.getLogger(__name__)

#: Routers in the order they appear in the OpenAPI document. Each guards itself with
#: `require(scope)`; only health is public.
ROUTERS = [health.router, alerts.router, targets.router, results.router, keys.router,
           silence.router, events.router, push.router, channels.router, notifications.router,
           webhooks.router, outputs.router, system.router, containers.router, checks.router,
           pair.router, fleet.router, history.router,
           stats.router, statuspage.router]


#: Where FastAPI says a bad value came from; not part of what the user wrote.
_SOURCES = ("body", "query", "path", "header", "cookie")


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
    """The whole API serving `app`, as an ASGI application."""
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
