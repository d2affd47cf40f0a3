"""Server-Sent Events broker: every change and result to bounded per-client queues."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from typing import Any

from pingr.models import Alert, Result, Target
from pingr.monitor import Change, Event
from pingr.settings import EventsConfig
from pingr.timeutil import from_ms, rfc3339

log = logging.getLogger(__name__)

#: The types a client may ask for; target.check_result is one per probe result.
EVENT_TYPES = (
    "target.check_result", "target.down", "target.up", "target.unreachable", "target.paused",
    "target.deleted", "alert.acknowledged", "monitor.stale", "monitor.fresh",
    "heartbeat.pinged", "heartbeat.missed", "silence.changed",
    "certificate.alert", "certificate.recovery",
    "container.state_changed", "container.health_changed", "container.restart_alert",
)


def iso(ms: int | None) -> str | None:
    """Epoch milliseconds as RFC 3339 UTC, or None."""
    return rfc3339(from_ms(ms)) if ms is not None else None


def alert_json(alert: Alert | None) -> dict[str, Any] | None:
    """An alert with API-style timestamps."""
    if alert is None:
        return None
    out = asdict(alert)
    for key in ("opened_at", "resolved_at", "acknowledged_at"):
        out[key] = iso(out.get(key))
    return out


def target_json(target: Target | None) -> dict[str, Any] | None:
    if target is None:
        return None
    return {"id": target.id, "name": target.name, "type": target.spec.type,
            "tags": list(target.spec.tags)}


def event_payload(event: Event) -> dict[str, Any]:
    """The JSON body of an event, shared by the SSE stream and outgoing webhooks."""
    out: dict[str, Any] = {"type": event.type, "ts": iso(event.ts),
                           "target": target_json(event.target)}
    if event.old is not None or event.new is not None:
        out["old"], out["new"] = event.old, event.new
    if event.alert is not None:
        out["alert"] = alert_json(event.alert)
    if event.result is not None:
        out["error"] = event.result.error
    if event.data:
        out["data"] = event.data
    return out


def result_payload(target: Target, result: Result) -> dict[str, Any]:
    return {"type": "target.check_result", "ts": iso(result.ts), "target": target_json(target),
            "success": result.success, "latency_ms": result.latency_ms,
            "status_code": result.status_code, "error": result.error}


class Subscriber:
    """One connected client: a bounded queue of encoded messages and an optional type filter."""

    def __init__(self, size: int, types: frozenset[str] | None) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(size)
        self.types = types
        self.overflowed = False


class EventBroker:
    """Fans events out to SSE clients; a client that falls behind is disconnected, not buffered."""

    def __init__(self, config: EventsConfig) -> None:
        self.queue_size = config.queue_size
        self.keepalive = config.keepalive
        self.max_clients = config.max_clients
        self.subscribers: set[Subscriber] = set()
        self._ids = itertools.count(1)
        self.published = 0

    def close(self) -> None:
        """End every stream (shutdown)."""
        for sub in list(self.subscribers):
            self._close(sub)

    def on_change(self, change: Change) -> None:
        """Every event of a change, in order."""
        for event in change.events:
            self.on_event(event)

    def on_event(self, event: Event) -> None:
        if self.subscribers:
            self.publish(event.type, event_payload(event))

    def on_result(self, target: Target, result: Result) -> None:
        if self.subscribers:
            self.publish("target.check_result", result_payload(target, result))

    def publish(self, type_: str, data: dict[str, Any]) -> None:
        """Queue one event for every interested client (encoded once, shared)."""
        message = (f"id: {next(self._ids)}\nevent: {type_}\n"
                   f"data: {json.dumps(data, separators=(',', ':'))}\n\n").encode()
        self.published += 1
        for sub in list(self.subscribers):
            if sub.types is not None and type_ not in sub.types:
                continue
            try:
                sub.queue.put_nowait(message)
            except asyncio.QueueFull:
                # Buffering for a slow reader would grow without bound; it reconnects instead
                # (EventSource does so by itself) and gets a fresh, consistent stream.
                sub.overflowed = True
                log.warning("an event stream client fell %d events behind: disconnected",
                            self.queue_size)
                self._close(sub)

    def subscribe(self, types: frozenset[str] | None = None) -> Subscriber | None:
        """A new client, or None when max_clients are connected."""
        if len(self.subscribers) >= self.max_clients:
            return None
        sub = Subscriber(self.queue_size, types)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def _close(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.queue.put_nowait(None)

    async def stream(self, sub: Subscriber, stopping: Callable[[], bool]) -> AsyncIterator[bytes]:
        """The SSE body: events as they come, a comment line every `keepalive` seconds."""
        try:
            yield b"retry: 3000\n: connected\n\n"
            last = time.monotonic()
            while True:
                # Wake at least twice a second so a shutting-down server is never held open.
                wait = max(0.01, min(0.5, self.keepalive - (time.monotonic() - last)))
                try:
                    message = await asyncio.wait_for(sub.queue.get(), wait)
                except TimeoutError:
                    if stopping():
                        return
                    if time.monotonic() - last >= self.keepalive:
                        last = time.monotonic()
                        yield b": keep-alive\n\n"
                    continue
                if message is None:
                    if sub.overflowed:
                        yield b"event: overflow\ndata: {}\n\n"
                    return
                last = time.monotonic()
                yield message
        finally:
            self.unsubscribe(sub)
