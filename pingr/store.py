"""SQLite store: WAL, a crash-safe spool, one batched writer thread, retention, history.

One object, `Store`, made of one part per job (pingr/storage/): `schema` (the file, day tables,
views), `writer` (buffer, spool, commits, consistent reads), `queries`, `retention`, `targets`,
`metrics` (host and container metric series).
"""

from __future__ import annotations

import asyncio
import logging
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
from pingr.storage.metrics import MetricSeries
from pingr.storage.queries import Queries
from pingr.storage.retention import Retention
from pingr.storage.schema import MINUTE, RAW, _minute_table, _set_pragmas
from pingr.storage.spool import Record, Spool
from pingr.storage.targets import TargetRows
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
        self._series: dict[str, int] = {}

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

    def close(self) -> None:
        """Commit what is buffered and release the file (the spool goes when it is empty)."""
        try:
            self.flush()
        finally:
            self._executor.shutdown(wait=True)
            self.spool_file.close(remove=self._spool_owned and self.spool_file.frames == 0)
            if self.engine is not None:
                self.engine.dispose()
