"""Keeping the database small: retention by whole days, the size cap, giving pages back."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from sqlalchemy import text

from pingr.storage import rollup
from pingr.storage.schema import MINUTE, RAW
from pingr.storage.writer import Writer

log = logging.getLogger(__name__)

#: Rows deleted per statement by retention: small enough that the writer never holds the
#: database lock for long, large enough that a day of results goes in a few hundred steps.
DELETE_BATCH = 5000
#: Free pages always kept for reuse (1 MB at 4 KB pages) before incremental vacuum runs.
RESERVE_PAGES = 256
#: Over the size cap, data is removed until the used pages are this fraction of the cap, so
#: the cap is not hit again by the next batch (each round of removal costs writes).
CAP_HEADROOM = 0.9


class Retention(Writer):
    """Retention and the size cap of pingr.store.Store (they run on its writer thread)."""

    path: Path
    retention_ms: int
    minute_retention_ms: int
    hour_retention_ms: int
    max_size: int
    cap_removed: int

    # ------------------------------------------------------------------ retention

    def cleanup(self, older_than_ms: int | None = None) -> int:
        """Drop raw results and per-minute aggregates past retention (whole days), delete
        per-hour aggregates past theirs, enforce the size cap, then return free pages to the
        disk when many are free. Returns the number of raw results removed.

        Retention works in whole UTC days: a day's table goes when all of it is older than
        the cutoff, so raw results are kept between `retention` and a day more."""
        assert self.engine is not None
        cutoff = older_than_ms if older_than_ms is not None else self.clock_ms() - self.retention_ms
        total = self._drop_days(RAW, cutoff)
        now = self.clock_ms()
        buckets = (self._drop_days(MINUTE, now - self.minute_retention_ms)
                   + self._delete_buckets("rollup_hour", now - self.hour_retention_ms)
                   + self._delete_buckets("rollup_day", now - now % rollup.DAY_MS
                                          - rollup.DAILY_HORIZON_MS))
        capped = self.enforce_cap(vacuum=False)
        if capped or ((total or buckets) and self._free_pages_over_reserve()):
            self._vacuum()
        if total:
            log.info("retention removed %d results older than the cutoff", total)
        return total

    def _drop_days(self, kind: str, cutoff: int) -> int:
        """Drop the day tables of `kind` whose whole day is before `cutoff`; rows removed."""
        assert self.engine is not None
        total = 0
        for day in list(self._parts[kind]):
            if (day + 1) * rollup.DAY_MS > cutoff:
                break
            before = list(self._parts[kind])
            try:
                with self.engine.begin() as conn:
                    total += self._drop_part(conn, kind, day)
            except Exception:
                self._parts[kind] = before  # the commit failed: the day is still there
                raise
        return total

    def _free_pages_over_reserve(self) -> bool:
        """True when more than a quarter of the file is free pages.

        Below that, freed pages are kept: the next hours' results fill them without growing
        the file, whereas handing them back and growing again moves and rewrites pages every
        hour for nothing (SD-card wear). The file stays bounded either way.
        """
        assert self.engine is not None
        with self.engine.connect() as conn:
            free = conn.exec_driver_sql("PRAGMA freelist_count").scalar() or 0
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar() or 1
        return free > max(RESERVE_PAGES, pages // 4)

    def _vacuum(self) -> None:
        assert self.engine is not None
        raw = self.engine.raw_connection()
        try:
            # sqlite3's execute() steps a statement once, and each step of incremental_vacuum
            # frees one page; executescript() steps it to the end.
            raw.driver_connection.executescript("PRAGMA incremental_vacuum;")
        finally:
            raw.close()

    def _delete_oldest_rows(self, table: str, n: int) -> int:
        """Delete the `n` oldest rows of one raw day table in short transactions (the size
        cap, when only the current day is left)."""
        assert self.engine is not None
        total = 0
        while total < n:
            step = min(DELETE_BATCH, n - total)
            with self.engine.begin() as conn:
                # SQLite has no DELETE ... LIMIT by default; a batch keeps each transaction
                # short so commits of new results are never held up.
                deleted = conn.exec_driver_sql(
                    f"DELETE FROM {table} WHERE id IN "
                    f"(SELECT id FROM {table} ORDER BY id LIMIT ?)", (step,)).rowcount
            total += deleted
            if deleted < step:
                break
        return total

    def _delete_buckets(self, table: str, cutoff: int, oldest_first: int | None = None) -> int:
        """Delete aggregate rows with bucket < cutoff (or the N oldest) in short transactions."""
        assert self.engine is not None
        total = 0
        while oldest_first is None or total < oldest_first:
            with self.engine.begin() as conn:
                # WITHOUT ROWID tables have no id to page through: find the bucket a batch
                # ends at on the primary key, then delete everything before it.
                step = DELETE_BATCH
                if oldest_first is not None:
                    step = min(step, oldest_first - total)
                edge = conn.execute(text(
                    f"SELECT bucket FROM {table} WHERE bucket < :cutoff ORDER BY bucket "
                    "LIMIT 1 OFFSET :n"), {"cutoff": cutoff, "n": step}).scalar()
                if edge is None:
                    edge, last = cutoff, True
                else:
                    first = conn.execute(text(f"SELECT min(bucket) FROM {table}")).scalar()
                    edge, last = (edge + 1 if edge == first else edge), False
                if table == "rollup_hour":
                    rollup.fold_days(conn, edge, self.clock_ms())
                deleted = conn.execute(
                    text(f"DELETE FROM {table} WHERE bucket < :edge"), {"edge": edge}).rowcount
            total += deleted
            if last or not deleted:
                break
        return total

    def db_size(self) -> tuple[int, int]:
        """(file bytes, bytes in use) of the main database file (the WAL is bounded apart)."""
        assert self.engine is not None
        with self.engine.connect() as conn:
            size = conn.exec_driver_sql("PRAGMA page_size").scalar() or 4096
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar() or 0
            free = conn.exec_driver_sql("PRAGMA freelist_count").scalar() or 0
        return pages * size, (pages - free) * size

    def file_size(self) -> int | None:
        """Bytes the database and its WAL take on disk (a stat, no SQL), None if unreadable."""
        try:
            size = self.path.stat().st_size
        except OSError:
            return None
        wal = self.path.with_name(self.path.name + "-wal")
        return size + (wal.stat().st_size if wal.exists() else 0)

    def enforce_cap(self, vacuum: bool = True) -> int:
        """Over `max_size`: remove the oldest raw results, then per-minute, then per-hour
        aggregates until the used pages are under CAP_HEADROOM of the cap. Returns rows removed."""
        if not self.max_size or self.engine is None:
            return 0
        file_bytes, used = self.db_size()
        if file_bytes <= self.max_size:
            return 0
        goal = self.max_size * CAP_HEADROOM
        removed = 0
        for kind in (RAW, MINUTE):
            while used > goal and self._parts[kind]:
                day = self._parts[kind][0]
                if len(self._parts[kind]) > 1:  # whole days first: no page writes
                    with self.engine.begin() as conn:
                        done = self._drop_part(conn, kind, day)
                else:
                    table = f"{kind}_d{day}"
                    with self.engine.connect() as conn:
                        rows = conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()
                    # A tenth of the table per round: few rounds, never much more than needed.
                    n = max(1000, (rows or 0) // 10)
                    done = (self._delete_oldest_rows(table, n) if kind == RAW
                            else self._delete_buckets(table, 1 << 62, oldest_first=n))
                removed += done
                _, used = self.db_size()
                if not done:
                    break
        # Hours fold into days as they go (daily uptime outlives them); days go last.
        for table in ("rollup_hour", "rollup_day"):
            while used > goal:
                with self.engine.connect() as conn:
                    rows = conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() or 0
                if not rows:
                    break
                done = self._delete_buckets(table, 1 << 62, oldest_first=max(1000, rows // 10))
                removed += done
                _, used = self.db_size()
                if not done:
                    break
        if removed:
            self.cap_removed += removed
            if vacuum:
                self._vacuum()
            log.warning("database over its %d MB cap: removed the %d oldest rows",
                        self.max_size // 1024**2, removed)
        return removed

    async def run_cleanup(self, every_seconds: float) -> None:
        """Retention every `every_seconds`; the size cap is checked at least every minute
        (a read of three pragmas, no write unless the cap is exceeded)."""
        loop = asyncio.get_running_loop()
        check = min(every_seconds, 60.0)
        while True:
            try:
                await loop.run_in_executor(self._executor, self.cleanup)
            except Exception as exc:
                log.warning("retention cleanup failed: %s", exc)
            waited = 0.0
            while waited + check < every_seconds:
                await asyncio.sleep(check)
                waited += check
                try:
                    await loop.run_in_executor(self._executor, self.enforce_cap)
                except Exception as exc:
                    log.warning("size cap check failed: %s", exc)
            await asyncio.sleep(every_seconds - waited)
