"""GET /health: the one endpoint without a key (systemd, Docker and boot checks poll it)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Response

from pingr import __version__
from pingr.api.deps import errors, get_app
from pingr.api.schemas import HealthOut, ts

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthOut, responses=errors(503))
async def health(response: Response, app=Depends(get_app)) -> HealthOut:
    """Liveness and freshness. 200 when healthy, 503 when the monitor is stale or the DB fails.

    `db` says whether the database answered a query just now (the newest stored result, which
    is `last_result_ts`); the query runs off the event loop.
    """
    h = app.health()
    db_error = h.db_error
    try:
        last = await asyncio.to_thread(app.store.newest_result_ts)
        db = True
    except Exception as exc:  # the database cannot be read: say so, never answer 500
        last, db = None, False
        db_error = db_error or f"{type(exc).__name__}: {exc}"
    ok = h.ok and db
    if not ok:
        response.status_code = 503
    since = None if last is None else max(0, (app.clock_ms() - last) // 1000)
    return HealthOut(
        ok=ok, db=db, db_error=db_error, healthy=h.healthy, degraded=bool(h.problems),
        problems=list(h.problems),
        warnings=list(app.config.warnings()), enabled_targets=h.enabled_targets,
        last_result_ts=ts(last), seconds_since_last_result=since, stale=h.stale,
        version=__version__, uptime_seconds=h.uptime_seconds,
        disk_bytes_written=h.disk_bytes_written, disk_bytes_per_day=h.disk_bytes_per_day,
        db_size_bytes=h.db_size_bytes)
