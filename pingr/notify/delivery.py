"""Delivering notifications: a persistent queue, retries with back-off, the delivery log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlmodel import select

from pingr.notify.urls import apprise_module, load_apprise
from pingr.settings import NotifySettings
from pingr.storage.tables import (
    DROPPED,
    FAILED,
    OPEN_STATES,
    RETRYING,
    SENT,
    DeliveryRow,
)
from pingr.store import Store
from pingr.timeutil import format_duration

log = logging.getLogger(__name__)


class Deliveries:
    """The queue (in memory and in the delivery log table) and one attempt at a time per row.

    A row is `queued` or `retrying` while it waits; `sent`, `failed`, `dropped` or
    `suppressed` afterwards. Interrupted deliveries stay queued and go out after a restart.
    """

    def __init__(self, settings: NotifySettings, store: Store,
                 clock_ms: Callable[[], int]) -> None:
        self.settings = settings
        self.store = store
        self.clock_ms = clock_ms
        #: delivery id -> row dict (queued or retrying).
        self.queue: dict[int, dict[str, Any]] = {}
        self.in_flight: set[int] = set()
        self._sem: asyncio.Semaphore | None = None

    def load(self, session: Any) -> None:
        """The queue as the last run left it."""
        pending = session.exec(select(DeliveryRow).where(DeliveryRow.state.in_(OPEN_STATES))
                               .order_by(DeliveryRow.id)).all()
        self.queue = {r.id: r.model_dump() for r in pending if r.id is not None}
        self._sem = asyncio.Semaphore(self.settings.max_concurrency)

    async def insert(self, row: DeliveryRow) -> dict[str, Any]:
        """Add a row to the log (the newest `log_size` are kept; open ones never pruned)."""
        keep = self.settings.log_size

        def work(s: Any) -> dict[str, Any]:
            s.add(row)
            s.flush()
            s.exec(text(
                "DELETE FROM notify_deliveries WHERE state NOT IN ('queued', 'retrying') AND id <= "
                "(SELECT id FROM notify_deliveries ORDER BY id DESC LIMIT 1 OFFSET :keep)"
            ).bindparams(keep=keep))
            return row.model_dump()

        return await self.store.write(work)

    async def enqueue(self, row: DeliveryRow) -> None:
        """Log a queued row and keep the queue within `queue_size` (oldest dropped first)."""
        data = await self.insert(row)
        self.queue[data["id"]] = data
        overflow = len(self.queue) - self.settings.queue_size
        if overflow > 0:
            for old_id in sorted(i for i in self.queue if i not in self.in_flight)[:overflow]:
                old = self.queue.pop(old_id)
                old.update(state=DROPPED, last_error="queue full: dropped for newer messages",
                           updated_at=self.clock_ms())
                await self.save(old)
                log.warning("notification queue full: dropped a message for channel %r",
                            old["channel_name"])

    async def save(self, data: dict[str, Any]) -> None:
        copy = dict(data)
        await self.store.write(lambda s: s.merge(DeliveryRow(**copy)))

    def due(self, now: int) -> tuple[list[int], int]:
        """(ids to attempt now, ms of the next attempt after those)."""
        ready, next_due = [], now + 3_600_000
        for did, data in self.queue.items():
            if did in self.in_flight:
                continue
            if data["next_attempt_at"] <= now:
                ready.append(did)
            else:
                next_due = min(next_due, data["next_attempt_at"])
        return ready, next_due

    async def attempt(self, did: int, url: str | None) -> None:
        """One attempt for a queued row (`url` None: its channel was deleted)."""
        data = self.queue.get(did)
        if data is None:
            return
        self.in_flight.add(did)
        try:
            if url is None:
                ok, error = False, "channel deleted"
                data["attempts"] = self.settings.max_attempts - 1
            else:
                ok, error = await self.send(url, data["title"], data["body"], data["notify_type"])
            now = self.clock_ms()
            data["attempts"] += 1
            data["updated_at"] = now
            data["last_error"] = error
            if ok:
                data["state"] = SENT
                self.queue.pop(did, None)
            elif data["attempts"] >= self.settings.max_attempts:
                data["state"] = FAILED
                self.queue.pop(did, None)
                log.warning("notification to channel %r failed %d times, giving up: %s",
                            data["channel_name"], data["attempts"], error)
            else:
                delay = min(self.settings.retry_max,
                            self.settings.retry_base * 2 ** (data["attempts"] - 1))
                data["state"], data["next_attempt_at"] = RETRYING, now + round(delay * 1000)
                if data["attempts"] == 1:
                    log.info("notification to channel %r failed (%s); retrying with back-off",
                             data["channel_name"], error)
            await self.save(data)
        finally:
            self.in_flight.discard(did)

    async def send(self, url: str, title: str, body: str,
                   notify_type: str) -> tuple[bool, str | None]:
        """One delivery attempt through apprise, bounded in time and concurrency."""
        apprise = await load_apprise()
        apprise_module()  # cheap once loaded; re-asserts that apprise's logs stay its own
        timeout = self.settings.timeout
        assert self._sem is not None
        async with self._sem:
            ap = apprise.Apprise()
            if not ap.add(url):
                return False, "apprise cannot use this URL"
            try:
                async with asyncio.timeout(timeout + 1):
                    result = await ap.async_notify(body=body, title=title, notify_type=notify_type,
                                                   timeout=timeout, log_level=logging.WARNING)
            except TimeoutError:
                return False, f"no answer within {format_duration(timeout)}"
            except Exception as exc:  # apprise plugin bugs: report the type, never the URL
                return False, f"apprise error: {type(exc).__name__}"
        if result:
            return True, None
        messages = [entry.message for entry in result.logs()]
        return False, (messages[-1] if messages else "delivery failed")[:500]
