"""Container timelines: every change of state or health (and each restart loop), kept per
container name, written in batches (a container flapping every second must not cost a commit
per change)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, select

from pingr.collectors.timeline import Transition
from pingr.storage.tables import ContainerTransitionRow
from pingr.store import Store

log = logging.getLogger(__name__)

#: Transitions wait in memory at most this long before they are written (one commit): a
#: container in a crash loop changes every few seconds, and a commit costs whole pages of
#: card writes. Reads see the waiting ones; a crash loses at most this much of the timeline.
FLUSH_AFTER = 300.0
#: Transitions kept per container name (older ones are deleted as new ones come).
KEEP = 1000
#: Transitions held in memory while the disk refuses writes (the oldest are dropped).
MAX_PENDING = 5000


class ContainerTimeline:
    """Buffers transitions, writes them within FLUSH_AFTER, and reads them back merged."""

    def __init__(self, store: Store, clock_ms: Callable[[], int],
                 flush_after: float = FLUSH_AFTER) -> None:
        self.store = store
        self.clock_ms = clock_ms
        self.flush_after = flush_after
        self.pending: list[Transition] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None

    def record(self, found: list[Transition]) -> None:
        """Keep these transitions (written within `flush_after` seconds)."""
        self.pending.extend(found)
        del self.pending[:-MAX_PENDING]
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_after, self._due)

    def _due(self) -> None:
        self._timer = None
        self._flushing = asyncio.get_running_loop().create_task(self.flush())

    async def flush(self) -> None:
        """Write what waits (one transaction); on failure it waits for the next try."""
        batch, self.pending = self.pending, []
        if not batch:
            return
        names = sorted({t.name for t in batch})

        def work(s: Session) -> None:
            for t in batch:
                s.add(ContainerTransitionRow(name=t.name, container_id=t.container_id, ts=t.ts,
                                             kind=t.kind, old=t.old, new=t.new,
                                             exit_code=t.exit_code, detail=t.detail))
            s.flush()
            for name in names:
                s.execute(text(
                    "DELETE FROM container_transitions WHERE name = :n AND id <= (SELECT id "
                    "FROM container_transitions WHERE name = :n ORDER BY id DESC LIMIT 1 "
                    "OFFSET :keep)"), {"n": name, "keep": KEEP})

        try:
            await self.store.write(work)
        except Exception as exc:  # disk full, read-only: keep them for the next try
            log.warning("saving container transitions failed, will retry: %s", exc)
            self.record(batch)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)
        await self.flush()

    def names(self) -> set[str]:
        """Containers with transitions in memory (the API also finds stored ones by name)."""
        return {t.name for t in self.pending}

    async def list(self, name: str, limit: int) -> list[dict[str, Any]]:
        """A container's transitions, newest first (stored and waiting alike)."""
        def read(s: Session) -> list[ContainerTransitionRow]:
            rows = s.exec(select(ContainerTransitionRow)
                          .where(ContainerTransitionRow.name == name)
                          .order_by(ContainerTransitionRow.id.desc()).limit(limit)).all()
            return [ContainerTransitionRow(**r.model_dump()) for r in rows]

        waiting = [t for t in self.pending if t.name == name]
        stored = await self.store.write(read)
        out = [{"ts": t.ts, "kind": t.kind, "old": t.old, "new": t.new,
                "exit_code": t.exit_code, "detail": t.detail, "container_id": t.container_id}
               for t in reversed(waiting)]
        out += [{"ts": r.ts, "kind": r.kind, "old": r.old, "new": r.new,
                 "exit_code": r.exit_code, "detail": r.detail, "container_id": r.container_id}
                for r in stored]
        return out[:limit]
