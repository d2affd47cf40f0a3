"""The Pingr agent's health checks: views onto the HTTP targets, addressed by name."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Response
from pydantic import BaseModel, Field, ValidationError

from pingr.api.auth import require
from pingr.api.deps import AUTH_ERRORS, errors, get_app, parse_limit, parse_time_param
from pingr.api.schemas import ResultItem, UtcTime, ts
from pingr.config import CheckSpec
from pingr.errors import AppError
from pingr.models import Target
from pingr.timeutil import format_duration, now_ms
from pingr.validation import describe

router = APIRouter(tags=["checks"])


class CheckOut(BaseModel):
    """An HTTP check and how it is doing now."""

    id: str = Field(description="the target id (the same check under /targets/{id})")
    name: str
    url: str
    interval: str = Field(description="as the Pingr agent writes it: 60s, 5m")
    interval_seconds: int
    timeout_ms: int
    enabled: bool
    status: str = Field(description="up, down, unreachable, pending or paused")
    consecutive_failures: int
    last_check: UtcTime | None
    response_time_ms: int | None
    status_code: int | None
    error: str | None
    source: str = Field(description="config (pingr.yaml) or api")


class CheckList(BaseModel):
    items: list[CheckOut]


class CheckHistory(BaseModel):
    """A check's results, newest first: its up/down timeline."""

    id: str
    name: str
    items: list[ResultItem]


def _out(app: Any, target: Target) -> CheckOut:
    state = app.monitor.state_of(target.id)
    last = state.last if state else None
    spec = target.spec
    return CheckOut(
        id=target.id, name=target.name, url=spec.url,
        interval=format_duration(spec.interval_seconds), interval_seconds=spec.interval_seconds,
        timeout_ms=spec.timeout_ms, enabled=target.enabled,
        status=state.status if state else ("paused" if not target.enabled else "pending"),
        consecutive_failures=state.failures if state else 0,
        last_check=ts(last.ts) if last else None,
        response_time_ms=last.latency_ms if last else None,
        status_code=last.status_code if last else None,
        error=last.error if last and not last.success else None,
        source=target.source)


def _find(app: Any, name: str) -> Target:
    for target in app.targets.values():
        if target.name == name and target.spec.type == "http":
            return target
    raise HTTPException(404, f"no check named {name!r}")


@router.get("/checks", response_model=CheckList, dependencies=[require("read")],
            responses=errors(*AUTH_ERRORS))
async def list_checks(app=Depends(get_app)) -> CheckList:
    """Every HTTP check (`checks:` and http `targets:` alike) with its current status."""
    targets = sorted((t for t in app.targets.values() if t.spec.type == "http"),
                     key=lambda t: t.name.lower())
    return CheckList(items=[_out(app, t) for t in targets])


@router.get("/checks/{name}/history", response_model=CheckHistory,
            dependencies=[require("read")], responses=errors(400, 404, *AUTH_ERRORS))
def check_history(
    name: str,
    since: str | None = Query(None, description="RFC 3339; default 24 hours ago"),
    until: str | None = Query(None, description="RFC 3339; default now"),
    limit: int = Query(200, description="1 to 1000; larger values are clamped"),
    app=Depends(get_app),
) -> CheckHistory:
    """The check's results in [since, until], newest first."""
    target = _find(app, name)
    now = now_ms()
    start = parse_time_param("since", since, now - 86_400_000)
    end = parse_time_param("until", until, now)
    if start > end:
        raise HTTPException(400, "since must not be after until")
    rows = app.store.target_results(target.pk, start, end, parse_limit(limit))
    return CheckHistory(id=target.id, name=target.name, items=[ResultItem.of(r) for r in rows])


@router.post("/checks", response_model=CheckOut, status_code=201,
             dependencies=[require("admin")], responses=errors(400, 409, *AUTH_ERRORS))
async def create_check(body: Annotated[dict[str, Any], Body(examples=[
        {"name": "API", "url": "https://api.example.com/ping", "interval": "30s"}])],
        app=Depends(get_app)) -> CheckOut:
    """Add an HTTP check (`name`, `url`, optional `interval`, `timeout` and the other fields of
    an http target); it is probed at once."""
    try:
        spec = CheckSpec.model_validate(body)
    except ValidationError as exc:
        raise AppError(400, "; ".join(describe(exc, body))) from None
    return _out(app, await app.target_admin.create(spec))


@router.delete("/checks/{name}", status_code=204, response_class=Response,
               dependencies=[require("admin")], responses=errors(404, 409, *AUTH_ERRORS))
async def delete_check(name: str, app=Depends(get_app)) -> Response:
    """Remove a check (and its history)."""
    await app.target_admin.delete(_find(app, name))
    return Response(status_code=204)
