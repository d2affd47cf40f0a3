"""Heartbeat (push) targets: check-ins at /ping/{token} and the deadline check as a probe."""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from typing import TYPE_CHECKING, Any

from sqlmodel import delete, select

from pingr.models import Result, Target
from pingr.monitor import Event
from pingr.storage.tables import HeartbeatRow
from pingr.timeutil import format_duration

if TYPE_CHECKING:
    from pingr.app import App
    from pingr.probes.context import ProbeContext

log = logging.getLogger(__name__)

#: Stored ping messages are cut to this many characters (a job's log tail, not its whole log).
MESSAGE_CHARS = 500


class HeartbeatError(Exception):
    """A ping the endpoint refuses: HTTP status, message and extra headers."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


async def run(target: Target, ctx: ProbeContext) -> Result:
    """The heartbeat "probe": a failure once period + grace passed without a ping.

    Heartbeats are checked by the scheduler like any other target (so a missed deadline is a
    failed probe that feeds the same alert engine, and results keep the monitor fresh); the
    check reads in-memory check-in times and does no I/O.
    """
    book: Heartbeats | None = getattr(ctx, "heartbeats", None)
    if book is None:
        return Result(target.id, ctx.clock_ms(), False, error="heartbeat tracking is not running")
    return book.check(target)


class Heartbeats:
    """Check-in state of every heartbeat target, the public ping handler and its rate limits."""

    name = "heartbeats"

    def __init__(self, app: App) -> None:
        from pingr.api import push
        from pingr.api.ratelimit import TokenBucket

        self.app = app
        cfg = app.config.push
        self.max_body = cfg.max_body
        self.per_token = TokenBucket(cfg.per_token_per_minute, 60.0)
        self.per_ip = TokenBucket(cfg.per_ip_per_minute, 60.0)
        self.routers = [push.router]
        #: Mounted at the server root: /ping/{token}… (no API key; the token is the credential).
        self.root_routers = [push.ping_router]
        self.rows: dict[str, dict[str, Any]] = {}
        self.missed: set[str] = set()
        self._writes: set[asyncio.Task[Any]] = set()
        # The probe reaches the check-in state through the shared probe context.
        app.ctx.heartbeats = self  # type: ignore[attr-defined]

    async def start(self) -> None:
        with self.app.store.session() as s:
            self.rows = {r.target_id: r.model_dump() for r in s.exec(select(HeartbeatRow)).all()}
        for target in self.app.targets.values():
            if target.spec.type == "heartbeat":
                self._row(target)
        self.app.monitor.listeners.append(self._on_event)

    async def stop(self) -> None:
        if self._on_event in self.app.monitor.listeners:
            self.app.monitor.listeners.remove(self._on_event)
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    def _on_event(self, event: Event) -> None:
        if event.type == "target.deleted" and event.target is not None:
            if self.rows.pop(event.target.id, None) is not None:
                tid = event.target.id
                self._persist(lambda s: s.exec(delete(HeartbeatRow).where(
                    HeartbeatRow.target_id == tid)))

    # ------------------------------------------------------------------ state

    def _row(self, target: Target) -> dict[str, Any]:
        """The target's check-in row, created (with a generated token) on first sight."""
        row = self.rows.get(target.id)
        if row is None:
            row = HeartbeatRow(target_id=target.id, token=secrets.token_urlsafe(24),
                               created_at=self.app.clock_ms()).model_dump()
            self.rows[target.id] = row
            self._save(row)
        return row

    def token_of(self, target: Target) -> str:
        """The configured token, else the generated one."""
        return target.spec.token or self._row(target)["token"]

    def _find(self, token: str) -> Target | None:
        found = None
        for target in self.app.targets.values():
            if target.spec.type == "heartbeat":
                # Compare every candidate in constant time; no early exit on a match.
                if hmac.compare_digest(self.token_of(target).encode(), token.encode()):
                    found = target
        return found

    def _persist(self, fn: Any) -> None:
        task = asyncio.get_running_loop().create_task(self.app.store.write(fn))
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
        now = self.app.clock_ms()
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
                self.app.monitor.emit(Event("heartbeat.missed", now, target, data={
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
             exit_code: int | None = None) -> dict[str, Any]:
        """Record one check-in and feed it to the monitor as a result.

        `kind` is success, fail, start, exit or push. A start only marks the job as running;
        the next success measures its duration.
        """
        self.limit(ip, token)
        target = self._find(token)
        if target is None:
            raise HeartbeatError(404, "unknown heartbeat token")
        row = self._row(target)
        now = self.app.clock_ms()
        if message:
            message = message[:MESSAGE_CHARS]
        data: dict[str, Any] = {"kind": kind}
        if kind == "start":
            row["last_start_at"] = now
            self._save(row)
            self.app.monitor.emit(Event("heartbeat.pinged", now, target, data=data))
            return {"ok": True, "target": target.name, "kind": kind}
        if latency_ms is None and row["last_start_at"] is not None and success:
            latency_ms = now - row["last_start_at"]
        if exit_code is not None:
            data["exit_code"] = exit_code
        error = None
        if not success:
            error = message or (f"exit status {exit_code}" if exit_code is not None
                                else "the job reported a failure")
        row.update(last_ping_at=now, last_success=success, last_kind=kind, last_message=message,
                   last_start_at=None)
        self._save(row)
        if target.id in self.missed:
            self.missed.discard(target.id)
            log.info("heartbeat %s pinged again", target.name)
        data.update(success=success, duration_ms=latency_ms, message=message)
        self.app.monitor.emit(Event("heartbeat.pinged", now, target, data=data))
        self.app.monitor.process(Result(target.id, now, success, latency_ms=latency_ms,
                                        error=error))
        return {"ok": True, "target": target.name, "kind": kind, "success": success}


def component(app: App) -> Heartbeats:
    """Factory for pingr.components."""
    return Heartbeats(app)
