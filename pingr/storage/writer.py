"""Writing results: an in-memory buffer, the crash-safe spool, batched commits on one thread,
and reads that see buffer and database consistently."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session

from pingr.models import Alert, Result, ResultRow
from pingr.storage import rollup
from pingr.storage.fallback import free_bytes
from pingr.storage.schema import MAX_ID, MINUTE, RAW, Schema, _minute_table
from pingr.storage.spool import Record, Spool
from pingr.storage.tables import ID_SHIFT, PK_MASK, RESULTS_COLUMNS, AlertRow

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Results kept in memory while the disk refuses writes, so a full disk cannot exhaust RAM.
MAX_PENDING = 50_000
#: The spool (a few bytes a second, usually in RAM) keeps at most this much free.
SPOOL_FLOOR = 1024 * 1024
LOW_SPACE = "disk nearly full at"


def _row(rec: Record) -> ResultRow:
    rid, success, latency, status, error, _raw = rec
    return ResultRow(rid & PK_MASK, rid >> ID_SHIFT, success, latency, status, error)


class Writer(Schema):
    """The write side of pingr.store.Store (its buffers are set up by Store)."""

    path: Path
    spool_file: Spool
    _lock: threading.RLock
    _new: deque[Record]
    _spooled: deque[Record]
    _executor: ThreadPoolExecutor
    degraded: str | None
    min_free: int
    retry_interval: float
    last_error: str | None

    def recover(self) -> bool:
        raise NotImplementedError  # pingr.store.Store

    def _replay(self) -> None:
        """Commit what a crash left in the spool (only a generation not yet committed)."""
        committed = self._meta("spool_gen") or 0
        generation, records, frames = self.spool_file.read()
        if generation > committed and records:
            with self._lock:
                for rec in records:
                    rid = rec[0]
                    pk, ts = rid & PK_MASK, rid >> ID_SHIFT
                    rollup.add(self._rollups, ts - ts % rollup.MINUTE_MS, pk, rec[1], rec[2])
                    self._last_id[pk] = max(self._last_id.get(pk, 0), rid)
                    self._spooled.append(rec)
            self.spool_file.resume(generation, frames)
            self.replayed = len(records)
            log.info("recovered %d results from the spool of an unclean stop", len(records))
            self.flush()
        else:
            self.spool_file.start(max(generation, committed) + 1)

    async def run_writer(self) -> None:
        """Spool results within `flush_interval` of their arrival; commit `commit_interval`
        after something became pending, sooner when `batch_size` results wait or an alert
        changed. With nothing to do it sleeps until woken (an idle appliance does not wake
        every second), and a failed step is logged, never the end of the writer."""
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        spool_at: float | None = None
        commit_at: float | None = None
        retry_at = loop.time() + self.retry_interval
        while True:
            now = loop.time()
            if self._new and spool_at is None:
                spool_at = now + self.flush_interval
            if commit_at is None and self.pending():
                commit_at = now + self.commit_interval
            deadlines = [t for t in (spool_at, commit_at) if t is not None]
            if self.degraded is not None:
                deadlines = [retry_at]
            timeout = max(0.0, min(deadlines) - now) if deadlines else None
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass
            self._wake.clear()
            now = loop.time()
            try:
                if self.degraded is not None:
                    # The database cannot be written: results wait in the bounded buffer and
                    # the file is tried again every retry_interval.
                    if now >= retry_at:
                        retry_at = now + self.retry_interval
                        await loop.run_in_executor(self._executor, self.recover)
                    continue
                if (self._urgent or (commit_at is not None and now >= commit_at)
                        or len(self._new) + len(self._spooled) >= self.batch_size):
                    self._urgent = False
                    commit_at = spool_at = None
                    if self.pending():
                        await loop.run_in_executor(self._executor, self.flush)
                elif spool_at is not None and now >= spool_at:
                    spool_at = None
                    if self._new:
                        await loop.run_in_executor(self._executor, self.spool)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end every later write
                log.exception("the store's writer failed; it carries on")

    async def write(self, fn: Callable[[Session], T]) -> T:
        """Run a write on the writer thread, so writes never contend with each other."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._in_session, fn)

    async def commit(self) -> int:
        """Commit everything buffered now (on the writer thread)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.flush)

    def _in_session(self, fn: Callable[[Session], T]) -> T:
        assert self.engine is not None
        with Session(self.engine) as session:
            out = fn(session)
            session.commit()
            return out

    def _poke(self, urgent: bool = False) -> None:
        """Wake the writer: an alert to commit now, a full batch, or the first result since
        the last spool (it starts the flush_interval clock). Loop thread only."""
        if urgent:
            self._urgent = True
        pending = len(self._new) + len(self._spooled)
        if self._wake is not None and (urgent or pending >= self.batch_size
                                       or len(self._new) == 1):
            self._wake.set()

    # ------------------------------------------------------------------ buffered writes

    def add_result(self, result: Result, target_pk: int) -> None:
        """Buffer one result; it reaches the spool within `flush_interval`.

        Every result counts into the per-minute aggregate; with `raw: changes` only failures,
        flips and one success per `raw_sample_interval` are kept as raw rows.
        """
        ts = result.ts
        keep = True
        with self._lock:
            rid = (ts << ID_SHIFT) | target_pk
            last = self._last_id.get(target_pk)
            if last is not None and rid <= last:
                rid = last + (1 << ID_SHIFT)  # a second result in the same millisecond
            self._last_id[target_pk] = rid
            rollup.add(self._rollups, ts - ts % rollup.MINUTE_MS, target_pk,
                       result.success, result.latency_ms)
            if self.raw_mode == "changes":
                prev = self._raw_last.get(target_pk)
                keep = (not result.success or prev is None or not prev[0]
                        or ts - prev[1] >= self.raw_sample_ms)
                self._raw_last[target_pk] = (result.success, ts if keep or prev is None
                                             else prev[1])
                if not keep:
                    self.raw_skipped += 1
            if len(self._new) + len(self._spooled) >= MAX_PENDING:
                if self._spooled:
                    self._spooled.popleft()
                    self._dropped_front[1] += 1
                else:
                    self._new.popleft()
                    self._dropped_front[0] += 1
                self.dropped_results += 1
            self._new.append((rid, result.success, result.latency_ms, result.status_code,
                              result.error, keep))
        if self._wake is not None and (len(self._new) == 1
                                       or len(self._new) + len(self._spooled) >= self.batch_size):
            self._wake.set()  # the first since the last spool starts the clock; a full batch

    def put_alert(self, alert: Alert, urgent: bool = True) -> None:
        """Buffer an alert insert-or-update (a copy), committed promptly when `urgent`."""
        with self._lock:
            self._alerts[alert.id] = alert.copy()
        self._poke(urgent=urgent)

    def note_key_use(self, key_id: int, ts: int, count: int = 1) -> None:
        """Count an API key's use in memory; written with the next commit, not per request."""
        with self._lock:
            last, n = self._key_use.get(key_id, (ts, 0))
            self._key_use[key_id] = (max(last, ts), n + count)

    def pending(self) -> bool:
        return bool(self._new or self._spooled or self._alerts or self._key_use
                    or self._rollups)

    def spool(self) -> int:
        """Append the results buffered since the last call to the spool. Returns bytes."""
        with self._lock:
            if not self._new or not self._spool_owned:
                return 0
            if not self._room(self.spool_file.path.parent, min(self.min_free, SPOOL_FLOOR)):
                return 0
            batch = list(self._new)
            try:
                written = self.spool_file.append(batch)
            except OSError as exc:
                if self.last_error is None:
                    log.error("spool write failed, results stay in memory: %s", exc)
                self.last_error = str(exc)
                return 0
            self._spooled.extend(batch)
            self._new.clear()
            self.spool_bytes += written
            return written

    def flush(self) -> int:
        """Commit everything buffered in one transaction, then empty the spool.

        Returns the number of raw result rows written."""
        if self.engine is None or self.degraded is not None:
            return 0  # degraded: everything waits in memory for the file (see recover)
        self.spool()
        if not self._room(self.path.parent, self.min_free):
            return 0
        with self._lock:
            records = list(self._spooled) + list(self._new)
            taken = (len(self._new), len(self._spooled))
            drops = list(self._dropped_front)
            # Alerts stay in the buffer until committed, so a reader never misses one that is
            # neither in the buffer nor on disk yet; committed entries are dropped below.
            pending_alerts = dict(self._alerts)
            alerts = list(pending_alerts.values())
            key_use = self._key_use
            self._key_use = {}
            rollups = self._committing_rollups = self._rollups
            self._rollups = {}
            frames = self.spool_file.frames
            self._committing = True
        if not (records or alerts or key_use or rollups or frames):
            with self._lock:
                self._committing = False
            return 0
        try:
            return self._commit(records, taken, drops, pending_alerts, alerts, key_use, rollups,
                                frames)
        finally:
            if self._committing:  # an unexpected error: readers must not wait for ever
                with self._lock:
                    self._committing = False
                    self._commit_seq += 1

    def _commit(self, records: list[Record], taken: tuple[int, int], drops: list[int],
                pending_alerts: dict[int, Alert], alerts: list[Alert],
                key_use: dict[int, tuple[int, int]], rollups: dict[tuple[int, int], rollup.Acc],
                frames: int) -> int:
        assert self.engine is not None
        rows = sorted((r[0], r[0] & PK_MASK, r[1], r[2], r[3], r[4]) for r in records if r[5])
        by_day: dict[int, list[tuple[Any, ...]]] = {}
        for r in rows:
            by_day.setdefault((r[0] >> ID_SHIFT) // rollup.DAY_MS, []).append(r)
        parts_before = {k: list(v) for k, v in self._parts.items()}
        try:
            with self.engine.begin() as conn:
                self._ensure_parts(conn, RAW, by_day)
                self._ensure_parts(conn, MINUTE, {b // rollup.DAY_MS for b, _ in rollups})
                for day, day_rows in sorted(by_day.items()):
                    # OR IGNORE: only a clock stepped back across a restart can repeat an id.
                    conn.exec_driver_sql(
                        f"INSERT OR IGNORE INTO {RAW}_d{day} ({RESULTS_COLUMNS}) "
                        "VALUES (?, ?, ?, ?, ?, ?)", day_rows)
                rollup.write(conn, rollups, _minute_table)
                for alert in alerts:
                    values = asdict(alert)
                    stmt = sqlite_insert(AlertRow.__table__).values(**values)
                    stmt = stmt.on_conflict_do_update(
                        index_elements=["id"],
                        set_={k: v for k, v in values.items() if k != "id"},
                    )
                    conn.execute(stmt)
                for key_id, (last, count) in key_use.items():
                    conn.execute(
                        text(
                            "UPDATE api_keys SET usage_count = usage_count + :n, "
                            "last_used_at = MAX(COALESCE(last_used_at, 0), :ts) WHERE id = :id"
                        ),
                        {"n": count, "ts": last, "id": key_id},
                    )
                if frames:
                    conn.exec_driver_sql(
                        "INSERT INTO meta (key, value) VALUES ('spool_gen', ?) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (self.spool_file.generation,))
        except Exception as exc:  # disk full, read-only filesystem, I/O error
            self._parts = parts_before  # day tables made in the rolled-back transaction
            with self._lock:
                # Keep the data for the next try (results and alerts never left the buffer).
                for key_id, (last, count) in key_use.items():
                    self.note_key_use(key_id, last, count)
                rollup.merge(self._rollups, rollups)
                self._committing_rollups = {}
                self._committing = False
                self._commit_seq += 1
            if self.last_error is None:
                log.error("database write failed, will retry: %s", exc)
            self.last_error = str(exc)
            return 0
        with self._lock:
            for i, buf in enumerate((self._new, self._spooled)):
                for _ in range(max(0, taken[i] - (self._dropped_front[i] - drops[i]))):
                    buf.popleft()
            self._committing_rollups = {}
            self._committing = False
            self._commit_seq += 1
            for alert_id, alert in pending_alerts.items():
                if self._alerts.get(alert_id) is alert:  # not changed again meanwhile
                    del self._alerts[alert_id]
            if frames:
                try:
                    self.spool_file.start(self.spool_file.generation + 1)
                except OSError as exc:
                    log.error("could not restart the spool: %s", exc)
        if self.last_error is not None:
            log.info("database writes work again")
        self.last_error = None
        self.last_flush_ms = self.clock_ms()
        self.rows_written += len(rows)
        self.commits += 1
        return len(rows)

    def _room(self, directory: Path, floor: int) -> bool:
        """Whether writing keeps at least `floor` bytes free there: pingr must never be the one
        that fills the disk (a later start, or another program, would fail for it)."""
        if not floor:
            return True
        free = free_bytes(directory)
        if free is None or free >= floor:
            if self.last_error is not None and self.last_error.startswith(LOW_SPACE):
                self.last_error = None
            return True
        message = (f"{LOW_SPACE} {directory}: {free // 1024} KiB free, below storage.min_free "
                   f"({floor // 1024} KiB); writes wait in memory")
        if self.last_error != message:
            if self.last_error is None or not self.last_error.startswith(LOW_SPACE):
                log.error("%s", message)
            self.last_error = message
        return False

    def forget_target(self, pk: int) -> None:
        """Drop a deleted target's buffered results and commit, so a replay cannot bring them
        back under a reused pk (runs on the writer thread via `forget`)."""
        with self._lock:
            for buf in (self._new, self._spooled):
                kept = [r for r in buf if r[0] & PK_MASK != pk]
                buf.clear()
                buf.extend(kept)
            self._dropped_front = [0, 0]
            self._rollups = {k: v for k, v in self._rollups.items() if k[1] != pk}
            self._last_id.pop(pk, None)
            self._raw_last.pop(pk, None)
        self.flush()

    async def forget(self, pk: int) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self.forget_target, pk)

    def pending_alert(self, alert_id: int) -> Alert | None:
        with self._lock:
            alert = self._alerts.get(alert_id)
            return alert.copy() if alert else None

    # ------------------------------------------------------------------ consistent reads

    def _consistent(self, from_memory: Callable[[], T], from_db: Callable[[], Any]
                    ) -> tuple[T, Any]:
        """(buffered part, database part) of one read, taken so that no commit ran between
        them: a commit moves results from memory to the database."""
        while True:
            with self._lock:
                busy = self._committing
                if not busy:
                    mem = from_memory()
                    seq = self._commit_seq
            if busy:
                time.sleep(0.002)
                continue
            db = from_db()
            with self._lock:
                if not self._committing and self._commit_seq == seq:
                    return mem, db

    def _buffered_rows(self, pk: int | None = None, lo: int = 0, hi: int = MAX_ID
                       ) -> list[ResultRow]:
        """Buffered raw rows with lo <= id < hi (caller holds the lock)."""
        return [_row(r) for buf in (self._spooled, self._new) for r in buf
                if r[5] and lo <= r[0] < hi and (pk is None or r[0] & PK_MASK == pk)]

    def _buffered_minutes(self, pk: int | None = None) -> dict[tuple[int, int], rollup.Acc]:
        """Copies of the not yet committed minute aggregates (caller holds the lock)."""
        out: dict[tuple[int, int], rollup.Acc] = {}
        for part in (self._committing_rollups, self._rollups):
            rollup.merge(out, {k: v for k, v in part.items() if pk is None or k[1] == pk})
        return out
