"""Job executions of heartbeat targets: /ping/{token}/start opens one, success, failure or an
exit code closes it (start, end, duration, exit code, message); one still running past its
grace is a failure, "started but did not finish"."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, select

from pingr.storage.tables import JobExecutionRow
from pingr.store import Store

log = logging.getLogger(__name__)

RUNNING, SUCCESS, FAILURE = "running", "success", "failure"
#: Executions kept per target (older ones are deleted as new ones come).
KEEP = 1000
DID_NOT_FINISH = "started but did not finish"


class Executions:
    """Open executions in memory (one per target at most), every execution in the database.

    A change is not written by itself: it waits in `take()` for the heartbeat part, which
    writes it in the transaction that saves the ping (one commit per ping, as before
    executions existed). Writes go to the store's writer thread in the order they were made,
    so a read through it (`list`) sees every execution recorded before it.
    """

    def __init__(self, store: Store, clock_ms: Callable[[], int]) -> None:
        self.store = store
        self.clock_ms = clock_ms
        #: target id -> started_at (ms) of its running execution
        self.running: dict[str, int] = {}
        self._pending: list[Callable[[Session], Any]] = []

    def load(self) -> None:
        """Executions left running when pingr stopped go on running (the job may still)."""
        with self.store.session() as s:
            rows = s.exec(select(JobExecutionRow).where(JobExecutionRow.state == RUNNING)).all()
        self.running = {r.target_id: r.started_at for r in rows if r.started_at is not None}

    def take(self) -> list[Callable[[Session], Any]]:
        """The writes waiting, in order (the caller runs them in its transaction)."""
        out, self._pending = self._pending, []
        return out

    def _persist(self, fn: Callable[[Session], Any]) -> None:
        self._pending.append(fn)

    # ------------------------------------------------------------------ recording

    def started(self, target_id: str, now: int) -> None:
        """/start: a new execution (one still running is closed as a failure first)."""
        if target_id in self.running:
            self.finished(target_id, now, False, None, "started again before it finished")
        self.running[target_id] = now
        row = JobExecutionRow(target_id=target_id, started_at=now, state=RUNNING)

        def insert(s: Session) -> None:
            s.add(JobExecutionRow(**row.model_dump()))
            s.flush()
            # Keep the newest KEEP per target (its index makes this a short range delete).
            s.execute(text(
                "DELETE FROM job_executions WHERE target_id = :t AND id <= (SELECT id FROM "
                "job_executions WHERE target_id = :t ORDER BY id DESC LIMIT 1 OFFSET :keep)"),
                {"t": target_id, "keep": KEEP})

        self._persist(insert)

    def finished(self, target_id: str, now: int, success: bool, exit_code: int | None,
                 message: str | None) -> dict[str, Any]:
        """Success, failure or an exit code: closes the running execution, or records one
        without a start (a job that only reports its end). Returns the execution."""
        started = self.running.pop(target_id, None)
        record = {"target_id": target_id, "started_at": started, "ended_at": now,
                  "duration_ms": None if started is None else now - started,
                  "state": SUCCESS if success else FAILURE, "exit_code": exit_code,
                  "message": message}

        def close(s: Session) -> None:
            row = None
            if started is not None:
                row = s.exec(select(JobExecutionRow).where(
                    JobExecutionRow.target_id == target_id,
                    JobExecutionRow.started_at == started,
                    JobExecutionRow.state == RUNNING)).first()
            if row is None:
                row = JobExecutionRow()
            for key, value in record.items():
                setattr(row, key, value)
            s.add(row)

        self._persist(close)
        return record

    def overdue(self, target_id: str, grace_s: float, now: int) -> int | None:
        """If the running execution has outlived its grace, close it as a failure ("started
        but did not finish") and return when it started; else None."""
        started = self.running.get(target_id)
        if started is None or now - started <= grace_s * 1000:
            return None
        self.finished(target_id, now, False, None, DID_NOT_FINISH)
        return started

    def forget(self, target_id: str) -> None:
        """A deleted target: its executions go too (with the caller's next write)."""
        self.running.pop(target_id, None)
        self._persist(lambda s: s.execute(
            text("DELETE FROM job_executions WHERE target_id = :t"), {"t": target_id}))

    # ------------------------------------------------------------------ reading

    async def list(self, target_id: str, limit: int) -> list[JobExecutionRow]:
        """Newest first; read on the writer thread, after every write made before."""
        def read(s: Session) -> list[JobExecutionRow]:
            rows = s.exec(select(JobExecutionRow).where(JobExecutionRow.target_id == target_id)
                          .order_by(JobExecutionRow.id.desc()).limit(limit)).all()
            return [JobExecutionRow(**r.model_dump()) for r in rows]

        return await self.store.write(read)
