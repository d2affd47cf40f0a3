"""Heartbeat (push) targets: check-in times, the public ping handler, the deadline check."""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlmodel import delete, select

from pingr.executions import DID_NOT_FINISH, Executions
from pingr.models import Result, Target
from pingr.monitor import Event
from pingr.ratelimit import TokenBucket
from pingr.settings import PushConfig
from pingr.storage.tables import HeartbeatRow
from pingr.store import Store
from pingr.timeutil import format_duration

log = logging.getLogger(__name__)

#: Stored ping messages are cut to this many characters (a job's log tail, not its whole log).
MESSAGE_CHARS = 500


class HeartbeatError(Exception):
    """A ping the endpoint refuses: HTTP status, message and extra headers."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


@dataclass(frozen=True)
class Checkin:
    """One accepted ping: the API's answer, the event to tell, the result to account (none
    for a start, which only marks the job as running)."""

    answer: dict[str, Any]
    event: Event
    result: Result | None


class Heartbeats:
    """Check-in state of every heartbeat target, the public ping handler and its rate limits.

    The scheduler's heartbeat probe reads `check` (this is the ProbeContext's `checkins`).
    `targets` lists the current targets; `publish` tells an event (heartbeat.missed) that
    no result carries.
    """

    def __init__(self, config: PushConfig, store: Store, clock_ms: Callable[[], int],
                 targets: Callable[[], Iterable[Target]],
                 publish: Callable[[Event], None], executions: Executions) -> None:
        self.store = store
        #: Job runs: start ... success/failure/exit code (pingr.executions).
        self.executions = executions
        self.clock_ms = clock_ms
        self.targets = targets
        self.publish = publish
        self.max_body = config.max_body
        self.per_token = TokenBucket(config.per_token_per_minute, 60.0)
        self.per_ip = TokenBucket(config.per_ip_per_minute, 60.0)
        self.rows: dict[str, dict[str, Any]] = {}
        self.missed: set[str] = set()
        self._writes: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        with self.store.session() as s:
            self.rows = {r.target_id: r.model_dump() for r in s.exec(select(HeartbeatRow)).all()}
        for target in self._heartbeat_targets():
            self._row(target)
        self.executions.load()

    async def stop(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    def forget(self, target_id: str) -> None:
        """A deleted target: its check-in row and executions go too."""
        self.missed.discard(target_id)
        if self.rows.pop(target_id, None) is not None:
            self.executions.forget(target_id)
            self._persist(lambda s: s.exec(delete(HeartbeatRow).where(
                HeartbeatRow.target_id == target_id)))

    def _heartbeat_targets(self) -> list[Target]:
        return [t for t in self.targets() if t.spec.type == "heartbeat"]

    # ------------------------------------------------------------------ state

    def _row(self, target: Target) -> dict[str, Any]:
        """The target's check-in row, created (with a generated token) on first sight."""
        row = self.rows.get(target.id)
        if row is None:
            row = HeartbeatRow(target_id=target.id, token=secrets.token_urlsafe(24),
                               created_at=self.clock_ms()).model_dump()
            self.rows[target.id] = row
            self._save(row)
        return row

    def token_of(self, target: Target) -> str:
        """The configured token, else the generated one."""
        return target.spec.token or self._row(target)["token"]

    def _find(self, token: str) -> Target | None:
        found = None
        for target in self._heartbeat_targets():
            # Compare every candidate in constant time; no early exit on a match.
            if hmac.compare_digest(self.token_of(target).encode(), token.encode()):
                found = target
        return found

    def _persist(self, fn: Any) -> None:
        """Save in the background, from the loop or from a worker thread (a sync route)."""
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is None or running is not loop:
            if loop is None:
                raise RuntimeError("heartbeats are not started")
            loop.call_soon_threadsafe(self._persist, fn)
            return
        # Job executions changed by this ping ride the same transaction (one commit a ping).
        writes = [*self.executions.take(), fn]

        def work(s: Any) -> None:
            for write in writes:
                write(s)

        task = loop.create_task(self.store.write(work))
        self._writes.add(task)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[Any]) -> None:
        self._writes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("saving heartbeat state failed: %s", task.exception())

    def _save(self, row: dict[str, Any]) -> None:
        data = dict(row)
        self._persist(lambda s: s.merge(HeartbeatRow(**data)))

    def status(self, target: Target) -> dict[str, Any]:
        """What GET /api/v1/heartbeats shows for one target."""
        row = self._row(target)
        spec = target.spec
        base = row["last_ping_at"] if row["last_ping_at"] is not None else row["created_at"]
        return {"row": row, "token": self.token_of(target),
                "deadline_ms": base + round((spec.period + spec.grace) * 1000),
                "overdue": target.id in self.missed}

    # ------------------------------------------------------------------ the deadline check

    def check(self, target: Target) -> Result:
        spec = target.spec
        row = self._row(target)
        now = self.clock_ms()
        if self.executions.overdue(target.id, spec.grace, now) is not None:
            # It said it started and said nothing more within its grace: a failure, until
            # the job reports success.
            message = f"{DID_NOT_FINISH} within {format_duration(spec.grace)}"
            log.info("heartbeat %s: %s", target.name, message)
            row.update(last_success=False, last_message=message, last_start_at=None)
            self._save(row)
        base = row["last_ping_at"] if row["last_ping_at"] is not None else row["created_at"]
        late_ms = now - base - round((spec.period + spec.grace) * 1000)
        if late_ms > 0:
            since = format_duration(round((now - base) / 1000))
            error = (f"no ping for {since} (expected every {format_duration(spec.period)}"
                     f" + {format_duration(spec.grace)} grace)")
            if row["last_ping_at"] is None:
                error = (f"never pinged; expected within {format_duration(spec.period)}"
                         f" + {format_duration(spec.grace)} grace")
            if target.id not in self.missed:
                self.missed.add(target.id)
                log.info("heartbeat %s missed its deadline", target.name)
                self.publish(Event("heartbeat.missed", now, target, data={
                    "last_ping_at": row["last_ping_at"], "late_ms": late_ms}))
            return Result(target.id, now, False, error=error)
        if row["last_success"] is False:
            # The job's own last word was a failure: it stays down until it reports success.
            return Result(target.id, now, False,
                          error=row["last_message"] or "last ping reported failure")
        return Result(target.id, now, True)

    # ------------------------------------------------------------------ pings

    def limit(self, ip: str, token: str) -> None:
        """Per address first (so guessing tokens is slow), then per token."""
        for bucket, key in ((self.per_ip, ip), (self.per_token, token)):
            decision = bucket.hit(key)
            if not decision.allowed:
                raise HeartbeatError(429, f"Rate limit exceeded. Try again in "
                                          f"{decision.retry_after} seconds.",
                                     {"Retry-After": str(decision.retry_after)})

    def ping(self, token: str, kind: str, *, ip: str, success: bool = True,
             message: str | None = None, latency_ms: int | None = None,
             exit_code: int | None = None) -> Checkin:
        """Record one check-in (the App feeds its result to the monitor).

        `kind` is success, fail, start, exit or push. A start only marks the job as running;
        the next success measures its duration.
        """
        self.limit(ip, token)
        target = self._find(token)
        if target is None:
            raise HeartbeatError(404, "unknown heartbeat token")
        row = self._row(target)
        now = self.clock_ms()
        if message:
            message = message[:MESSAGE_CHARS]
        data: dict[str, Any] = {"kind": kind}
        if kind == "start":
            row["last_start_at"] = now
            self.executions.started(target.id, now)
            self._save(row)
            return Checkin({"ok": True, "target": target.name, "kind": kind},
                           Event("heartbeat.pinged", now, target, data=data), None)
        if latency_ms is None and row["last_start_at"] is not None and success:
            latency_ms = now - row["last_start_at"]
        if exit_code is not None:
            data["exit_code"] = exit_code
        error = None
        if not success:
            error = message or (f"exit status {exit_code}" if exit_code is not None
                                else "the job reported a failure")
        execution = self.executions.finished(target.id, now, success, exit_code, message)
        if execution["duration_ms"] is not None:
            data["started_at"] = execution["started_at"]
        row.update(last_ping_at=now, last_success=success, last_kind=kind, last_message=message,
                   last_start_at=None)
        self._save(row)
        if target.id in self.missed:
            self.missed.discard(target.id)
            log.info("heartbeat %s pinged again", target.name)
        data.update(success=success, duration_ms=latency_ms, message=message)
        return Checkin({"ok": True, "target": target.name, "kind": kind, "success": success},
                       Event("heartbeat.pinged", now, target, data=data),
                       Result(target.id, now, success, latency_ms=latency_ms, error=error))
