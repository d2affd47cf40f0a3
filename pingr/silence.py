"""Silences: mute notifications and audible outputs for matching targets for a while."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlmodel import delete, select

from pingr.models import Target
from pingr.monitor import Event
from pingr.storage.tables import SilenceRow
from pingr.store import Store

log = logging.getLogger(__name__)

#: Expired silences stay listed (and in the database) this long, then are deleted.
KEEP_EXPIRED_MS = 7 * 86400 * 1000


class Silences:
    """Active and upcoming silences in memory; the monitor asks `is_silenced` for its snapshot.

    When one starts or ends, `on_edge` is called with a `silence.changed` event (the App
    refreshes the snapshot, so outputs and notifications follow).
    """

    def __init__(self, store: Store, clock_ms: Callable[[], int],
                 on_edge: Callable[[Event], None]) -> None:
        self.store = store
        self.clock_ms = clock_ms
        self.on_edge = on_edge
        self.rows: dict[int, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._active: frozenset[int] = frozenset()

    def load(self) -> None:
        """Read the silences in force or upcoming (before the monitor builds its snapshot)."""
        now = self.clock_ms()
        with self.store.session() as s:
            rows = s.exec(select(SilenceRow)
                          .where(SilenceRow.ends_at > now - KEEP_EXPIRED_MS)).all()
            self.rows = {r.id: r.model_dump() for r in rows if r.id is not None}
        self._active = self._active_ids(now)

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="silences")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # ------------------------------------------------------------------ queries

    def _active_ids(self, now: int) -> frozenset[int]:
        return frozenset(i for i, r in self.rows.items() if r["starts_at"] <= now < r["ends_at"])

    def matching(self, target: Target, now: int | None = None) -> list[dict[str, Any]]:
        """Silences in force now that cover `target`."""
        now = self.clock_ms() if now is None else now
        tags = set(target.spec.tags)
        return [r for r in self.rows.values() if r["starts_at"] <= now < r["ends_at"]
                and (target.name in r["targets"] or tags.intersection(r["tags"]))]

    def is_silenced(self, target: Target) -> bool:
        """True while a silence covers the target (cheap: called on every snapshot rebuild)."""
        return bool(self._active) and bool(self.matching(target))

    def list(self, include_expired: bool = False) -> list[dict[str, Any]]:
        now = self.clock_ms()
        rows = sorted(self.rows.values(), key=lambda r: (r["starts_at"], r["id"]))
        return [r for r in rows if include_expired or r["ends_at"] > now]

    # ------------------------------------------------------------------ changes

    async def create(self, *, targets: list[str], tags: list[str], starts_at: int, ends_at: int,
                     comment: str | None, by: str | None) -> dict[str, Any]:
        ts = self.clock_ms()

        def work(s: Any) -> dict[str, Any]:
            row = SilenceRow(targets=targets, tags=tags, starts_at=starts_at, ends_at=ends_at,
                             comment=comment, created_by=by, created_at=ts)
            s.add(row)
            s.flush()
            return row.model_dump()

        row = await self.store.write(work)
        self.rows[row["id"]] = row
        log.info("silence %d created by %s for targets %s tags %s", row["id"], by, targets, tags)
        self._changed()
        return row

    async def delete(self, silence_id: int) -> bool:
        if silence_id not in self.rows:
            return False
        await self.store.write(
            lambda s: s.exec(delete(SilenceRow).where(SilenceRow.id == silence_id)))
        self.rows.pop(silence_id, None)
        log.info("silence %d deleted", silence_id)
        self._changed()
        return True

    def _changed(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        """Refresh the snapshot whenever a silence starts or ends (outputs follow it)."""
        assert self._wake is not None
        while True:
            now = self.clock_ms()
            active = self._active_ids(now)
            if active != self._active:
                self._active = active
                self.on_edge(Event("silence.changed", now, data={"active": sorted(active)}))
            expired = [i for i, r in self.rows.items() if r["ends_at"] <= now - KEEP_EXPIRED_MS]
            for i in expired:
                self.rows.pop(i, None)
            edges = [t for r in self.rows.values() for t in (r["starts_at"], r["ends_at"])
                     if t > now]
            wait = min([60.0, *((t - now) / 1000 for t in edges)])
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.01, wait))
