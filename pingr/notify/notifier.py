"""Notifications through apprise: channels, alert/recovery/reminder, cooldown, retry queue, log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlmodel import select

from pingr.models import Target
from pingr.monitor import DOWN, UP, Event
from pingr.notify.urls import apprise_module, load_apprise
from pingr.storage.tables import (
    DROPPED,
    FAILED,
    OPEN_STATES,
    QUEUED,
    RETRYING,
    SENT,
    SUPPRESSED,
    ChannelRow,
    DeliveryRow,
)
from pingr.timeutil import format_duration, from_ms

if TYPE_CHECKING:
    from pingr.app import App

log = logging.getLogger(__name__)

@dataclass
class Channel:
    """A channel as the notifier uses it."""

    id: int
    name: str
    url: str
    on: list[str]
    targets: list[str]
    tags: list[str]
    source: str = "api"
    enabled: bool = True

    def matches(self, target: Target) -> bool:
        """No filter means every target; otherwise a listed name or one shared tag."""
        if not self.targets and not self.tags:
            return True
        return target.name in self.targets or bool(set(self.tags) & set(target.spec.tags))

    @classmethod
    def of(cls, row: ChannelRow | dict[str, Any]) -> Channel:
        d = row if isinstance(row, dict) else row.model_dump()
        return cls(d["id"], d["name"], d["url"], list(d["on"]), list(d["targets"]), list(d["tags"]),
                   d["source"], d["enabled"])


@dataclass
class Track:
    """What one channel was last told about one target (drives cooldown, reminders, recovery)."""

    alert_id: int | None = None
    alert: dict[str, Any] | None = None
    sent: bool = False  # the alert (or a reminder) went out for alert_id
    closed: bool = True  # recovery sent, or nothing to recover from
    last_sent_ms: int | None = None
    last_down_msg_ms: int | None = None
    muted_logged: bool = False


def _when(ms: int) -> str:
    return from_ms(ms).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(ms: int) -> str:
    seconds = max(0, round(ms / 1000))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m")) if v]
    return " ".join(parts[:2])


def message(kind: str, target_name: str, alert: dict[str, Any] | None,
            now: int) -> tuple[str, str, str]:
    """(title, body, apprise notify type) of a message."""
    alert = alert or {}
    error = alert.get("last_error") or "no error text"
    opened = alert.get("opened_at") or now
    if kind == "alert":
        n = alert.get("peak_failures", 0)
        return (f"pingr: {target_name} is DOWN",
                f"{target_name} is down since {_when(opened)} after {n} failed "
                f"check{'' if n == 1 else 's'}.\nLast error: {error}", "failure")
    if kind == "reminder":
        return (f"pingr: {target_name} is still DOWN",
                f"{target_name} has been down for {_span(now - opened)} and nobody has "
                f"acknowledged it.\nLast error: {error}", "warning")
    if kind == "recovery":
        resolved = alert.get("resolved_at") or now
        return (f"pingr: {target_name} is UP",
                f"{target_name} is up again after {_span(resolved - opened)} down "
                f"(since {_when(opened)}).", "success")
    return ("pingr: test notification",
            f"This is a test notification from pingr, sent {_when(now)}. "
            "If you can read it, this channel works.", "info")


class Notifier:
    """Decides what each channel is told and delivers it without blocking anything else."""

    name = "notify"

    def __init__(self, app: App) -> None:
        from pingr.api import channels, notifications

        self.app = app
        self.settings = app.config.notify_settings
        self.routers = [channels.router, notifications.router]
        self.channels: dict[int, Channel] = {}
        self.tracks: dict[tuple[int, str], Track] = {}
        #: The persistent queue in memory: delivery id -> row dict (queued or retrying).
        self.queue: dict[int, dict[str, Any]] = {}
        self.in_flight: set[int] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sem: asyncio.Semaphore | None = None
        self._wake: asyncio.Event | None = None
        self._loop_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._sem = asyncio.Semaphore(self.settings.max_concurrency)
        self._wake = asyncio.Event()
        await self.app.store.write(self._reconcile_config)
        with self.app.store.session() as s:
            self.channels = {r.id: Channel.of(r) for r in s.exec(select(ChannelRow)).all()
                             if r.id is not None}
            pending = s.exec(select(DeliveryRow).where(DeliveryRow.state.in_(OPEN_STATES))
                             .order_by(DeliveryRow.id)).all()
            self.queue = {r.id: r.model_dump() for r in pending if r.id is not None}
            self._restore_tracks(s)
        if self.channels:
            await load_apprise()
        if self.queue:
            log.info("%d notifications waiting from before the restart", len(self.queue))
        self.app.monitor.listeners.append(self._on_event)
        self._loop_task = asyncio.get_running_loop().create_task(self._run(), name="notify")

    async def stop(self) -> None:
        if self._on_event in self.app.monitor.listeners:
            self.app.monitor.listeners.remove(self._on_event)
        tasks = [t for t in (self._loop_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        # Interrupted deliveries stay queued in the database and go out after the restart.
        await asyncio.gather(*tasks, return_exceptions=True)

    def _reconcile_config(self, s: Any) -> None:
        """Make pingr.yaml's channels true in the database (API channels are left alone)."""
        now = self.app.clock_ms()
        wanted = {c.name: c for c in self.app.config.notify}
        rows = {r.name: r for r in s.exec(select(ChannelRow)).all()}
        for name, cfg in wanted.items():
            row = rows.get(name) or ChannelRow(name=name, url=cfg.url, created_at=now)
            row.url, row.on, row.targets, row.tags = cfg.url, list(cfg.on), cfg.targets, cfg.tags
            row.source, row.enabled, row.updated_at = "config", True, now
            s.add(row)
        for name, row in rows.items():
            if row.source == "config" and name not in wanted:
                s.delete(row)
                log.info("notification channel %r is no longer in the config file: removed", name)

    def _restore_tracks(self, s: Any) -> None:
        """Rebuild what each channel was told from the delivery log.

        So a restart re-sends nothing.
        """
        # Newest first, so the first row seen per (channel, target) is the last thing said.
        rows = s.exec(select(DeliveryRow).where(DeliveryRow.target_id.is_not(None))
                      .where(DeliveryRow.kind.in_(("alert", "reminder", "recovery")))
                      .where(DeliveryRow.state != SUPPRESSED)
                      .order_by(DeliveryRow.id.desc())).all()
        for row in rows:
            key = (row.channel_id, row.target_id)
            if key in self.tracks:
                continue
            down = row.kind != "recovery"
            self.tracks[key] = Track(alert_id=row.alert_id, sent=True, closed=not down,
                                     last_sent_ms=row.created_at,
                                     last_down_msg_ms=row.created_at if down else None)

    # ------------------------------------------------------------------ deciding

    def _on_event(self, event: Event) -> None:
        if event.type in ("target.down", "target.up", "alert.acknowledged", "silence.changed",
                          "target.deleted") and self._wake is not None:
            self._wake.set()

    def _silences(self) -> Any:
        from pingr.events import find

        return find(self.app, "silences")

    def evaluate(self) -> None:
        """Compare each channel's knowledge with every target's state and queue what is due.

        Level-driven rather than one message per event: a message held back by the cooldown or
        a silence goes out later if it is still true, and a flapping target produces at most
        one message per cooldown per channel.
        """
        now = self.app.clock_ms()
        s = self.settings
        cooldown_ms, reminder_ms = s.cooldown * 1000, s.reminder_interval * 1000
        silences = self._silences()
        states = self.app.monitor.states
        for key in [k for k in self.tracks if k[1] not in states or k[0] not in self.channels]:
            del self.tracks[key]
        for state in states.values():
            target = state.target
            if not target.enabled:
                continue
            muted: bool | None = None
            for ch in self.channels.values():
                if not ch.enabled or not ch.matches(target):
                    continue
                key = (ch.id, target.id)
                tr = self.tracks.get(key)
                if muted is None:
                    muted = bool(silences and silences.is_silenced(target))
                cooled = (tr is None or tr.last_sent_ms is None
                          or now - tr.last_sent_ms >= cooldown_ms)
                alert = state.alert
                if state.status == DOWN and alert is not None:
                    if tr is None or tr.alert_id != alert["id"]:
                        # A new alert. If the channel still believes the target is down (its
                        # recovery was held back by the cooldown), it need not be told again.
                        still_down = tr is not None and tr.sent and not tr.closed
                        tr = self.tracks[key] = Track(
                            alert_id=alert["id"], alert=dict(alert), sent=still_down, closed=False,
                            last_sent_ms=tr.last_sent_ms if tr else None,
                            last_down_msg_ms=tr.last_down_msg_ms if still_down and tr else None)
                    tr.alert = dict(alert)
                    if muted:
                        if not tr.muted_logged and "alert" in ch.on and not tr.sent:
                            tr.muted_logged = True
                            self._log_suppressed(ch, target, alert, "silenced")
                        continue
                    if not tr.sent:
                        if "alert" in ch.on and cooled and not alert.get("acknowledged_at"):
                            self._queue_message(ch, target, "alert", alert, now)
                            tr.sent, tr.last_sent_ms, tr.last_down_msg_ms = True, now, now
                        continue
                    due = now - (tr.last_down_msg_ms or alert["opened_at"]) >= reminder_ms
                    if ("reminder" in ch.on and reminder_ms > 0 and due and cooled
                            and not alert.get("acknowledged_at")):
                        self._queue_message(ch, target, "reminder", alert, now)
                        tr.last_sent_ms = tr.last_down_msg_ms = now
                elif tr is not None and not tr.closed and state.status == UP:
                    if muted or "recovery" not in ch.on or not tr.sent:
                        tr.closed = True
                    elif cooled:
                        resolved = dict(tr.alert or {"opened_at": now})
                        resolved.setdefault("resolved_at", None)
                        resolved["resolved_at"] = resolved["resolved_at"] or state.changed_ms
                        self._queue_message(ch, target, "recovery", resolved, now)
                        tr.closed, tr.last_sent_ms = True, now

    # ------------------------------------------------------------------ queueing

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _queue_message(self, ch: Channel, target: Target | None, kind: str,
                       alert: dict[str, Any] | None, now: int) -> None:
        title, body, ntype = message(kind, target.name if target else "", alert, now)
        row = DeliveryRow(channel_id=ch.id, channel_name=ch.name, kind=kind,
                          target_id=target.id if target else None,
                          target_name=target.name if target else None,
                          alert_id=alert.get("id") if alert else None, title=title, body=body,
                          notify_type=ntype, state=QUEUED, next_attempt_at=now,
                          created_at=now, updated_at=now)
        self._spawn(self._enqueue(row))

    def _log_suppressed(self, ch: Channel, target: Target, alert: dict[str, Any], why: str) -> None:
        now = self.app.clock_ms()
        title, body, ntype = message("alert", target.name, alert, now)
        row = DeliveryRow(channel_id=ch.id, channel_name=ch.name, kind="alert", target_id=target.id,
                          target_name=target.name, alert_id=alert.get("id"), title=title, body=body,
                          notify_type=ntype, state=SUPPRESSED, last_error=why, created_at=now,
                          updated_at=now)
        self._spawn(self._insert(row))

    async def _insert(self, row: DeliveryRow) -> dict[str, Any]:
        keep = self.settings.log_size

        def work(s: Any) -> dict[str, Any]:
            s.add(row)
            s.flush()
            # The log keeps the newest `log_size` rows; open deliveries are never pruned.
            s.exec(text(
                "DELETE FROM notify_deliveries WHERE state NOT IN ('queued', 'retrying') AND id <= "
                "(SELECT id FROM notify_deliveries ORDER BY id DESC LIMIT 1 OFFSET :keep)"
            ).bindparams(keep=keep))
            return row.model_dump()

        return await self.app.store.write(work)

    async def _enqueue(self, row: DeliveryRow) -> None:
        data = await self._insert(row)
        self.queue[data["id"]] = data
        overflow = len(self.queue) - self.settings.queue_size
        if overflow > 0:
            for old_id in sorted(i for i in self.queue if i not in self.in_flight)[:overflow]:
                old = self.queue.pop(old_id)
                old.update(state=DROPPED, last_error="queue full: dropped for newer messages",
                           updated_at=self.app.clock_ms())
                await self._save(old)
                log.warning("notification queue full: dropped a message for channel %r",
                            old["channel_name"])
        if self._wake is not None:
            self._wake.set()

    async def _save(self, data: dict[str, Any]) -> None:
        copy = dict(data)
        await self.app.store.write(lambda s: s.merge(DeliveryRow(**copy)))

    # ------------------------------------------------------------------ delivering

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            try:
                self.evaluate()
            except Exception:  # a bug here must not end notifications for good
                log.exception("evaluating notifications failed")
            now = self.app.clock_ms()
            next_due = now + 1000
            for did, data in self.queue.items():
                if did in self.in_flight:
                    continue
                if data["next_attempt_at"] <= now:
                    self.in_flight.add(did)
                    self._spawn(self._deliver(did))
                else:
                    next_due = min(next_due, data["next_attempt_at"])
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.01, (next_due - now) / 1000))

    async def _deliver(self, did: int) -> None:
        try:
            data = self.queue.get(did)
            if data is None:
                return
            ch = self.channels.get(data["channel_id"])
            if ch is None:
                ok, error = False, "channel deleted"
                data["attempts"] = self.settings.max_attempts - 1
            else:
                ok, error = await self.send(ch.url, data["title"], data["body"],
                                            data["notify_type"])
            now = self.app.clock_ms()
            data["attempts"] += 1
            data["updated_at"] = now
            data["last_error"] = error
            if ok:
                data["state"] = SENT
                self.queue.pop(did, None)
            elif data["attempts"] >= self.settings.max_attempts:
                data["state"] = FAILED
                self.queue.pop(did, None)
                log.warning("notification to channel %r failed %d times, giving up: %s",
                            data["channel_name"], data["attempts"], error)
            else:
                delay = min(self.settings.retry_max,
                            self.settings.retry_base * 2 ** (data["attempts"] - 1))
                data["state"], data["next_attempt_at"] = RETRYING, now + round(delay * 1000)
                if data["attempts"] == 1:
                    log.info("notification to channel %r failed (%s); retrying with back-off",
                             data["channel_name"], error)
            await self._save(data)
        finally:
            self.in_flight.discard(did)
            if self._wake is not None:
                self._wake.set()

    async def send(self, url: str, title: str, body: str,
                   notify_type: str) -> tuple[bool, str | None]:
        """One delivery attempt through apprise, bounded in time and concurrency."""
        apprise = await load_apprise()
        apprise_module()  # cheap once loaded; re-asserts that apprise's logs stay its own
        timeout = self.settings.timeout
        assert self._sem is not None
        async with self._sem:
            ap = apprise.Apprise()
            if not ap.add(url):
                return False, "apprise cannot use this URL"
            try:
                async with asyncio.timeout(timeout + 1):
                    result = await ap.async_notify(body=body, title=title, notify_type=notify_type,
                                                   timeout=timeout, log_level=logging.WARNING)
            except TimeoutError:
                return False, f"no answer within {format_duration(timeout)}"
            except Exception as exc:  # apprise plugin bugs: report the type, never the URL
                return False, f"apprise error: {type(exc).__name__}"
        if result:
            return True, None
        messages = [entry.message for entry in result.logs()]
        return False, (messages[-1] if messages else "delivery failed")[:500]

    # ------------------------------------------------------------------ API operations

    async def test(self, ch: Channel) -> dict[str, Any]:
        """Send a test message now (one attempt, no retries) and log it."""
        now = self.app.clock_ms()
        title, body, ntype = message("test", "", None, now)
        ok, error = await self.send(ch.url, title, body, ntype)
        row = DeliveryRow(channel_id=ch.id, channel_name=ch.name, kind="test", title=title,
                          body=body, notify_type=ntype, state=SENT if ok else FAILED, attempts=1,
                          last_error=error, created_at=now, updated_at=self.app.clock_ms())
        return await self._insert(row)

    async def save_channel(self, data: dict[str, Any], channel_id: int | None = None) -> Channel:
        """Create or change an API channel (the URL was validated by the caller)."""
        now = self.app.clock_ms()

        def work(s: Any) -> dict[str, Any]:
            if "name" in data and s.exec(
                    select(ChannelRow).where(ChannelRow.name == data["name"])
                    .where(ChannelRow.id != (channel_id or -1))).first() is not None:
                raise FileExistsError(f"a channel named {data['name']!r} already exists")
            row = s.get(ChannelRow, channel_id) if channel_id else ChannelRow(created_at=now)
            for k, v in data.items():
                setattr(row, k, v)
            row.updated_at = now
            s.add(row)
            s.flush()
            return row.model_dump()

        ch = Channel.of(await self.app.store.write(work))
        self.channels[ch.id] = ch
        log.info("notification channel %r %s", ch.name, "changed" if channel_id else "added")
        if self._wake is not None:
            self._wake.set()
        return ch

    async def delete_channel(self, ch: Channel) -> None:
        def work(s: Any) -> None:
            row = s.get(ChannelRow, ch.id)
            if row is not None:
                s.delete(row)

        await self.app.store.write(work)
        self.channels.pop(ch.id, None)
        log.info("notification channel %r deleted", ch.name)
        if self._wake is not None:
            self._wake.set()  # its queued messages fail as "channel deleted"

    def deliveries(self, limit: int, state: str | None = None,
                   channel_id: int | None = None) -> list[DeliveryRow]:
        """The delivery log, newest first."""
        with self.app.store.session() as s:
            q = select(DeliveryRow)
            if state:
                q = q.where(DeliveryRow.state == state)
            if channel_id is not None:
                q = q.where(DeliveryRow.channel_id == channel_id)
            return list(s.exec(q.order_by(DeliveryRow.id.desc()).limit(limit)).all())


def component(app: App) -> Notifier:
    """Factory for pingr.components."""
    return Notifier(app)
