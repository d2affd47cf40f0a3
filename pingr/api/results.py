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
from pingr.api.schemas import DailyUptimeOut, HistoryBucketOut, LatestOut, ResultOut, SummaryOut
from pingr.storage.rollup import DAY_MS
from pingr.timeutil import format_duration, from_ms, now_ms

router = APIRouter(tags=["results"], dependencies=[require("read")])


@router.get("/results/latest-by-target", response_model=list[LatestOut],
            responses=errors(*AUTH_ERRORS))
async def latest_by_target(app=Depends(get_app)) -> list[LatestOut]:
    """The newest result of every enabled target, from memory (on the loop); newest first."""
    out = []
    for state in app.monitor.states():
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
    now = now_ms()
    stats = app.store.summary(now - int(seconds * 1000), targets[0].pk if only else None, now)
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


@router.get("/targets/{target_id}/uptime/daily", response_model=list[DailyUptimeOut],
            responses=errors(400, 404, *AUTH_ERRORS))
def daily_uptime(target_id: str,
                 days: int = Query(90, description="1 to 366 UTC days, today included"),
                 app=Depends(get_app)) -> list[DailyUptimeOut]:
    """Uptime per UTC day, oldest first (status-page style), from the per-hour aggregates.

    Days without a probe have `uptime_percent: null`.
    """
    target = app.targets.get(target_id)
    if target is None:
        raise HTTPException(404, f"no target with id {target_id}")
    if not 1 <= days <= 366:
        raise HTTPException(400, f"days must be between 1 and 366, got {days}")
    today = now_ms() - now_ms() % DAY_MS
    first = today - (days - 1) * DAY_MS
    stats = app.store.daily_uptime(target.pk, first)
    out = []
    for day in range(first, today + 1, DAY_MS):
        total, ok, lat_n, lat_sum, _, _ = stats.get(day, (0, 0, 0, 0, None, None))
        out.append(DailyUptimeOut(
            date=from_ms(day).date().isoformat(),
            uptime_percent=round(100.0 * ok / total, 3) if total else None,
            total_probes=total,
            avg_latency_ms=round(lat_sum / lat_n, 2) if lat_n else None,
        ))
    return out


@router.get("/targets/{target_id}/history", response_model=list[HistoryBucketOut],
            responses=errors(400, 404, *AUTH_ERRORS))
def history(target_id: str,
            window: str = Query("24h", description="a duration up to 400d: 6h, 24h, 30d"),
            app=Depends(get_app)) -> list[HistoryBucketOut]:
    """Aggregated history for graphs, oldest first: per minute for windows up to 6 hours
    (and within the per-minute retention), per hour beyond."""
    target = app.targets.get(target_id)
    if target is None:
        raise HTTPException(404, f"no target with id {target_id}")
    seconds = parse_window(window)
    now = now_ms()
    since = now - int(seconds * 1000)
    per_minute = seconds <= 6 * 3600 and seconds * 1000 <= app.store.minute_retention_ms
    resolution = "minute" if per_minute else "hour"
    size = 60_000 if per_minute else 3_600_000
    rows = app.store.history(target.pk, since - since % size, now, resolution)
    return [
        HistoryBucketOut(
            ts=from_ms(b), resolution=resolution, total_probes=n, successes=ok,
            uptime_percent=round(100.0 * ok / n, 3) if n else None,
            latency_min_ms=lo, latency_max_ms=hi,
            latency_avg_ms=round(lsum / ln, 2) if ln else None,
        )
        for b, n, ok, ln, lsum, lo, hi in rows
    ]
