"""Probe results and uptime summaries."""

from __future__ import annotations

from typing import Any

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
from pingr.api.schemas import (
    DailyUptimeOut,
    HistoryBucketOut,
    LatestList,
    LatestOut,
    ResultItem,
    ResultList,
    ResultOut,
    SummaryItem,
    SummaryList,
    TargetResults,
    TargetSummary,
)
from pingr.storage.rollup import DAY_MS
from pingr.timeutil import from_ms, now_ms

router = APIRouter(tags=["results"], dependencies=[require("read")])


@router.get("/results/latest-by-target", response_model=LatestList,
            responses=errors(*AUTH_ERRORS))
async def latest_by_target(app=Depends(get_app)) -> LatestList:
    """The newest result of every enabled target, from memory (on the loop); newest first."""
    out = []
    for state in app.monitor.states():
        r = state.last
        if r is None or not state.target.enabled or not state.target.probed:
            continue
        out.append(LatestOut(target_id=r.target_id, target_name=state.target.name,
                             status=state.status, ts=from_ms(r.ts), success=r.success,
                             latency_ms=r.latency_ms, status_code=r.status_code,
                             error=None if r.success else r.error))
    out.sort(key=lambda x: x.ts, reverse=True)
    return LatestList(items=out)


@router.get("/results/latest", response_model=ResultList, responses=errors(400, *AUTH_ERRORS))
def latest(limit: int = Query(200, description="1 to 1000; larger values are clamped"),
           app=Depends(get_app)) -> ResultList:
    """The newest results across all targets, newest first."""
    by_pk = {t.pk: t for t in app.targets.values()}
    rows = app.store.latest_results(parse_limit(limit))
    return ResultList(items=[ResultOut.of(r, by_pk[r.target_pk]) for r in rows
                             if r.target_pk in by_pk])


@router.get("/targets/{target_id}/results", response_model=TargetResults,
            responses=errors(400, 404, *AUTH_ERRORS))
def target_results(
    target_id: str,
    since: str | None = Query(None, description="RFC 3339; default 24 hours ago"),
    until: str | None = Query(None, description="RFC 3339; default now"),
    limit: int = Query(200, description="1 to 1000; larger values are clamped"),
    app=Depends(get_app),
) -> TargetResults:
    """One target's results in [since, until], newest first."""
    target = app.targets.get(target_id)
    if target is None:
        raise HTTPException(404, f"no target with id {target_id}")
    now = now_ms()
    start = parse_time_param("since", since, now - 86_400_000)
    end = parse_time_param("until", until, now)
    if start > end:
        raise HTTPException(400, "since must not be after until")
    rows = app.store.target_results(target.pk, start, end, parse_limit(limit))
    return TargetResults(target_id=target.id, target_name=target.name,
                         items=[ResultItem.of(r) for r in rows])


def _summaries(app, seconds: float, targets: list[Any], one: bool = False) -> list[SummaryItem]:
    now = now_ms()
    stats = app.store.summary(now - int(seconds * 1000), targets[0].pk if one else None, now)
    out = []
    for t in sorted(targets, key=lambda t: t.name.lower()):
        total, ok, avg = stats.get(t.pk, (0, 0, None))
        out.append(SummaryItem(
            target_id=t.id, target_name=t.name,
            uptime_percent=round(100.0 * ok / total, 3) if total else None,
            avg_latency_ms=round(avg, 2) if avg is not None else None,
            total_probes=total,
        ))
    return out


@router.get("/summary", response_model=SummaryList, responses=errors(400, *AUTH_ERRORS))
def summary(window: str = Query("1h", description="a duration: 15m, 1h, 24h, 7d"),
            app=Depends(get_app)) -> SummaryList:
    """Uptime and average latency of every enabled target over the window (echoed as given),
    by target name."""
    seconds = parse_window(window)
    targets = [t for t in app.targets.values() if t.enabled]
    return SummaryList(window=window, items=_summaries(app, seconds, targets) if targets else [])


@router.get("/summary/{target_id}", response_model=TargetSummary,
            responses=errors(400, 404, *AUTH_ERRORS))
def target_summary(target_id: str,
                   window: str = Query("1h", description="a duration: 15m, 1h, 24h, 7d"),
                   app=Depends(get_app)) -> TargetSummary:
    """Uptime and average latency of one target over the window."""
    target = app.targets.get(target_id)
    if target is None:
        raise HTTPException(404, f"no target with id {target_id}")
    (item,) = _summaries(app, parse_window(window), [target], one=True)
    return TargetSummary(window=window, **item.model_dump())


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
