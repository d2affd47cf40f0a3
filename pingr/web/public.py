"""The public status page's content: components under public names, never a host, URL, error
or target name. Shared by /status, /status/events and GET /api/v1/status-page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pingr.monitor import DOWN, PAUSED, PENDING, UNREACHABLE
from pingr.storage.rollup import DAY_MS, Totals, combine
from pingr.web.config import StatusComponent, StatusPageConfig
from pingr.web.stats import WINDOWS, Stats, uptime
from pingr.web.views import STALE, display_state, iso

if TYPE_CHECKING:
    from pingr.app import App

#: A component's status, in the words the public reads.
WORDS = {"up": "Operational", "degraded": "Partial outage", "down": "Outage",
         "maintenance": "Maintenance", "unknown": "Unknown"}
#: The banner over the page.
BANNERS = {"operational": "All systems operational", "partial_outage": "Partial outage",
           "major_outage": "Major outage",
           "unknown": "Status unknown: the monitor has no recent results"}
DAYS = 90
INCIDENT_DAYS = 90


def component_status(states: list[str]) -> str:
    """up, degraded (some of its targets down), down (all), maintenance (all paused), unknown."""
    active = [s for s in states if s != PAUSED]
    if not states:
        return "unknown"
    if not active:
        return "maintenance"
    down = sum(s in (DOWN, UNREACHABLE) for s in active)
    if down == len(active):
        return "down"
    if down:
        return "degraded"
    if any(s in (STALE, PENDING) for s in active):
        return "unknown"
    return "up"


def overall(statuses: list[str], monitor_stale: bool) -> str:
    """operational, partial_outage, major_outage (more than half of the components down), or
    unknown (the monitor itself is stale: the page must not claim all is well)."""
    if monitor_stale or not statuses:
        return "unknown"
    down = sum(s == "down" for s in statuses)
    if down * 2 > len(statuses):
        return "major_outage"
    if down or "degraded" in statuses:
        return "partial_outage"
    if "unknown" in statuses:
        return "unknown"
    return "operational"


@dataclass
class Component:
    name: str
    group: str
    description: str | None
    status: str
    #: Target ids and row numbers behind it (never shown).
    ids: list[str]
    pks: list[int]
    latency_ms: int | None

    @property
    def word(self) -> str:
        return WORDS[self.status]


def components(app: App, page: StatusPageConfig, now: int) -> list[Component]:
    """Every component with its live status, from memory."""
    out = []
    for group in page.groups:
        for comp in group.components:
            out.append(_component(app, group.name, comp, now))
    return out


def _component(app: App, group: str, comp: StatusComponent, now: int) -> Component:
    states, ids, pks, latencies = [], [], [], []
    for name in comp.targets:
        target = app.monitor.target_named(name)
        state = app.monitor.state_of(target.id) if target is not None else None
        if state is None:
            states.append(PENDING)
            continue
        shown = display_state(state, now, app.config.alerts.stale_factor, app.monitor.stale)
        states.append(shown)
        ids.append(state.target.id)
        if state.target.pk:
            pks.append(state.target.pk)
        if state.last is not None and state.last.success and state.last.latency_ms is not None:
            latencies.append(state.last.latency_ms)
    return Component(comp.name, group, comp.description, component_status(states), ids, pks,
                     round(sum(latencies) / len(latencies)) if latencies else None)


def live(app: App, page: StatusPageConfig, now: int) -> dict[str, Any]:
    """What /status/events sends: the banner and each component's status (memory only)."""
    comps = components(app, page, now)
    state = overall([c.status for c in comps], app.monitor.stale)
    return {"status": {"indicator": state, "message": BANNERS[state]},
            "components": [{"name": c.name, "status": c.status, "label": c.word}
                           for c in comps]}


def _sum(parts: list[Totals | None]) -> Totals | None:
    found = {i: t for i, t in enumerate(parts) if t is not None}
    if not found:
        return None
    return combine([{0: t} for t in found.values()])[0]


def incidents(app: App, stats: Stats, comps: list[Component], now: int) -> list[dict[str, Any]]:
    """Alerts of the components' targets in the last INCIDENT_DAYS, newest first, titled by
    the component (the target's name and the error stay private)."""
    since = now - INCIDENT_DAYS * DAY_MS

    def read() -> list[tuple[str, int, int | None, bool]]:
        return [(a.target_id, a.opened_at, a.resolved_at, a.acknowledged)
                for a in app.store.alerts("all", 1000) if a.opened_at >= since]

    out = []
    for target_id, opened, resolved, acknowledged in stats.cached("alerts", read, ttl=5.0):
        if opened < since:
            continue
        for c in comps:
            if target_id not in c.ids:
                continue
            status = ("resolved" if resolved is not None else
                      "identified" if acknowledged else "investigating")
            out.append({"title": f"{c.name}: outage", "component": c.name, "status": status,
                        "startTime": iso(opened), "endTime": iso(resolved) or None,
                        "start_ms": opened, "end_ms": resolved})
    return out[:50]


def page_data(app: App, stats: Stats, page: StatusPageConfig, comps: list[Component],
              now: int) -> dict[str, Any]:
    """Everything the page and its JSON show, given the components' live status (read on the
    event loop); the figures come from the store (daily bars as (date, count, successes))."""
    windows = stats.windows()
    pks = sorted({pk for c in comps for pk in c.pks})
    daily = stats.daily(pks, DAYS)
    today = now - now % DAY_MS
    days = [today - (DAYS - 1 - i) * DAY_MS for i in range(DAYS)]
    monitors = []
    for c in comps:
        up = {name: uptime(_sum([windows[name].get(pk) for pk in c.pks])) for name in WINDOWS}
        bars = []
        for day in days:
            t = _sum([daily.get(pk, {}).get(day) for pk in c.pks])
            bars.append((iso(day)[:10], t[0] if t else 0, t[1] if t else 0))
        total = _sum([daily.get(pk, {}).get(day) for pk in c.pks for day in days])
        monitors.append({"component": c, "uptime": up, "bars": bars,
                         "uptime_90d": uptime(total)})
    state = overall([c.status for c in comps], app.monitor.stale)
    groups: dict[str, list[dict[str, Any]]] = {}
    for m in monitors:
        groups.setdefault(m["component"].group, []).append(m)
    return {"title": page.title, "description": page.description, "indicator": state,
            "banner": BANNERS[state], "groups": groups, "monitors": monitors,
            "incidents": incidents(app, stats, comps, now), "updated": now}


def page_json(data: dict[str, Any]) -> dict[str, Any]:
    """GET /api/v1/status-page: Peekaping's status-page shape, plus the banner and groups."""
    return {
        "title": data["title"],
        "description": data["description"],
        "status": {"indicator": data["indicator"], "message": data["banner"]},
        "monitors": [{"name": m["component"].name, "group": m["component"].group,
                      "status": m["component"].status,
                      "responseTime": m["component"].latency_ms,
                      "uptime": m["uptime"],
                      "daily": [{"date": d, "uptime": round(100 * ok / n, 3) if n else None}
                                for d, n, ok in m["bars"]]}
                     for m in data["monitors"]],
        "incidents": [{k: i[k] for k in ("title", "status", "startTime", "endTime")}
                      for i in data["incidents"]],
        "updatedAt": iso(data["updated"]),
    }
