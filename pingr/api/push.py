"""Heartbeat check-ins: public /ping/{token} endpoints, /api/v1/push/{token}, and the token list."""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pingr.api.auth import require
from pingr.api.deps import AUTH_ERRORS, error_response, errors, get_app
from pingr.api.schemas import UtcTime, ts
from pingr.heartbeat import HeartbeatError
from pingr.validation import describe

#: Public: the token in the path is the credential, so these routes take no API key.
ping_router = APIRouter(tags=["heartbeats"])
router = APIRouter(tags=["heartbeats"])

PING_ERRORS = errors(400, 404, 413, 429)
METHODS = ["GET", "POST", "HEAD"]
Token = Path(min_length=16, max_length=128, description="the heartbeat target's token")


class PushIn(BaseModel):
    """Optional body of POST /api/v1/push/{token}."""

    model_config = ConfigDict(extra="forbid")
    status: Literal["up", "down"] = "up"
    message: str | None = Field(None, max_length=10_000)
    ping: float | None = Field(None, ge=0, le=86_400_000, description="duration or latency, ms")


class PingOut(BaseModel):
    ok: bool
    target: str
    kind: str
    success: bool | None = None


class HeartbeatOut(BaseModel):
    target_id: str
    name: str
    token: str
    ping_url: str = Field(
        description="path of the success ping; /start, /fail and /{exit_code} too")
    period_seconds: float
    grace_seconds: float
    last_ping_at: UtcTime | None
    last_success: bool | None
    last_message: str | None
    next_deadline: UtcTime
    overdue: bool


def book(app):
    return app.heartbeats


async def _body(request: Request, cap: int) -> bytes:
    """The request body, refused with 413 past `cap` bytes (read in chunks, never whole)."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > cap:
        raise HTTPException(413, f"body larger than {cap} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > cap:
            raise HTTPException(413, f"body larger than {cap} bytes")
    return bytes(data)


def _ip(app, request: Request) -> str:
    peer = request.client.host if request.client else None
    return app.auth.client_ip(peer, request.headers.get("x-forwarded-for"))


async def _ping(request: Request, app, token: str, kind: str, success: bool = True,
                exit_code: int | None = None) -> JSONResponse:
    hb = book(app)
    raw = await _body(request, hb.max_body) if request.method == "POST" else b""
    message = raw.decode("utf-8", "replace").strip() or None
    try:
        out = app.checkin(token, kind, ip=_ip(app, request), success=success, message=message,
                          exit_code=exit_code)
    except HeartbeatError as exc:
        return error_response(exc.status, exc.detail, exc.headers)
    return JSONResponse(out)


def ping_route(path: str) -> Any:
    """Register one route per method, so each has its own OpenAPI operation id."""

    def register(fn: Any) -> Any:
        for method in METHODS:
            ping_router.add_api_route(path, fn, methods=[method], response_model=PingOut,
                                      responses=PING_ERRORS, name=f"{fn.__name__}_{method.lower()}")
        return fn

    return register


@ping_route("/ping/{token}")
async def ping(request: Request, token: str = Token, app=Depends(get_app)) -> JSONResponse:
    """The job succeeded (a POST body, up to push.max_body bytes, is kept as its message)."""
    return await _ping(request, app, token, "success")


@ping_route("/ping/{token}/start")
async def ping_start(request: Request, token: str = Token, app=Depends(get_app)) -> JSONResponse:
    """The job started: the next success reports the time since as its duration."""
    return await _ping(request, app, token, "start")


@ping_route("/ping/{token}/fail")
async def ping_fail(request: Request, token: str = Token, app=Depends(get_app)) -> JSONResponse:
    """The job failed."""
    return await _ping(request, app, token, "fail", success=False)


@ping_route("/ping/{token}/{exit_code}")
async def ping_exit(request: Request, token: str = Token,
                    exit_code: int = Path(ge=0, le=255, description="0 = success"),
                    app=Depends(get_app)) -> JSONResponse:
    """The job ended with this exit status: 0 is a success, anything else a failure."""
    return await _ping(request, app, token, "exit", success=exit_code == 0, exit_code=exit_code)


@router.post("/push/{token}", response_model=PingOut, responses=PING_ERRORS)
async def push(request: Request, token: str = Token, app=Depends(get_app)) -> JSONResponse:
    """Public (the token is the credential). Optional JSON body
    `{"status": "up"|"down", "message": "…", "ping": ms}`; an empty body means up."""
    hb = book(app)
    raw = await _body(request, hb.max_body)
    try:
        data = json.loads(raw) if raw.strip() else {}
        body = PushIn.model_validate(data)
    except json.JSONDecodeError:
        raise HTTPException(400, "body is not valid JSON") from None
    except ValidationError as exc:
        raise HTTPException(400, "; ".join(describe(exc, data))) from None
    try:
        out = app.checkin(token, "push", ip=_ip(app, request), success=body.status == "up",
                          message=body.message,
                          latency_ms=round(body.ping) if body.ping is not None else None)
    except HeartbeatError as exc:
        return error_response(exc.status, exc.detail, exc.headers)
    return JSONResponse(out)


@router.get("/heartbeats", response_model=list[HeartbeatOut], dependencies=[require("admin")],
            responses=errors(*AUTH_ERRORS))
async def list_heartbeats(app=Depends(get_app)) -> list[HeartbeatOut]:
    """Heartbeat targets with their tokens (admin only: a token lets anyone check in)."""
    hb = book(app)
    out = []
    for target in sorted(app.targets.values(), key=lambda t: t.name.lower()):
        if target.spec.type != "heartbeat":
            continue
        st = hb.status(target)
        row = st["row"]
        out.append(HeartbeatOut(
            target_id=target.id, name=target.name, token=st["token"],
            ping_url=f"/ping/{st['token']}", period_seconds=target.spec.period,
            grace_seconds=target.spec.grace, last_ping_at=ts(row["last_ping_at"]),
            last_success=row["last_success"], last_message=row["last_message"],
            next_deadline=ts(st["deadline_ms"]), overdue=st["overdue"]))
    return out
