"""The public status page (/status) and its live stream (/status/events): no key needed,
limited per client address like the API is per key."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.responses import Response

from pingr.web import charts, public, views
from pingr.web.render import html_response
from pingr.web.site import PageError, Site

router = APIRouter(include_in_schema=False)
#: How often the live stream looks at the monitor's memory (no I/O) for a change to send.
POLL = 1.0


def _site(request: Request) -> Site:
    return request.app.state.web


def public_gate(request: Request) -> Site:
    """The status page is on, and this address is within its per-minute limit."""
    site = _site(request)
    if not site.config.status_page.enabled:
        raise PageError(404, "This pingr has no public status page (web.status_page.enabled "
                             "is off in its pingr.yaml).")
    decision = site.public_limit.hit(site.client_ip(request))
    if not decision.allowed:
        raise PageError(429, f"Rate limit exceeded. Try again in {decision.retry_after} "
                             "seconds.", {"Retry-After": str(decision.retry_after)})
    return site


@router.get("/status")
async def status_page(request: Request) -> Response:
    started = time.perf_counter()
    site = public_gate(request)
    now = site.app.clock_ms()
    # The live part from memory on the loop; the stored figures on a worker thread.
    live = public.components(site.app, site.config.status_page, now)

    def finish() -> str:
        data = public.page_data(site.app, site.stats, site.config.status_page, live, now)
        for mon in data["monitors"]:
            mon["svg"] = charts.uptime_bars(mon["bars"], f"{mon['component'].name}, 90 days")
        return site.renderer.render("status.html", {
            **site.context(request, None), "page": data, "live": live,
            "words": public.WORDS, "fmt_time": views.fmt_time, "iso": views.iso,
            "uptime_fmt": _pct})

    return html_response(request, await site.run(finish), started=started,
                         cache="no-cache")


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}%"


@router.get("/status/events")
async def status_events(request: Request) -> Response:
    """Server-Sent Events: `status` (the banner and every component's status) at once and
    whenever it changes; a comment line every 15 s keeps proxies from closing it."""
    site = public_gate(request)
    limit = site.config.status_page.max_clients
    if site.status_clients >= limit:
        raise PageError(503, f"Too many live status clients (max {limit}); the page still "
                             "works when reloaded.")
    site.status_clients += 1
    return StreamingResponse(_stream(site), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _stream(site: Site) -> AsyncIterator[bytes]:
    app = site.app
    keepalive = app.config.events.keepalive
    try:
        yield b"retry: 3000\n: connected\n\n"
        sent: dict[str, Any] | None = None
        quiet_since = time.monotonic()
        n = 0
        while not app.stopping:
            state = public.live(app, site.config.status_page, app.clock_ms())
            if state != sent:
                sent = state
                n += 1
                quiet_since = time.monotonic()
                yield (f"id: {n}\nevent: status\n"
                       f"data: {json.dumps(state, separators=(',', ':'))}\n\n").encode()
            elif time.monotonic() - quiet_since >= keepalive:
                quiet_since = time.monotonic()
                yield b": keep-alive\n\n"
            await asyncio.sleep(POLL)
    finally:
        site.status_clients -= 1
