"""Aggregates for dashboards: GET /stats/overview (Peekaping's shape) and
GET /dashboard/sparklines (every target at once, as Maintenant has)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from pingr.api.auth import require
from pingr.api.deps import AUTH_ERRORS, errors, get_app
from pingr.monitor import DOWN, PAUSED, PENDING, UNREACHABLE, UP
from pingr.storage.rollup import HOUR_MS, combine
from pingr.web import views
from pingr.web.site import Site
from pingr.web.stats import SPARK_HOURS, WINDOWS, avg_latency, uptime
from pingr.web.stats import buckets as stats_buckets

router = APIRouter(tags=["dashboard"], dependencies=[require("read")])


class Uptime(BaseModel):
    model_config = {"populate_by_name": True}
    h24: float | None = Field(alias="24h")
    d7: float | None = Field(alias="7d")
    d30: float | None = Field(alias="30d")


class OverviewOut(BaseModel):
    totalMonitors: int = Field(description="targets in the database (paused ones included)")
    monitorsUp: int
    monitorsDown: int = Field(description="down or unreachable")
    monitorsPaused: int
    monitorsStale: int = Field(description="no fresh result (the monitor or this target)")
    monitorsPending: int
    avgResponseTime: float | None = Field(description="ms, successful probes of the last 24 h")
    totalChecks: int = Field(description="probes in the last 30 days")
    uptime: Uptime = Field(description="percent of successful probes of all targets")


class Point(BaseModel):
    ts: str = Field(description="start of the hour, UTC")
    total_probes: int
    uptime_percent: float | None
    latency_avg_ms: float | None


class Sparkline(BaseModel):
    target_id: str
    name: str
    status: str
    points: list[Point] = Field(description="24 hours, oldest first, the current one last")


class SparklinesOut(BaseModel):
    window: str
    resolution: str
    targets: list[Sparkline]


def _site(request: Request) -> Site:
    return request.app.state.web


@router.get("/stats/overview", response_model=OverviewOut, response_model_by_alias=True,
            responses=errors(*AUTH_ERRORS))
async def overview(request: Request, app=Depends(get_app)) -> Any:
    """Counts by state from memory; uptime, checks and latency from the rollups (figures
    are at most 30 s old)."""
    now = app.clock_ms()
    stored = [t for t in views.overview_targets(app, now) if t.pk]
    count = {s: sum(t.state == s for t in stored) for s in views.STATES}
    pks = {t.pk for t in stored}
    site = _site(request)
    windows = await site.run(site.stats.windows)
    totals = {name: combine([{0: t} for pk, t in windows[name].items() if pk in pks]).get(0)
              for name in WINDOWS}
    return OverviewOut(
        totalMonitors=len(stored), monitorsUp=count[UP],
        monitorsDown=count[DOWN] + count[UNREACHABLE], monitorsPaused=count[PAUSED],
        monitorsStale=count[views.STALE], monitorsPending=count[PENDING],
        avgResponseTime=avg_latency(totals["24h"]),
        totalChecks=totals["30d"][0] if totals["30d"] else 0,
        uptime=Uptime(**{name: uptime(totals[name]) for name in WINDOWS}))


@router.get("/dashboard/sparklines", response_model=SparklinesOut,
            responses=errors(*AUTH_ERRORS))
async def sparklines(request: Request, app=Depends(get_app)) -> SparklinesOut:
    """Hourly probes, uptime and latency of every stored target over the last 24 hours."""
    now = app.clock_ms()
    stored = [t for t in views.overview_targets(app, now) if t.pk]
    site = _site(request)
    start, series = await site.run(site.stats.sparklines)
    out = []
    for t in stored:
        hours = stats_buckets(start, series.get(t.pk), HOUR_MS, SPARK_HOURS)
        points = []
        for i, b in enumerate(hours):
            total = b[1] if b else 0
            points.append(Point(
                ts=views.iso(start + i * HOUR_MS), total_probes=total,
                uptime_percent=uptime(b[1:]) if b else None,
                latency_avg_ms=avg_latency(b[1:]) if b else None))
        out.append(Sparkline(target_id=t.id, name=t.name, status=t.state, points=points))
    return SparklinesOut(window="24h", resolution="1h", targets=out)
