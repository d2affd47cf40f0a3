"""Probe results and uptime summaries."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query

from pingr.api.auth import require
from pingr.api.deps import (
    AUTH_ERRORS,
    errors,
    get_app,
    parse_limit,
    parse_time_param,
    parse_window,
)
from pingr.api.schemas import LatestOut, ResultOut, SummaryOut
from pingr.timeutil import format_duration, from_ms, now_ms

router = APIRouter(tags=["results"], dependencies=[require("read")])


@router.get("/results/latest-by-target", response_model=list[LatestOut],
            responses=errors(*AUTH_ERRORS))
def latest_by_target(app=Depends(get_app)) -> list[LatestOut]:
    """The newest result of every enabled target, from memory; newest first."""
    out = []
    for state in app.monitor.states.values():
        r = state.last
        if r is None or not state.target.enabled:
            continue
        out.append(LatestOut(target_id=r.target_id, target_name=state.target.name,
                             status=state.status, ts=from_ms(r.ts), success=r.success,
                             latency_ms=r.latency_ms, status_code=r.status_code, error=r.error))
    out.sort(key=lambda x: x.ts, reverse=True)
    return out


@router.get("/results/latest", response_model=list[ResultOut], responses=errors(400, *AUTH_ERRORS))
def latest(limit: int = Query(200, description="1 to 1000; larger values are clamped"),
           app=Depends(get_app)) -> list[ResultOut]:
    """The newest results across all targets, newest first."""
    ids = app.target_ids_by_pk()
    rows = app.store.latest_results(parse_limit(limit))
    return [ResultOut.of(r, ids[r.target_pk]) for r in rows if r.target_pk in ids]


@router.get("/targets/{target_id}/results", response_model=list[ResultOut],
            responses=errors(400, 404, *AUTH_ERRORS))
def target_results(
    target_id: str,
    since: str | None = Query(None, description="RFC 3339; default 24 hours ago"),
    until: str | None = Query(None, description="RFC 3339; default now"),
    limit: int = Query(200, description="1 to 1000; larger values are clamped"),
    app=Depends(get_app),
) -> list[ResultOut]:
    target = app.targets.get(target_id)
    if target is None:
        raise HTTPException(404, f"no target with id {target_id}")
    now = now_ms()
    start = parse_time_param("since", since, now - 86_400_000)
    end = parse_time_param("until", until, now)
    if start > end:
        raise HTTPException(400, "since must not be after until")
    rows = app.store.target_results(target.pk, start, end, parse_limit(limit))
    return [ResultOut.of(r, target.id) for r in rows]


def _summaries(app, window: str, only: str | None = None) -> list[SummaryOut]:
    seconds = parse_window(window)
    targets = [app.targets[only]] if only else [t for t in app.targets.values() if t.enabled]
    stats = app.store.summary(now_ms() - int(seconds * 1000), targets[0].pk if only else None)
    out = []
    for t in sorted(targets, key=lambda t: t.name.lower()):
        total, ok, avg = stats.get(t.pk, (0, 0, None))
        out.append(SummaryOut(
            target_id=t.id, name=t.name, window=format_duration(seconds),
            uptime_percent=round(100.0 * ok / total, 3) if total else None,
            avg_latency_ms=round(avg, 2) if avg is not None else None,
            total_probes=total,
        ))
    return out


@router.get("/summary", response_model=list[SummaryOut], responses=errors(400, *AUTH_ERRORS))
def summary(window: str = Query("1h", description="a duration: 1h, 24h, 7d"),
            app=Depends(get_app)) -> list[SummaryOut]:
    """Uptime and average latency of every enabled target over the window."""
    return _summaries(app, window)


@router.get("/summary/{target_id}", response_model=SummaryOut,
            responses=errors(400, 404, *AUTH_ERRORS))
def target_summary(target_id: str, window: str = Query("1h"), app=Depends(get_app)) -> SummaryOut:
    if target_id not in app.targets:
        raise HTTPException(404, f"no target with id {target_id}")
    return _summaries(app, window, target_id)[0]
