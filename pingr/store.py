"""SQLite store: WAL, one batched writer thread, retention in batches, history queries."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, func, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, create_engine, delete, select

from pingr.config import TargetBase
from pingr.models import AlertRow, ApiKeyRow, Result, ResultRow, Target, TargetRow, parse_target_spec
from pingr.timeutil import now_ms

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Rows deleted per statement by retention: small enough that the writer never holds the
#: database lock for long, large enough that a day of results goes in a few hundred steps.
DELETE_BATCH = 5000
#: Results kept in memory while the disk refuses writes, so a full disk cannot exhaust RAM.
MAX_PENDING = 50_000


def _set_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode never corrupts the database; a power cut may drop the newest commits,
    # a kill -9 drops nothing that was committed. FULL would fsync on every batch for no gain
    # against process crashes and costs SD-card wear.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    # Bound the WAL file after checkpoints so it cannot grow without limit on a busy day.
    cur.execute("PRAGMA journal_size_limit=4194304")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Store:
    """Owns the SQLite file. Writes go through one thread in batches; reads use short sessions."""

    def __init__(
        self,
        path: Path,
        *,
        flush_interval: float = 1.0,
        batch_size: int = 500,
        retention_seconds: float = 7 * 86400,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.path = Path(path)
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.retention_ms = int(retention_seconds * 1000)
        self.clock_ms = clock_ms
        self.engine: Engine | None = None
        self._lock = threading.Lock()
        self._results: deque[dict[str, Any]] = deque()
        self._alerts: dict[int, dict[str, Any]] = {}
        self._key_use: dict[int, tuple[int, int]] = {}
        self._wake: asyncio.Event | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pingr-writer")
        self.dropped_results = 0
        self.last_error: str | None = None
        self.last_flush_ms: int | None = None
        self.rows_written = 0

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Create the directory, the file and the tables; set pragmas on every connection."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.engine = create_engine(
            f"sqlite:///{self.path}",
            connect_args={"check_same_thread": False, "timeout": 5},
        )
        event.listen(self.engine, "connect", _set_pragmas)
        if new:
            with self.engine.connect() as conn:
                # Must precede the first table: lets retention hand pages back to the filesystem
                # with `PRAGMA incremental_vacuum` instead of a full VACUUM.
                conn.exec_driver_sql("PRAGMA auto_vacuum=INCREMENTAL")
                conn.commit()
        SQLModel.metadata.create_all(self.engine)

    def close(self) -> None:
        """Flush what is buffered and release the file."""
        try:
            self.flush()
        finally:
            self._executor.shutdown(wait=True)
            if self.engine is not None:
                self.engine.dispose()

    async def run_writer(self) -> None:
        """Flush at most every `flush_interval`, sooner when a batch fills or an alert changes."""
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            except TimeoutError:
                pass
            self._wake.clear()
            if self.pending():
                await loop.run_in_executor(self._executor, self.flush)

    async def write(self, fn: Callable[[Session], T]) -> T:
        """Run a write on the writer thread, so writes never contend with each other."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._in_session, fn)

    def _in_session(self, fn: Callable[[Session], T]) -> T:
        assert self.engine is not None
        with Session(self.engine) as session:
            out = fn(session)
            session.commit()
            return out

    def _poke(self, urgent: bool = False) -> None:
        if self._wake is not None and (urgent or len(self._results) >= self.batch_size):
            self._wake.set()

    # ------------------------------------------------------------------ buffered writes

    def add_result(self, result: Result, target_pk: int) -> None:
        """Buffer one result; it reaches the disk with the next batch."""
        if len(self._results) >= MAX_PENDING:
            self._results.popleft()
            self.dropped_results += 1
        self._results.append(
            {
                "target_pk": target_pk,
                "ts": result.ts,
                "success": result.success,
                "latency_ms": result.latency_ms,
                "status_code": result.status_code,
                "error": result.error,
            }
        )
        self._poke()

    def put_alert(self, alert: dict[str, Any]) -> None:
        """Buffer an alert insert-or-update, flushed promptly."""
        with self._lock:
            self._alerts[alert["id"]] = dict(alert)
        self._poke(urgent=True)

    def note_key_use(self, key_id: int, ts: int, count: int = 1) -> None:
        """Count an API key's use in memory; written with the next batch, not per request."""
        last, n = self._key_use.get(key_id, (ts, 0))
        self._key_use[key_id] = (max(last, ts), n + count)

    def pending(self) -> bool:
        return bool(self._results or self._alerts or self._key_use)

    def flush(self) -> int:
        """Write everything buffered in one transaction. Returns the number of result rows."""
        if self.engine is None:
            return 0
        with self._lock:
            results = list(self._results)
            self._results.clear()
            alerts = list(self._alerts.values())
            self._alerts.clear()
            key_use = self._key_use
            self._key_use = {}
        if not (results or alerts or key_use):
            return 0
        try:
            with self.engine.begin() as conn:
                if results:
                    conn.execute(ResultRow.__table__.insert(), results)
                for alert in alerts:
                    stmt = sqlite_insert(AlertRow.__table__).values(**alert)
                    stmt = stmt.on_conflict_do_update(
                        index_elements=["id"],
                        set_={k: v for k, v in alert.items() if k != "id"},
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
        except Exception as exc:  # disk full, read-only filesystem, I/O error
            with self._lock:
                # Keep the data for the next try; alerts that changed since win over ours.
                self._results.extendleft(reversed(results))
                while len(self._results) > MAX_PENDING:
                    self._results.popleft()
                    self.dropped_results += 1
                for alert in alerts:
                    self._alerts.setdefault(alert["id"], alert)
                for key_id, (last, count) in key_use.items():
                    self.note_key_use(key_id, last, count)
            if self.last_error is None:
                log.error("database write failed, will retry: %s", exc)
            self.last_error = str(exc)
            return 0
        if self.last_error is not None:
            log.info("database writes work again")
        self.last_error = None
        self.last_flush_ms = self.clock_ms()
        self.rows_written += len(results)
        return len(results)

    def pending_alert(self, alert_id: int) -> dict[str, Any] | None:
        with self._lock:
            row = self._alerts.get(alert_id)
            return dict(row) if row else None

    # ------------------------------------------------------------------ retention

    def cleanup(self, older_than_ms: int | None = None) -> int:
        """Delete raw results past retention in batches, then return free pages to the disk."""
        assert self.engine is not None
        cutoff = older_than_ms if older_than_ms is not None else self.clock_ms() - self.retention_ms
        total = 0
        while True:
            with self.engine.begin() as conn:
                # Why the subquery: SQLite has no DELETE ... LIMIT by default; selecting ids via
                # the ts index keeps each transaction short so probe batches are never held up.
                deleted = conn.execute(
                    text(
                        "DELETE FROM results WHERE id IN "
                        "(SELECT id FROM results WHERE ts < :cutoff LIMIT :n)"
                    ),
                    {"cutoff": cutoff, "n": DELETE_BATCH},
                ).rowcount
            total += deleted
            if deleted < DELETE_BATCH:
                break
        if total:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA incremental_vacuum")
                conn.commit()
            log.info("retention removed %d results older than the cutoff", total)
        return total

    async def run_cleanup(self, every_seconds: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(self._executor, self.cleanup)
            except Exception as exc:
                log.warning("retention cleanup failed: %s", exc)
            await asyncio.sleep(every_seconds)

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
                    spec = parse_target_spec({**json.loads(row.spec), "enabled": False})
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

    @staticmethod
    def delete_target(session: Session, pk: int) -> None:
        session.exec(delete(TargetRow).where(TargetRow.pk == pk))
        # Results of a deleted target are history nobody can ask for any more.
        session.exec(delete(ResultRow).where(ResultRow.target_pk == pk))

    # ------------------------------------------------------------------ reads

    def session(self) -> Session:
        assert self.engine is not None
        return Session(self.engine)

    def latest_results(self, limit: int) -> list[ResultRow]:
        with self.session() as s:
            return list(s.exec(select(ResultRow).order_by(ResultRow.ts.desc()).limit(limit)).all())

    def target_results(self, pk: int, since: int, until: int, limit: int) -> list[ResultRow]:
        with self.session() as s:
            q = (
                select(ResultRow)
                .where(ResultRow.target_pk == pk, ResultRow.ts >= since, ResultRow.ts <= until)
                .order_by(ResultRow.ts.desc())
                .limit(limit)
            )
            return list(s.exec(q).all())

    def recent_results(self, pk: int, limit: int) -> list[ResultRow]:
        """Newest first; used at start-up to restore consecutive-failure counters."""
        with self.session() as s:
            q = select(ResultRow).where(ResultRow.target_pk == pk).order_by(ResultRow.ts.desc())
            return list(s.exec(q.limit(limit)).all())

    def summary(self, since: int, pk: int | None = None) -> dict[int, tuple[int, int, float | None]]:
        """Per target: (total probes, successes, average latency of successes) since `since`."""
        with self.session() as s:
            q = select(
                ResultRow.target_pk,
                func.count(),
                func.sum(ResultRow.success),
                func.avg(ResultRow.latency_ms),
            ).where(ResultRow.ts >= since)
            if pk is not None:
                q = q.where(ResultRow.target_pk == pk)
            rows = s.exec(q.group_by(ResultRow.target_pk)).all()
        return {r[0]: (int(r[1]), int(r[2] or 0), r[3]) for r in rows}

    def newest_result_ts(self) -> int | None:
        with self.session() as s:
            return s.exec(select(func.max(ResultRow.ts))).one()

    def alerts(self, state: str, limit: int) -> list[AlertRow]:
        with self.session() as s:
            q = select(AlertRow)
            if state == "open":
                q = q.where(AlertRow.resolved_at.is_(None))
            elif state == "resolved":
                q = q.where(AlertRow.resolved_at.is_not(None))
            rows = {r.id: r for r in s.exec(q.order_by(AlertRow.opened_at.desc()).limit(limit))}
        # Alerts still in the write buffer are newer than anything on disk.
        with self._lock:
            pending = [AlertRow(**a) for a in self._alerts.values()]
        for row in pending:
            if state == "all" or (state == "open") == (row.resolved_at is None):
                rows[row.id] = row
            else:
                rows.pop(row.id, None)
        ordered = sorted(rows.values(), key=lambda r: (r.opened_at, r.id), reverse=True)
        return ordered[:limit]

    def alert(self, alert_id: int) -> AlertRow | None:
        pending = self.pending_alert(alert_id)
        if pending:
            return AlertRow(**pending)
        with self.session() as s:
            return s.get(AlertRow, alert_id)

    def open_alerts(self) -> list[AlertRow]:
        with self.session() as s:
            return list(s.exec(select(AlertRow).where(AlertRow.resolved_at.is_(None))).all())

    def max_alert_id(self) -> int:
        with self.session() as s:
            return s.exec(select(func.max(AlertRow.id))).one() or 0

    def integrity_ok(self) -> bool:
        with self.session() as s:
            return s.exec(text("PRAGMA quick_check")).one()[0] == "ok"


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
        spec=parse_target_spec(json.loads(row.spec)),
        source=row.source,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
