"""The public status page as JSON: GET /api/v1/status-page (no key; Peekaping's shape)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from pingr.api.deps import errors
from pingr.api.stats import Uptime
from pingr.web import public
from pingr.web.site import Site

router = APIRouter(tags=["status page"])


class DayOut(BaseModel):
    date: str = Field(description="UTC day, YYYY-MM-DD")
    uptime: float | None = Field(description="percent; null without probes that day")


class MonitorOut(BaseModel):
    name: str = Field(description="the component's public name (never a target's name)")
    group: str
    status: str = Field(description="up, degraded, down, maintenance or unknown")
    responseTime: int | None = Field(description="ms, the latest successful probes' mean")
    uptime: Uptime
    daily: list[DayOut] = Field(description="the last 90 UTC days, oldest first")


class IncidentOut(BaseModel):
    title: str
    status: str = Field(description="investigating, identified (acknowledged) or resolved")
    startTime: str
    endTime: str | None


class Banner(BaseModel):
    indicator: str = Field(description="operational, partial_outage, major_outage or unknown")
    message: str


class StatusPageOut(BaseModel):
    title: str
    description: str | None
    status: Banner
    monitors: list[MonitorOut]
    incidents: list[IncidentOut]
    updatedAt: str


@router.get("/status-page", response_model=StatusPageOut,
            responses=errors(404, 429))
async def status_page(request: Request) -> Any:
    """What /status shows, for scripts: no key needed, only what `web.status_page` chose to
    show (public names; never a host, URL or error). 404 when the status page is off."""
    site: Site = request.app.state.web
    if not site.config.status_page.enabled:
        raise HTTPException(404, "the public status page is off (web.status_page.enabled)")
    decision = site.public_limit.hit(site.client_ip(request))
    if not decision.allowed:
        raise HTTPException(429, f"Rate limit exceeded. Try again in {decision.retry_after} "
                                 "seconds.", headers={"Retry-After": str(decision.retry_after)})
    now = site.app.clock_ms()
    page = site.config.status_page
    comps = public.components(site.app, page, now)  # memory, on the loop
    data = await site.run(public.page_data, site.app, site.stats, page, comps, now)
    return JSONResponse(public.page_json(data), headers={"Cache-Control": "no-cache"})
