"""SQLite store: WAL, a crash-safe spool, one batched writer thread, retention, history."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, func, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, create_engine, delete, select

from pingr.configbase import TargetBase
from pingr.models import Alert, Result, ResultRow, Target
from pingr.probes.registry import parse_spec
from pingr.storage import rollup
from pingr.storage.spool import Record, Spool
from pingr.storage.tables import (
    ID_SHIFT,
    PK_MASK,
    RESULTS_COLUMNS,
    RESULTS_DDL,
    AlertRow,
    TargetRow,
)
from pingr.timeutil import now_ms

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Rows deleted per statement by retention: small enough that the writer never holds the
#: database lock for long, large enough that a day of results goes in a few hundred steps.
DELETE_BATCH = 5000
#: Free pages always kept for reuse (1 MB at 4 KB pages) before incremental vacuum runs.
RESERVE_PAGES = 256
#: Results kept in memory while the disk refuses writes, so a full disk cannot exhaust RAM.
MAX_PENDING = 50_000
#: Over the size cap, data is removed until the used pages are this fraction of the cap, so
#: the cap is not hit again by the next batch (each round of removal costs writes).
CAP_HEADROOM = 0.9
#: Summaries up to this window read raw rows (exact to the millisecond, at most a few
#: thousand rows); longer ones read the aggregates.
RAW_WINDOW_MS = 3_600_000
#: The largest row id (results are deleted "oldest first" below it).
MAX_ID = (1 << 63) - 1
_COLUMNS = RESULTS_COLUMNS
RAW, MINUTE = "results", "rollup_minute"
_DDL = {RAW: RESULTS_DDL, MINUTE: rollup.MINUTE_DDL}
_VIEW_COLUMNS = {RAW: RESULTS_COLUMNS, MINUTE: rollup.MINUTE_COLUMNS}
_PART = re.compile(r"^(results|rollup_minute)_d(\d+)$")


def _set_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # Must come before WAL mode and the first table on a new file (a no-op on an existing one):
    # lets retention hand pages back with `PRAGMA incremental_vacuum`, never a full VACUUM.
    cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
    cur.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode never corrupts the database; a power cut may drop the newest commits,
    # a kill -9 drops nothing that was committed. FULL would fsync on every batch for no gain
    # against process crashes and costs SD-card wear.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    # Bound the WAL file after checkpoints so it cannot grow without limit on a busy day.
    cur.execute("PRAGMA journal_size_limit=4194304")
    cur.execute("PRAGMA foreign_keys=ON")
    # Debian builds SQLite with SECURE_DELETE, which overwrites every freed page with zeros:
    # retention then writes each page it frees (~7 MB/day of card wear at 50 targets). FAST
    # still zeroes deleted rows inside pages that are written anyway, and nothing more.
    cur.execute("PRAGMA secure_delete=FAST")
    cur.close()


def _minute_table(bucket: int) -> str:
    return f"{MINUTE}_d{bucket // rollup.DAY_MS}"


def _row(rec: Record) -> ResultRow:
    rid, success, latency, status, error, _raw = rec
    return ResultRow(rid & PK_MASK, rid >> ID_SHIFT, success, latency, status, error)


def _db_row(r: Any) -> ResultRow:
    return ResultRow(r[1], r[0] >> ID_SHIFT, bool(r[2]), r[3], r[4], r[5])


class Store:
    """Owns the SQLite file and its spool.

    Results are buffered in memory, appended to the spool every `flush_interval` (crash-safe
    within that time, a few bytes each) and committed to SQLite in one transaction every
    `commit_interval`, or sooner when `batch_size` results wait or an alert changes. Reads
    see committed and buffered results alike. All writes run on one thread.
    """

    def __init__(
        self,
        path: Path,
        *,
        flush_interval: float = 1.0,
        commit_interval: float = 600.0,
        batch_size: int = 5000,
        retention_seconds: float = 7 * 86400,
        clock_ms: Callable[[], int] = now_ms,
        raw: str = "all",
        raw_sample_seconds: float = 300,
        minute_retention_seconds: float = 48 * 3600,
        hour_retention_seconds: float = 365 * 86400,
        max_size: int = 256 * 1024 * 1024,
        spool_path: Path | None = None,
    ) -> None:
        self.path = Path(path)
        self.flush_interval = flush_interval
        self.commit_interval = commit_interval
        self.batch_size = batch_size
        self.retention_ms = int(retention_seconds * 1000)
        self.clock_ms = clock_ms
        self.engine: Engine | None = None
        self.spool_file = Spool(spool_path or self.path.with_name(self.path.name + "-spool"))
        # Reentrant: the failed-flush path re-buffers through note_key_use while holding it.
        self._lock = threading.RLock()
        #: Results not yet in the spool, and results in the spool but not yet committed.
        self._new: deque[Record] = deque()
        self._spooled: deque[Record] = deque()
        #: How many were dropped from the front of each (full disk), so a commit that took a
        #: prefix knows how much of it is already gone.
        self._dropped_front = [0, 0]
        #: Per-minute aggregates of results not yet committed / being committed.
        self._rollups: dict[tuple[int, int], rollup.Acc] = {}
        self._committing_rollups: dict[tuple[int, int], rollup.Acc] = {}
        #: A seqlock for readers: they retry when a commit ran while they read, so a result
        #: is never counted both from memory and from the database, nor missed.
        self._committing = False
        self._commit_seq = 0
        self._alerts: dict[int, Alert] = {}
        self._key_use: dict[int, tuple[int, int]] = {}
        #: Newest row id per target: ids stay unique when two results share a millisecond.
        self._last_id: dict[int, int] = {}
        self._wake: asyncio.Event | None = None
        self._urgent = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pingr-writer")
        self.dropped_results = 0
        self.last_error: str | None = None
        self.last_flush_ms: int | None = None
        self.rows_written = 0
        self.spool_bytes = 0
        self.replayed = 0
        #: "all" keeps every raw result; "changes" keeps failures, flips and periodic samples.
        self.raw_mode = raw
        self.raw_sample_ms = int(raw_sample_seconds * 1000)
        self.minute_retention_ms = int(minute_retention_seconds * 1000)
        self.hour_retention_ms = int(hour_retention_seconds * 1000)
        self.max_size = max_size
        #: target pk -> (last success, ts of the last raw row kept), for raw: changes.
        self._raw_last: dict[int, tuple[bool, int]] = {}
        self.raw_skipped = 0
        self.cap_removed = 0
        #: Days (ts // DAY_MS) that have a results / rollup_minute table.
        self._parts: dict[str, list[int]] = {RAW: [], MINUTE: []}
        self._spool_owned = False

    # ------------------------------------------------------------------ lifecycle

    def open(self, spool: bool = True) -> None:
        """Create the directory, the file and the tables, then replay a spool left by a crash.

        `spool=False` (the CLI beside a running service) leaves the spool alone: it may be the
        live spool of the service."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.spool_file.path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(
            f"sqlite:///{self.path}",
            connect_args={"check_same_thread": False, "timeout": 5},
        )
        event.listen(self.engine, "connect", _set_pragmas)
        with self.engine.begin() as conn:
            kinds = dict(conn.exec_driver_sql("SELECT name, type FROM sqlite_master").all())
            self._load_parts(conn)
            for kind in (RAW, MINUTE):
                if kinds.get(kind) == "table":
                    self._partition(conn, kind)
                if kinds.get(kind) != "view":
                    self._make_view(conn, kind)
        SQLModel.metadata.create_all(self.engine)
        if RAW in kinds and "rollup_hour" not in kinds:
            # A database from before rollups: derive them once from the raw results it holds.
            now = self.clock_ms()
            with self.engine.begin() as conn:
                minutes, hours = rollup.backfill(conn, now - self.minute_retention_ms,
                                                 now - self.hour_retention_ms)
                self._ensure_parts(conn, MINUTE, {b // rollup.DAY_MS for b, _ in minutes})
                rollup.write(conn, minutes, _minute_table, hours=hours)
        if spool:
            self._replay()
            self._spool_owned = True

    # ------------------------------------------------------------------ day partitions

    def _load_parts(self, conn: Any) -> None:
        self._parts = {RAW: [], MINUTE: []}
        for (name,) in conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'table'"):
            m = _PART.match(name)
            if m:
                self._parts[m.group(1)].append(int(m.group(2)))
        for days in self._parts.values():
            days.sort()

    def _ensure_parts(self, conn: Any, kind: str, days: Iterable[int]) -> None:
        """Create the day tables that do not exist yet (and the view over them)."""
        new = sorted(set(days) - set(self._parts[kind]))
        if not new:
            return
        for day in new:
            conn.exec_driver_sql(_DDL[kind].format(table=f"{kind}_d{day}"))
        self._parts[kind] = sorted(self._parts[kind] + new)
        self._make_view(conn, kind)

    def _drop_part(self, conn: Any, kind: str, day: int) -> int:
        """Drop one day table; returns the rows it held."""
        table = f"{kind}_d{day}"
        rows = conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() or 0
        before = self._parts[kind]
        self._parts[kind] = [d for d in before if d != day]
        try:
            self._make_view(conn, kind)
            conn.exec_driver_sql(f"DROP TABLE {table}")
        except Exception:
            self._parts[kind] = before
            raise
        return rows

    def _make_view(self, conn: Any, kind: str) -> None:
        """The view named like the table it replaces: UNION ALL of the day tables, oldest
        first (SQLite merges them for ORDER BY id and pushes WHERE into each)."""
        cols = _VIEW_COLUMNS[kind]
        days = self._parts[kind]
        if days:
            body = " UNION ALL ".join(f"SELECT {cols} FROM {kind}_d{d}" for d in days)
        else:
            body = "SELECT " + ", ".join(f"NULL AS {c.strip()}" for c in cols.split(",")) \
                + " WHERE 0"
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {kind}")
        conn.exec_driver_sql(f"CREATE VIEW {kind} AS {body}")

    def _partition(self, conn: Any, kind: str) -> None:
        """Move a single table of an earlier layout into day tables (once, one transaction).

        Earlier layouts: results with a ts column and two indexes, or keyed by id; one
        rollup_minute table."""
        log.info("converting %s into one table per day (once)", kind)
        cols = {c[1] for c in conn.exec_driver_sql(f"PRAGMA table_info({kind})")}
        conn.exec_driver_sql(f"ALTER TABLE {kind} RENAME TO {kind}_old")
        for name in ("ix_results_target_ts", "ix_results_ts"):
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
        if kind == RAW:
            ts = "ts" if "ts" in cols else f"(id >> {ID_SHIFT})"
            first = f"(ts << {ID_SHIFT}) | (target_pk & {PK_MASK})" if "ts" in cols else "id"
            select = first + ", target_pk, success, latency_ms, status_code, error"
        else:
            ts, select = "bucket", rollup.MINUTE_COLUMNS
        days = [r[0] for r in conn.exec_driver_sql(
            f"SELECT DISTINCT {ts} / {rollup.DAY_MS} FROM {kind}_old")]
        self._ensure_parts(conn, kind, days)
        for day in days:
            conn.exec_driver_sql(
                f"INSERT OR IGNORE INTO {kind}_d{day} SELECT {select} FROM {kind}_old "
                f"WHERE {ts} >= ? AND {ts} < ? ORDER BY 1",
                (day * rollup.DAY_MS, (day + 1) * rollup.DAY_MS))
        conn.exec_driver_sql(f"DROP TABLE {kind}_old")

    def _meta(self, key: str) -> int | None:
        assert self.engine is not None
        with self.engine.connect() as conn:
            return conn.exec_driver_sql(
                "SELECT value FROM meta WHERE key = ?", (key,)).scalar()

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

    def close(self) -> None:
        """Commit what is buffered and release the file (the spool goes when it is empty)."""
        try:
            self.flush()
        finally:
            self._executor.shutdown(wait=True)
            self.spool_file.close(remove=self._spool_owned and self.spool_file.frames == 0)
            if self.engine is not None:
                self.engine.dispose()

    async def run_writer(self) -> None:
        """Spool every `flush_interval`; commit every `commit_interval`, sooner when
        `batch_size` results wait or an alert changed."""
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        next_commit = loop.time() + self.commit_interval
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            except TimeoutError:
                pass
            self._wake.clear()
            if (self._urgent or loop.time() >= next_commit
                    or len(self._new) + len(self._spooled) >= self.batch_size):
                self._urgent = False
                next_commit = loop.time() + self.commit_interval
                if self.pending():
                    await loop.run_in_executor(self._executor, self.flush)
            elif self._new:
                await loop.run_in_executor(self._executor, self.spool)

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
        if urgent:
            self._urgent = True
        if self._wake is not None and (
                urgent or len(self._new) + len(self._spooled) >= self.batch_size):
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
        self._poke()

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
        if self.engine is None:
            return 0
        self.spool()
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
                        f"INSERT OR IGNORE INTO {RAW}_d{day} ({_COLUMNS}) "
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
        return len(rows)

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
                   + self._delete_buckets("rollup_hour", now - self.hour_retention_ms))
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
        while used > goal:
            with self.engine.connect() as conn:
                rows = conn.exec_driver_sql("SELECT count(*) FROM rollup_hour").scalar() or 0
            if not rows:
                break
            done = self._delete_buckets("rollup_hour", 1 << 62, oldest_first=max(1000, rows // 10))
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

    # ------------------------------------------------------------------ targets

    def load_targets(self) -> list[Target]:
        assert self.engine is not None
        with Session(self.engine) as s:
            rows = s.exec(select(TargetRow).order_by(TargetRow.pk)).all()
        return [_to_target(r) for r in rows]

    def reconcile(self, specs: Iterable[TargetBase], clock_ms: int | None = None) -> list[Target]:
        """Make the config file's targets true in the database: add, update, disable removed.

        Targets created through the API are left alone. Returns every target.
        """
        assert self.engine is not None
        ts = clock_ms or self.clock_ms()
        wanted = {s.name: s for s in specs}
        with Session(self.engine) as s:
            rows = {r.name: r for r in s.exec(select(TargetRow)).all()}
            for name, spec in wanted.items():
                data = spec.model_dump_json()
                row = rows.get(name)
                if row is None:
                    s.add(_new_row(spec, "config", ts))
                elif row.spec != data or row.source != "config":
                    row.spec, row.type, row.enabled = data, spec.type, spec.enabled
                    row.source, row.updated_at = "config", ts
                    s.add(row)
            for name, row in rows.items():
                if row.source == "config" and name not in wanted and row.enabled:
                    spec = parse_spec({**json.loads(row.spec), "enabled": False})
                    row.spec, row.enabled, row.updated_at = spec.model_dump_json(), False, ts
                    s.add(row)
                    log.info("target %r is no longer in the config file: disabled", name)
            s.commit()
        return self.load_targets()

    @staticmethod
    def insert_target(session: Session, spec: TargetBase, source: str, ts: int) -> Target:
        row = _new_row(spec, source, ts)
        session.add(row)
        session.flush()
        if row.pk is not None and row.pk > PK_MASK:
            # Result ids carry the pk in 16 bits (see models.ID_SHIFT).
            raise ValueError(f"too many targets: pk {row.pk} exceeds {PK_MASK}")
        return _to_target(row)

    @staticmethod
    def update_target(session: Session, pk: int, spec: TargetBase, ts: int) -> Target:
        row = session.get(TargetRow, pk)
        assert row is not None
        row.name, row.type, row.enabled = spec.name, spec.type, spec.enabled
        row.spec, row.updated_at = spec.model_dump_json(), ts
        session.add(row)
        session.flush()
        return _to_target(row)

    def delete_target(self, session: Session, pk: int) -> None:
        session.exec(delete(TargetRow).where(TargetRow.pk == pk))
        # Results of a deleted target are history nobody can ask for any more.
        tables = [f"{kind}_d{day}" for kind in (RAW, MINUTE) for day in self._parts[kind]]
        for table in [*tables, "rollup_hour"]:
            session.execute(text(f"DELETE FROM {table} WHERE target_pk = :pk"), {"pk": pk})

    # ------------------------------------------------------------------ reads

    def session(self) -> Session:
        assert self.engine is not None
        return Session(self.engine)

    def latest_results(self, limit: int) -> list[ResultRow]:
        """The newest raw results of all targets, newest first."""
        assert self.engine is not None

        def db() -> list[ResultRow]:
            with self.engine.connect() as conn:
                return [_db_row(r) for r in conn.exec_driver_sql(
                    f"SELECT {_COLUMNS} FROM results ORDER BY id DESC LIMIT ?", (limit,))]

        mem, disk = self._consistent(self._buffered_rows, db)
        return sorted(mem + disk, key=lambda r: r.ts, reverse=True)[:limit]

    def target_results(self, pk: int, since: int, until: int, limit: int) -> list[ResultRow]:
        """One target's raw results with since <= ts <= until, newest first."""
        assert self.engine is not None
        lo, hi = since << ID_SHIFT, (until + 1) << ID_SHIFT

        def db() -> list[ResultRow]:
            with self.engine.connect() as conn:
                return [_db_row(r) for r in conn.exec_driver_sql(
                    f"SELECT {_COLUMNS} FROM results WHERE id >= ? AND id < ? "
                    "AND target_pk = ? ORDER BY id DESC LIMIT ?", (lo, hi, pk, limit))]

        mem, disk = self._consistent(lambda: self._buffered_rows(pk, lo, hi), db)
        return sorted(mem + disk, key=lambda r: r.ts, reverse=True)[:limit]

    def recent_results(self, pk: int, limit: int) -> list[ResultRow]:
        """One target's newest raw results, newest first."""
        return self.recent_by_target([pk], limit).get(pk, [])

    def recent_by_target(self, pks: Iterable[int], limit: int = 1000
                         ) -> dict[int, list[ResultRow]]:
        """Per target, its newest results up to and including the first change of state
        (success <-> failure), at most `limit`: what start-up needs to restore counters.

        One backward pass over the table for all targets (there is no per-target index: it
        would cost a scattered page write per target on every commit)."""
        assert self.engine is not None
        out: dict[int, list[ResultRow]] = {pk: [] for pk in pks}
        open_ = set(out)

        def take(row: ResultRow) -> None:
            got = out[row.target_pk]
            got.append(row)
            if len(got) >= limit or got[-1].success != got[0].success:
                open_.discard(row.target_pk)

        with self._lock:
            mem = self._buffered_rows()
        for row in sorted(mem, key=lambda r: r.ts, reverse=True):
            if row.target_pk in open_:
                take(row)
        edge = MAX_ID
        with self.engine.connect() as conn:
            while open_:
                batch = conn.exec_driver_sql(
                    f"SELECT {_COLUMNS} FROM results WHERE id < ? ORDER BY id DESC LIMIT 20000",
                    (edge,)).all()
                if not batch:
                    break
                for r in batch:
                    if r[1] in open_:
                        take(_db_row(r))
                edge = batch[-1][0]
        return out

    def summary(self, since: int, pk: int | None = None,
                until: int | None = None) -> dict[int, tuple[int, int, float | None]]:
        """Per target: (total probes, successes, average latency of successes) since `since`."""
        return {p: (t[0], t[1], t[3] / t[2] if t[2] else None)
                for p, t in self.window_totals(since, pk, until).items()}

    def window_totals(self, since: int, pk: int | None = None,
                      until: int | None = None) -> dict[int, rollup.Totals]:
        """Per target (count, successes, lat_count, lat_sum, lat_min, lat_max) over [since, until].

        Up to RAW_WINDOW the raw rows answer exactly (when every raw result is kept); longer
        windows read the per-hour aggregates plus per-minute ones at the edges. Buffered
        results count too.
        """
        now = self.clock_ms() if until is None else until
        assert self.engine is not None
        if self.raw_mode == "all" and now - since <= RAW_WINDOW_MS:
            lo, hi = since << ID_SHIFT, (now + 1) << ID_SHIFT
            sql = ("SELECT target_pk, count(*), sum(success), "
                   "sum(success AND latency_ms IS NOT NULL), "
                   "coalesce(sum(CASE WHEN success THEN latency_ms END), 0), "
                   "min(CASE WHEN success THEN latency_ms END), "
                   "max(CASE WHEN success THEN latency_ms END) "
                   "FROM results WHERE id >= ? AND id < ?")
            params: tuple[int, ...] = (lo, hi)
            if pk is not None:
                sql += " AND target_pk = ?"
                params += (pk,)

            def raw_db() -> dict[int, rollup.Totals]:
                with self.engine.connect() as conn:
                    rows = conn.exec_driver_sql(sql + " GROUP BY target_pk", params).all()
                return {r[0]: (int(r[1]), int(r[2] or 0), int(r[3] or 0), int(r[4]), r[5], r[6])
                        for r in rows}

            mem, disk = self._consistent(lambda: self._buffered_rows(pk, lo, hi), raw_db)
            acc: dict[tuple[int, int], rollup.Acc] = {}
            for row in mem:
                rollup.add(acc, 0, row.target_pk, row.success, row.latency_ms)
            return rollup.combine([disk, _acc_totals(acc)])

        start_min = since - since % rollup.MINUTE_MS

        def agg_db() -> dict[int, rollup.Totals]:
            with self.engine.connect() as conn:
                return rollup.window_totals(conn, since, now, now - self.minute_retention_ms, pk)

        mem_minutes, disk = self._consistent(lambda: self._buffered_minutes(pk), agg_db)
        recent = {k: v for k, v in mem_minutes.items() if start_min <= k[0] <= now}
        return rollup.combine([disk, _acc_totals(recent)])

    def daily_uptime(self, pk: int, since_day: int) -> dict[int, rollup.Totals]:
        """Per UTC day since `since_day` (midnight, epoch ms), from the per-hour aggregates."""
        assert self.engine is not None

        def db() -> dict[int, rollup.Totals]:
            with self.engine.connect() as conn:
                return rollup.daily(conn, pk, since_day)

        minutes, disk = self._consistent(lambda: self._buffered_minutes(pk), db)
        days: dict[tuple[int, int], rollup.Acc] = {}
        for (bucket, p), acc in minutes.items():
            if bucket >= since_day:
                rollup.merge(days, {(bucket - bucket % rollup.DAY_MS, p): acc})
        out = dict(disk)
        for (day, _p), acc in days.items():
            out[day] = rollup.combine([{0: out[day]} if day in out else {},
                                       {0: _totals(acc)}])[0]
        return out

    def history(self, pk: int, since: int, until: int, resolution: str) -> list[tuple[Any, ...]]:
        """Aggregated buckets ("minute" or "hour") of one target, oldest first."""
        assert self.engine is not None
        table = rollup.TABLES[resolution]

        def db() -> list[tuple[Any, ...]]:
            with self.engine.connect() as conn:
                return rollup.series(conn, table, pk, since, until)

        minutes, disk = self._consistent(lambda: self._buffered_minutes(pk), db)
        if resolution == "hour":
            minutes = rollup.to_hours(minutes)
        by_bucket: dict[int, rollup.Acc] = {r[0]: list(r[1:]) for r in disk}
        for (bucket, _p), acc in minutes.items():
            if since <= bucket <= until:
                rollup.merge(by_bucket, {bucket: acc})  # type: ignore[dict-item]
        return [(b, *by_bucket[b]) for b in sorted(by_bucket)]

    def newest_result_ts(self) -> int | None:
        """Timestamp of the newest result, committed or buffered."""
        assert self.engine is not None

        def db() -> int | None:
            with self.engine.connect() as conn:
                return conn.exec_driver_sql(
                    "SELECT id FROM results ORDER BY id DESC LIMIT 1").scalar()

        mem, newest = self._consistent(
            lambda: max((r[0] for buf in (self._spooled, self._new) for r in buf), default=None),
            db)
        ids = [i for i in (mem, newest) if i is not None]
        return max(ids) >> ID_SHIFT if ids else None

    def alerts(self, state: str, limit: int) -> list[Alert]:
        def db() -> dict[int, Alert]:
            with self.session() as s:
                q = select(AlertRow)
                if state == "open":
                    q = q.where(AlertRow.resolved_at.is_(None))
                elif state == "resolved":
                    q = q.where(AlertRow.resolved_at.is_not(None))
                return {r.id: r.to_alert()
                        for r in s.exec(q.order_by(AlertRow.opened_at.desc()).limit(limit))}

        # Buffer and database read with no commit in between (a commit moves alerts from the
        # one to the other: read across it, an alert would be in neither, or an old copy win).
        pending, rows = self._consistent(
            lambda: [a.copy() for a in self._alerts.values()], db)
        # Alerts still in the write buffer are newer than anything on disk.
        for row in pending:
            if state == "all" or (state == "open") == (row.resolved_at is None):
                rows[row.id] = row
            else:
                rows.pop(row.id, None)
        ordered = sorted(rows.values(), key=lambda r: (r.opened_at, r.id), reverse=True)
        return ordered[:limit]

    def alert(self, alert_id: int) -> Alert | None:
        pending = self.pending_alert(alert_id)
        if pending:
            return pending
        with self.session() as s:
            row = s.get(AlertRow, alert_id)
            return row.to_alert() if row is not None else None

    def open_alerts(self) -> list[Alert]:
        with self.session() as s:
            return [r.to_alert() for r in
                    s.exec(select(AlertRow).where(AlertRow.resolved_at.is_(None))).all()]

    def max_alert_id(self) -> int:
        with self.session() as s:
            return s.exec(select(func.max(AlertRow.id))).one() or 0



def _totals(acc: rollup.Acc) -> rollup.Totals:
    return (acc[0], acc[1], acc[2], acc[3], acc[4], acc[5])


def _acc_totals(acc: dict[tuple[int, int], rollup.Acc]) -> dict[int, rollup.Totals]:
    """Per-target totals of in-memory buckets."""
    per_target: dict[tuple[int, int], rollup.Acc] = {}
    for (_bucket, pk), row in acc.items():
        rollup.merge(per_target, {(0, pk): row})
    return {pk: _totals(row) for (_b, pk), row in per_target.items()}


def _new_row(spec: TargetBase, source: str, ts: int) -> TargetRow:
    return TargetRow(
        id=str(uuid.uuid4()),
        name=spec.name,
        type=spec.type,
        enabled=spec.enabled,
        spec=spec.model_dump_json(),
        source=source,
        created_at=ts,
        updated_at=ts,
    )


def _to_target(row: TargetRow) -> Target:
    assert row.pk is not None
    return Target(
        pk=row.pk,
        id=row.id,
        spec=parse_spec(json.loads(row.spec)),
        source=row.source,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
