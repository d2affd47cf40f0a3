"""GET /health: the one endpoint without a key (systemd, Docker and boot checks poll it)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from pingr import __version__
from pingr.api.deps import errors, get_app
from pingr.api.schemas import HealthOut, ts

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthOut, responses=errors(503))
async def health(response: Response, app=Depends(get_app)) -> HealthOut:
    """Liveness and freshness. 200 when healthy, 503 when the monitor is stale or the DB fails."""
    h = app.health()
    if not h.ok:
        response.status_code = 503
    return HealthOut(
        ok=h.ok, db="ok" if h.db_error is None else f"error: {h.db_error}", healthy=h.healthy,
        problems=list(h.problems), enabled_targets=h.enabled_targets,
        last_result_ts=ts(h.last_result_ms), seconds_since_last_result=h.seconds_since_last_result,
        stale=h.stale, version=__version__, uptime_seconds=h.uptime_seconds,
        disk_bytes_written=h.disk_bytes_written, disk_bytes_per_day=h.disk_bytes_per_day,
        db_size_bytes=h.db_size_bytes)
