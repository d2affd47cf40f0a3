"""SQLite store: WAL, a crash-safe spool, one batched writer thread, retention, history.

One object, `Store`, made of one part per job (pingr/storage/): `schema` (the file, day tables,
views), `writer` (buffer, spool, commits, consistent reads), `queries`, `retention`, `targets`,
`metrics` (host and container metric series).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel, create_engine

from pingr.models import Alert
from pingr.storage import rollup
from pingr.storage.fallback import (
    STORAGE_ERRORS,
    copy_small_tables,
    empty_views,
    memory_engine,
    reason_of,
    write_back,
)
from pingr.storage.metrics import MetricSeries
from pingr.storage.queries import Queries
from pingr.storage.retention import Retention
from pingr.storage.schema import MINUTE, RAW, _minute_table, _set_pragmas
from pingr.storage.spool import Record, Spool
from pingr.storage.targets import TargetRows
from pingr.storage.writer import MAX_PENDING
from pingr.timeutil import now_ms

log = logging.getLogger(__name__)


class Store(Queries, Retention, TargetRows, MetricSeries):
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
        min_free: int = 16 * 1024 * 1024,
        retry_interval: float = 30.0,
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
        #: Transactions committed by the batched writer (each costs the card whole pages).
        self.commits = 0
        self.spool_bytes = 0
        self.replayed = 0
        #: "all" keeps every raw result; "changes" keeps failures, flips and periodic samples.
        self.raw_mode = raw
        self.raw_sample_ms = int(raw_sample_seconds * 1000)
        self.minute_retention_ms = int(minute_retention_seconds * 1000)
        self.hour_retention_ms = int(hour_retention_seconds * 1000)
        self.max_size = max_size
        #: Commits and spool writes pause while the disk has less than this free.
        self.min_free = min_free
        #: Degraded (full or read-only disk at the start): the file is tried again this often.
        self.retry_interval = retry_interval
        #: target pk -> (last success, ts of the last raw row kept), for raw: changes.
        self._raw_last: dict[int, tuple[bool, int]] = {}
        self.raw_skipped = 0
        self.cap_removed = 0
        #: Days (ts // DAY_MS) that have a results / rollup_minute table.
        self._parts: dict[str, list[int]] = {RAW: [], MINUTE: []}
        self._spool_owned = False
        self._want_spool = True
        #: Why the store runs from memory (full or read-only disk), None when it does not.
        self.degraded: str | None = None
        self._series: dict[str, int] = {}

    # ------------------------------------------------------------------ lifecycle

    def open(self, spool: bool = True) -> None:
        """Create the directory, the file and the tables, then replay a spool left by a crash.

        `spool=False` (the CLI beside a running service) leaves the spool alone: it may be the
        live spool of the service. A file that cannot be opened for writing (full or read-only
        disk) does not stop the start: the store runs degraded from memory (see
        pingr/storage/fallback.py) and `last_error` says why."""
        self._want_spool = spool
        try:
            self._open_file()
        except STORAGE_ERRORS as exc:
            if not spool:
                raise  # the CLI: the plain error is the answer
            self._open_degraded(exc)
            return
        if spool:
            self._replay()
            self._spool_owned = True

    def _open_file(self) -> None:
        """Open (or create) the database file with its tables; sets `engine`."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.spool_file.path.parent.mkdir(parents=True, exist_ok=True)
        # Readable by this user only (it holds key hashes, webhook secrets, channel URLs);
        # SQLite gives the -wal and -shm files the database file's mode.
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        engine = create_engine(
            f"sqlite:///{self.path}",
            connect_args={"check_same_thread": False, "timeout": 5},
        )
        event.listen(engine, "connect", _set_pragmas)
        try:
            with engine.begin() as conn:
                kinds = dict(conn.exec_driver_sql("SELECT name, type FROM sqlite_master").all())
                self._load_parts(conn)
                for kind in (RAW, MINUTE):
                    if kinds.get(kind) == "table":
                        self._partition(conn, kind)
                    if kinds.get(kind) != "view":
                        self._make_view(conn, kind)
            SQLModel.metadata.create_all(engine)
            if RAW in kinds and "rollup_hour" not in kinds:
                # A database from before rollups: derive them once from its raw results.
                now = self.clock_ms()
                with engine.begin() as conn:
                    minutes, hours = rollup.backfill(conn, now - self.minute_retention_ms,
                                                     now - self.hour_retention_ms)
                    self._ensure_parts(conn, MINUTE, {b // rollup.DAY_MS for b, _ in minutes})
                    rollup.write(conn, minutes, _minute_table, hours=hours)
        except BaseException:
            engine.dispose()
            raise
        self.engine = engine

    def _open_degraded(self, exc: BaseException) -> None:
        reason = reason_of(exc, self.path)
        self.degraded = reason
        self.last_error = (f"cannot write {self.path} ({reason}): running from memory, "
                           f"retrying every {self.retry_interval:g}s")
        log.error("database %s cannot be opened for writing (%s): pingr starts DEGRADED, "
                  "running from memory; results are kept in memory (at most %d) and written "
                  "when the disk allows", self.path, reason, MAX_PENDING)
        self._parts = {RAW: [], MINUTE: []}
        engine = memory_engine()
        empty_views(engine, self._make_view)
        copied = copy_small_tables(self.path, engine)
        if copied:
            log.info("degraded start: %d rows of targets, keys, alerts and settings read from "
                     "%s", copied, self.path)
        self.engine = engine

    def recover(self) -> bool:
        """Degraded: try the file again; on success write back what changed in memory, replay
        the spool and commit everything buffered (on the writer thread)."""
        if self.degraded is None:
            return True
        memory = self.engine
        parts = self._parts
        try:
            self._open_file()
        except STORAGE_ERRORS as exc:
            self._parts = parts
            self.engine = memory
            reason = reason_of(exc, self.path)
            self.last_error = (f"cannot write {self.path} ({reason}): running from memory, "
                               f"retrying every {self.retry_interval:g}s")
            return False
        real = self.engine
        try:
            assert memory is not None and real is not None
            write_back(memory, real)
        except STORAGE_ERRORS as exc:
            real.dispose()
            self.engine, self._parts = memory, parts
            self.last_error = (f"cannot write {self.path} ({reason_of(exc, self.path)}): running "
                               f"from memory, retrying every {self.retry_interval:g}s")
            return False
        memory.dispose()
        self.degraded = None
        self.last_error = None
        if self._want_spool:
            self._replay()
            self._spool_owned = True
        self.flush()
        log.warning("database %s is writable again: targets, keys and alerts written back, "
                    "%d buffered results committed", self.path, self.rows_written)
        return True

    def close(self) -> None:
        """Commit what is buffered and release the file (the spool goes when it is empty)."""
        try:
            self.flush()
        finally:
            self._executor.shutdown(wait=True)
            self.spool_file.close(remove=self._spool_owned and self.spool_file.frames == 0)
            if self.engine is not None:
                self.engine.dispose()
