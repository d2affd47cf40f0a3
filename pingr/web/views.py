"""What the dashboard shows, read from the App's memory and the cached aggregates: plain data
for the templates (no HTML here besides the charts' SVG)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from pingr.monitor import DOWN, PAUSED, PENDING, UNREACHABLE, UP, TargetState
from pingr.storage.rollup import HOUR_MS
from pingr.timeutil import from_ms
from pingr.web import charts
from pingr.web.stats import SPARK_HOURS, WINDOWS, Stats, avg_latency, buckets, uptime

if TYPE_CHECKING:
    from pingr.app import App

STALE = "stale"
#: Every state a target is shown in, in the order the overview counts them.
STATES = (DOWN, UNREACHABLE, STALE, PENDING, PAUSED, UP)
LABELS = {UP: "Up", DOWN: "Down", UNREACHABLE: "Unreachable", PAUSED: "Paused",
          STALE: "Stale", PENDING: "Pending"}
#: Field names whose values are credentials: shown to admin keys only, as in the API.
SECRET_WORDS = ("password", "secret", "token", "key", "auth", "credential", "cookie")
MASK = "••••••"


def fmt_time(ms: int | None) -> str:
    """`2026-05-01 12:00:03 UTC` (the page's script turns it into local time)."""
    return from_ms(ms).strftime("%Y-%m-%d %H:%M:%S UTC") if ms is not None else "—"


def iso(ms: int | None) -> str:
    return from_ms(ms).strftime("%Y-%m-%dT%H:%M:%SZ") if ms is not None else ""


def fmt_duration(seconds: float) -> str:
    """`3 d 4 h`, `5 h 12 min`, `42 s`."""
    s = int(seconds)
    d, h, m = s // 86400, s % 86400 // 3600, s % 3600 // 60
    if d:
        return f"{d} d {h} h"
    if h:
        return f"{h} h {m} min"
    if m:
        return f"{m} min {s % 60} s"
    return f"{s} s"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def display_state(state: TargetState, now: int, stale_factor: float, monitor_stale: bool) -> str:
    """up, down, unreachable, paused, pending, or stale: probed but no fresh result (the whole
    monitor is stale, or this target's last result is older than stale_factor × its interval)."""
    target = state.target
    if not target.enabled:
        return PAUSED
    if target.probed:
        spec = target.spec
        limit = stale_factor * spec.interval_seconds * 1000 + spec.timeout_ms
        if monitor_stale or (state.last is not None and now - state.last.ts > limit):
            return STALE
    return state.status


def href(target_id: str) -> str:
    return "/targets/" + quote(target_id, safe=":")


@dataclass
class TargetView:
    """One row of the overview, or the head of a target page."""

    id: str
    name: str
    kind: str
    state: str
    detail: str
    latency_ms: int | None
    last_ms: int | None
    error: str | None
    tags: list[str]
    probed: bool
    href: str
    pk: int
    alert_id: int | None
    uptime: dict[str, float | None] = field(default_factory=dict)
    spark: str = ""

    @property
    def label(self) -> str:
        return LABELS.get(self.state, self.state)


def target_view(app: App, state: TargetState, now: int) -> TargetView:
    target = state.target
    shown = display_state(state, now, app.config.alerts.stale_factor, app.monitor.stale)
    details = []
    if shown == UP and state.failures:
        details.append(f"{state.failures} failure{'s' if state.failures > 1 else ''} "
                       f"(alerts at {target.spec.failure_threshold})")
    if state.alert is not None and state.alert.acknowledged:
        details.append(f"acknowledged by {state.alert.acknowledged_by}")
    if shown == DOWN and app.silences.matching(target, now):
        details.append("silenced")
    if shown == UNREACHABLE:
        details.append(f"{target.spec.depends_on} is down")
    last = state.last
    return TargetView(
        id=target.id, name=target.name, kind=target.spec.type, state=shown,
        detail="; ".join(details), latency_ms=last.latency_ms if last else None,
        last_ms=last.ts if last else None,
        error=last.error if last is not None and not last.success else None,
        tags=list(target.spec.tags), probed=target.probed, href=href(target.id),
        pk=target.pk, alert_id=state.alert.id if state.alert is not None else None)


def overview_targets(app: App, now: int) -> list[TargetView]:
    """Every target the monitor knows, probed ones first, by name (memory only)."""
    return sorted((target_view(app, s, now) for s in app.monitor.states()),
                  key=lambda v: (not v.probed, v.name.lower()))


def add_stats(views: list[TargetView], stats: Stats) -> None:
    """Uptime per window and a 24-hour sparkline for the probed targets (collectors' targets
    keep no history). Reads the store: call it off the event loop."""
    windows = stats.windows()
    start, series = stats.sparklines()
    for v in views:
        if not v.probed or not v.pk:
            continue
        v.uptime = {name: uptime(windows[name].get(v.pk)) for name in WINDOWS}
        hours = buckets(start, series.get(v.pk), HOUR_MS, SPARK_HOURS)
        v.spark = charts.sparkline(hours, f"{v.name}, last 24 hours")


def counts(views: list[TargetView]) -> dict[str, int]:
    out = dict.fromkeys(STATES, 0)
    for v in views:
        out[v.state] = out.get(v.state, 0) + 1
    return out


def open_alerts(app: App) -> list[dict[str, Any]]:
    """Open alerts from memory, oldest first."""
    out = []
    for state in app.monitor.states():
        alert = state.alert
        if alert is None:
            continue
        out.append({"id": alert.id, "target": state.target.name,
                    "href": href(state.target.id), "opened": alert.opened_at,
                    "acknowledged": alert.acknowledged_at, "by": alert.acknowledged_by,
                    "failures": alert.peak_failures, "error": alert.last_error})
    return sorted(out, key=lambda a: (a["opened"], a["id"]))


def outputs(app: App) -> dict[str, Any]:
    """The outputs with what they show now, and the pins they drive."""
    mgr = app.outputs
    backend = mgr.backend
    items = []
    for s in mgr.states():
        if s.testing:
            shown = "testing"
        elif s.active and s.silenced_by:
            shown = f"silenced ({s.silenced_by.replace('_', ' ')})"
        else:
            shown = "on" if s.on else "off"
        items.append({"name": s.name, "kind": s.kind.replace("_", " "), "shown": shown,
                      "on": s.on, "audible": s.audible, "value": _value(s.value),
                      "heartbeat": not s.shows_states and
                      mgr.outputs[s.name].config.drive == "heartbeat"})
    return {"list": items, "state": mgr.state, "problem": mgr.problem,
            "backend": backend.name if backend else None,
            "real": bool(backend and backend.real), "duration": mgr.config.lamp_test.duration}


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "/".join(_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


def silences(app: App, now: int) -> list[dict[str, Any]]:
    return [{"id": r["id"], "targets": r["targets"], "tags": r["tags"],
             "starts": r["starts_at"], "ends": r["ends_at"],
             "active": r["starts_at"] <= now < r["ends_at"], "comment": r["comment"],
             "by": r["created_by"]} for r in app.silences.list()]


def appliance(app: App) -> list[dict[str, Any]]:
    """The box itself: (label, value, level ok|warn|bad|info) rows."""
    rows: list[dict[str, Any]] = []

    def add(label: str, value: str, lvl: str = "info") -> None:
        rows.append({"label": label, "value": value, "level": lvl})

    health = app.health()
    verdict = app.liveness.verdict
    if verdict.stale:
        add("Monitor", f"STALE: {verdict.reason}", "bad")
    elif not verdict.healthy:
        add("Monitor", f"unhealthy: {verdict.reason}", "bad")
    else:
        add("Monitor", f"healthy ({verdict.reason})", "ok")
    for problem in health.problems:
        add("Problem", problem, "bad")
    sample = app.host.sampler.latest
    if sample is None:
        add("Host", "not sampled yet")
    else:
        temp = sample.temperature_c
        add("CPU temperature", "not available" if temp is None else f"{temp:.1f} °C",
            "info" if temp is None else "bad" if temp >= 80 else "warn" if temp >= 70 else "ok")
        pi = sample.pi
        if not pi.available:
            add("Power", "not a Raspberry Pi: no undervoltage or throttling flags")
        elif pi.throttling is None:
            add("Power", "firmware flags not readable")
        else:
            t = pi.throttling
            now_flags = [name for name, on in (("undervoltage", t.undervoltage_now),
                                               ("throttled", t.throttled_now),
                                               ("frequency capped", t.frequency_capped_now),
                                               ("soft temperature limit",
                                                t.soft_temperature_limit_now)) if on]
            past = [name for name, on in (("undervoltage", t.undervoltage_since_boot),
                                          ("throttling", t.throttled_since_boot)) if on]
            if now_flags:
                add("Power", "now: " + ", ".join(now_flags), "bad")
            elif past:
                add("Power", "since boot: " + ", ".join(past), "warn")
            else:
                add("Power", "no undervoltage or throttling since boot", "ok")
        if pi.available and pi.model:
            add("Board", pi.model)
        if sample.cpu_percent is not None:
            add("CPU", f"{sample.cpu_percent:.0f}% of {sample.cores} cores")
        mem = sample.memory
        pct = float(mem.get("usage_percent", 0))
        add("Memory", f"{pct:.0f}% of {fmt_bytes(mem.get('total_bytes'))} used",
            "bad" if pct >= 95 else "warn" if pct >= 85 else "ok")
        for d in sample.disks:
            add(f"Disk {d.mount}", f"{d.usage_percent:.0f}% of {fmt_bytes(d.total_bytes)} used"
                + (" (read-only)" if d.read_only else ""),
                "bad" if d.usage_percent >= 90 else "warn" if d.usage_percent >= 80 else "ok")
        add("System uptime", fmt_duration(app.host.sampler.uptime()))
    add("pingr uptime", fmt_duration(time.monotonic() - app.started_at))
    add("Database", "ok" if health.db_error is None else f"write error: {health.db_error}",
        "ok" if health.db_error is None else "bad")
    if health.db_size_bytes is not None:
        add("Database size", fmt_bytes(health.db_size_bytes))
    if health.disk_bytes_per_day is not None:
        add("Card writes", f"{fmt_bytes(health.disk_bytes_per_day)} per day")
    return rows


# ---------------------------------------------------------------------- a target's settings


def _secret(name: str) -> bool:
    low = name.lower()
    return any(w in low for w in SECRET_WORDS)


def mask_url(url: str) -> str:
    """A URL without its password and query values (they often carry tokens)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", f":{MASK}@", 1)
    query = "&".join(f"{q.split('=', 1)[0]}={MASK}" if "=" in q else q
                     for q in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def settings(spec: Any, admin: bool) -> list[tuple[str, str]]:
    """A target's settings as (name, text) pairs; credentials masked unless `admin`."""
    out = []
    for name, value in spec.model_dump(mode="json").items():
        if name in ("name", "type") or value is None or value in ([], {}):
            continue
        if isinstance(value, dict):
            hide = not admin and name == "headers"  # Authorization, cookies, API keys
            text = ", ".join(f"{k}: {MASK if hide or (not admin and _secret(k)) else v}"
                             for k, v in value.items())
        elif isinstance(value, list):
            text = ", ".join(str(v) for v in value)
        else:
            text = str(value)
            if not admin and _secret(name):
                text = MASK
            elif not admin and name == "url":
                text = mask_url(text)
        out.append((name, text))
    return out


def history_window(window: str) -> tuple[int, int, str]:
    """(span ms, bucket ms, store resolution) of the target page's chart windows."""
    return {"24h": (86_400_000, 15 * 60_000, "minute"),
            "7d": (7 * 86_400_000, HOUR_MS, "hour"),
            "30d": (30 * 86_400_000, 4 * HOUR_MS, "hour")}[window]


def history_chart(app: App, view: TargetView, window: str, now: int) -> tuple[str, dict]:
    """The chart of one target over a window, and that window's uptime and latency."""
    span, size, resolution = history_window(window)
    start = (now - span) - (now - span) % size + size
    n = (now - start) // size + 1
    rows = app.store.history(view.pk, start, now, resolution, lean=True)
    buckets = charts.fold(rows, start, size, n)
    count = sum(b[1] for b in buckets if b)
    ok = sum(b[2] for b in buckets if b)
    lat_n = sum(b[3] for b in buckets if b)
    lat_sum = sum(b[4] for b in buckets if b)
    figures = {"uptime": uptime((count, ok, 0, 0, None, None)),
               "latency": avg_latency((count, ok, lat_n, lat_sum, None, None)),
               "probes": count}
    return charts.history(buckets, start, size, f"{view.name}, last {window}"), figures


def incidents(app: App, target_id: str, limit: int = 20) -> list[dict[str, Any]]:
    """A target's alerts, newest first, with their open, acknowledge and resolve times."""
    rows = [a for a in app.store.alerts("all", 1000) if a.target_id == target_id][:limit]
    return [{"id": a.id, "opened": a.opened_at, "acknowledged": a.acknowledged_at,
             "by": a.acknowledged_by, "resolved": a.resolved_at, "failures": a.peak_failures,
             "error": a.last_error,
             "duration": fmt_duration(((a.resolved_at or app.clock_ms()) - a.opened_at) / 1000)}
            for a in rows]


def recent_results(app: App, view: TargetView, now: int, limit: int = 30) -> list[dict]:
    rows = app.store.target_results(view.pk, now - 86_400_000, now, limit)
    return [{"ts": r.ts, "success": r.success, "latency": r.latency_ms,
             "code": r.status_code, "error": r.error} for r in rows]
