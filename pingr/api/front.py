"""The API's front door: what a running appliance answers from its first second on, without
FastAPI; the rest of the API is built on its first use.

Steady state on most appliances is a poller on `/api/v1/alert-status` (Home Assistant,
Node-RED, a bridge script) and systemd or Docker on `/api/v1/health`. Those two are served
here, from memory and the App, with the same key checks, rate limits and bodies as the routes
that document them. Anything else (the dashboard, the status page, the rest of the API,
heartbeat pings, `/metrics`, OPTIONS, any request with a body) goes to the whole API
(`pingr.api.asgi.create_api`, handed in by the server), which is imported and built in a
worker thread the first time it is needed and then kept. Importing FastAPI and building
every route and model is what made start-up slow, and ~12 MiB of RSS (`python -m bench
startup memory`).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pingr import __version__
from pingr.access import key_from_headers
from pingr.alertstatus import alert_status_response
from pingr.timeutil import from_ms, rfc3339

if TYPE_CHECKING:
    from pingr.app import App

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
STATUS_PATH = PREFIX + "/alert-status"
HEALTH_PATH = PREFIX + "/health"
#: The draft's wording for an unexpected server error.
SERVER_ERROR = "unexpected server error"
#: PiAlert's wording when alert-status cannot be produced.
STATUS_ERROR = "Unable to fetch alert status"


def error_body(message: str) -> dict[str, str]:
    """Every error's body: the Pingu draft's `error` and PiAlert's `detail`, one message."""
    return {"error": message, "detail": message}


async def health_answer(app: App) -> tuple[int, dict[str, Any]]:
    """(status, body) of GET /api/v1/health: 200 when healthy, 503 when the monitor is stale,
    a part cannot do its job, or the database cannot be read (never 500).

    The body is `pingr.api.schemas.HealthOut` field for field (that model documents it); the
    database query runs off the event loop."""
    h = app.health()
    db_error = h.db_error
    try:
        last = await asyncio.to_thread(app.store.newest_result_ts)
        db = True
    except Exception as exc:  # the database cannot be read: say so, never answer 500
        last, db = None, False
        db_error = db_error or f"{type(exc).__name__}: {exc}"
    ok = h.ok and db
    since = None if last is None else max(0, (app.clock_ms() - last) // 1000)
    return (200 if ok else 503), {
        "ok": ok, "db": db, "db_error": db_error, "healthy": h.healthy,
        "degraded": bool(h.problems), "problems": list(h.problems),
        "warnings": list(app.config.warnings()), "enabled_targets": h.enabled_targets,
        "last_result_ts": None if last is None else rfc3339(from_ms(last)),
        "seconds_since_last_result": since, "stale": h.stale, "version": __version__,
        "uptime_seconds": float(h.uptime_seconds),
        "disk_bytes_written": h.disk_bytes_written, "disk_bytes_per_day": h.disk_bytes_per_day,
        "db_size_bytes": h.db_size_bytes,
    }


def _json(value: Any) -> bytes:
    # As Starlette's JSONResponse renders it, so both doors answer the same bytes.
    return json.dumps(value, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode()


async def _send(send: Any, status: int, body: bytes, headers: dict[str, str],
                with_body: bool = True) -> None:
    raw = []
    if status != 304:  # a 304 carries the validators, not the representation's metadata
        raw += [(b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body if with_body else b""})


async def alert_status(app: App, scope: dict[str, Any], send: Any) -> None:
    """GET/HEAD /api/v1/alert-status before any routing: the App's Authenticator checks the
    key, scope and rate limits, the body comes cached from the monitor's snapshot, and ETag
    gives 304s."""
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name in (b"x-api-key", b"authorization", b"if-none-match", b"x-forwarded-for"):
            key, text = name.decode(), value.decode("latin-1")
            # A repeated field is one list (RFC 9110 5.3): If-None-Match may come twice.
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
    auth = app.auth
    peer = scope.get("client")
    ip = auth.client_ip(peer[0] if peer else None, headers.get("x-forwarded-for"))
    outcome = auth.check(key_from_headers(headers.get), ip, "read")
    out_headers = outcome.headers
    if outcome.status != 200:
        status, body = outcome.status, _json(error_body(outcome.detail or ""))
    else:
        try:
            status, body, etag = alert_status_response(app, headers.get("if-none-match"))
        except Exception:  # a bug must still answer JSON, as the document says
            log.exception("alert-status failed")
            status, body = 500, _json(error_body(STATUS_ERROR))
        else:
            out_headers = {**out_headers, "ETag": etag, "Cache-Control": "no-cache"}
    await _send(send, status, body, out_headers, scope["method"] == "GET")


class AlertStatusFastPath:
    """Inside the whole API: GET/HEAD /api/v1/alert-status (one with a body, which the front
    door passes on) answered as the front door answers it; everything else to FastAPI."""

    def __init__(self, inner: Any, app: App) -> None:
        self.inner = inner
        self.app = app
        # Starlette's TestClient and other tooling look for these on the ASGI app.
        self.state = inner.state
        self.openapi = inner.openapi

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (scope["type"] == "http" and scope["path"] == STATUS_PATH
                and scope["method"] in ("GET", "HEAD")):
            await alert_status(self.app, scope, send)
        else:
            await self.inner(scope, receive, send)


def _has_body(scope: dict[str, Any]) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


class Front:
    """The ASGI application uvicorn serves: alert-status and health here, the rest of the API
    made by `build()` on its first use, in a worker thread so that the event loop keeps
    probing meanwhile (on a Pi Zero the import takes seconds)."""

    def __init__(self, app: App, build: Callable[[], Any]) -> None:
        self.app = app
        self.api: Any = None
        self._build = build
        self._building: asyncio.Future[Any] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not _has_body(scope):
            path, method = scope["path"], scope["method"]
            if path == STATUS_PATH and method in ("GET", "HEAD"):
                await alert_status(self.app, scope, send)
                return
            if path == HEALTH_PATH and method == "GET":
                status, body = await health_answer(self.app)
                await _send(send, status, _json(body), {})
                return
        api = self.api
        if api is None:
            try:
                api = await self.whole_api()
            except Exception:
                log.exception("building the HTTP API failed")
                if scope["type"] == "http":
                    await _send(send, 500, _json(error_body(SERVER_ERROR)), {})
                return
        await api(scope, receive, send)

    async def whole_api(self) -> Any:
        """The whole API, built once; concurrent first requests wait for the same build, and
        a build that failed is tried again by the next request."""
        if self.api is not None:
            return self.api
        building = self._building
        if building is None or (building.done() and building.exception() is not None):
            building = self._building = asyncio.ensure_future(asyncio.to_thread(self._timed))
        api = await asyncio.shield(building)
        if self.api is None:
            self.api = api
            # Its routes and models live as long as pingr, like what start-up made (frozen
            # by the server once it listened): out of the full collections' sight too.
            gc.freeze()
        return self.api

    def _timed(self) -> Any:
        t0 = time.monotonic()
        api = self._build()
        log.info("HTTP API built on its first use in %.0f ms", (time.monotonic() - t0) * 1000)
        return api
