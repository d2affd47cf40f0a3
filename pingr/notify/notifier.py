"""The notifications part: channels, the policy's decisions queued for delivery, the log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from sqlmodel import select

from pingr.models import Target
from pingr.monitor import Change, TargetState
from pingr.notify.delivery import Deliveries
from pingr.notify.messages import message
from pingr.notify.policy import Channel, Intent, Policy, Track
from pingr.notify.urls import load_apprise
from pingr.settings import NotifyChannel, NotifySettings
from pingr.storage.tables import FAILED, QUEUED, SENT, SUPPRESSED, ChannelRow, DeliveryRow
from pingr.store import Store

log = logging.getLogger(__name__)

CERTIFICATE_KINDS = ("certificate.alert", "certificate.recovery")

#: Events after which the policy looks again at once (others wait for the next due time).
_WAKE_ON = frozenset(("target.down", "target.up", "alert.acknowledged", "silence.changed",
                      "target.deleted", "certificate.alert", "certificate.recovery"))


class Notifier:
    """Decides what each channel is told and delivers it without blocking anything else.

    `states` reads the monitor's target states, `silenced` asks the silences; channels come
    from pingr.yaml (read-only through the API) and from the API.
    """

    def __init__(self, channels: list[NotifyChannel], settings: NotifySettings, store: Store,
                 states: Callable[[], Iterable[TargetState]],
                 silenced: Callable[[Target], bool], clock_ms: Callable[[], int]) -> None:
        self.configured = channels
        self.settings = settings
        self.store = store
        self.states = states
        self.silenced = silenced
        self.clock_ms = clock_ms
        self.policy = Policy(settings)
        self.deliveries = Deliveries(settings, store, clock_ms)
        self.channels: dict[int, Channel] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake: asyncio.Event | None = None
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def tracks(self) -> dict[tuple[int, str], Track]:
        return self.policy.tracks

    @property
    def queue(self) -> dict[int, dict[str, Any]]:
        return self.deliveries.queue

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._wake = asyncio.Event()
        await self.store.write(self._reconcile_config)
        with self.store.session() as s:
            self.channels = {r.id: Channel.of(r.model_dump())
                             for r in s.exec(select(ChannelRow)).all() if r.id is not None}
            self.deliveries.load(s)
            self._restore_tracks(s)
        if self.channels:
            await load_apprise()
        if self.queue:
            log.info("%d notifications waiting from before the restart", len(self.queue))
        self._loop_task = asyncio.get_running_loop().create_task(self._run(), name="notify")

    async def stop(self) -> None:
        tasks = [t for t in (self._loop_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        # Interrupted deliveries stay queued in the database and go out after the restart.
        await asyncio.gather(*tasks, return_exceptions=True)

    async def set_channels(self, channels: list[NotifyChannel]) -> None:
        """The config file's channels changed (a reload): store them and use them from now."""
        self.configured = channels
        await self.store.write(self._reconcile_config)
        with self.store.session() as s:
            self.channels = {r.id: Channel.of(r.model_dump())
                             for r in s.exec(select(ChannelRow)).all() if r.id is not None}
        if self.channels:
            await load_apprise()

    def _reconcile_config(self, s: Any) -> None:
        """Make pingr.yaml's channels true in the database (API channels are left alone)."""
        now = self.clock_ms()
        wanted = {c.name: c for c in self.configured}
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
        """Rebuild what each channel was told from the delivery log, so a restart re-sends
        nothing."""
        # Newest first, so the first row seen per (channel, target) is the last thing said.
        rows = s.exec(select(DeliveryRow).where(DeliveryRow.target_id.is_not(None))
                      .where(DeliveryRow.kind.in_(("alert", "reminder", "recovery")))
                      .where(DeliveryRow.state != SUPPRESSED)
                      .order_by(DeliveryRow.id.desc())).all()
        told: set[tuple[int, str]] = set()
        for row in s.exec(select(DeliveryRow).where(DeliveryRow.target_id.is_not(None))
                          .where(DeliveryRow.kind.in_(CERTIFICATE_KINDS))
                          .where(DeliveryRow.state != SUPPRESSED)
                          .order_by(DeliveryRow.id.desc())).all():
            key = (row.channel_id, row.target_id)
            if key not in told:
                told.add(key)
                if row.kind == "certificate.alert":
                    self.policy.warned.add(key)
        for row in rows:
            key = (row.channel_id, row.target_id)
            if key in self.tracks:
                continue
            down = row.kind != "recovery"
            self.tracks[key] = Track(alert_id=row.alert_id, sent=True, closed=not down,
                                     last_sent_ms=row.created_at,
                                     last_down_msg_ms=row.created_at if down else None)

    # ------------------------------------------------------------------ deciding

    def on_change(self, change: Change) -> None:
        """Look again now when a change can make a message due."""
        if self._wake is not None and any(e.type in _WAKE_ON for e in change.events):
            self._wake.set()

    def evaluate(self) -> None:
        """Queue (or log as held back) whatever the policy says is due now."""
        now = self.clock_ms()
        for intent in self.policy.evaluate(self.states(), self.channels, self.silenced, now):
            self._spawn(self._record(intent, now))

    async def _record(self, intent: Intent, now: int) -> None:
        title, body, ntype = message(intent.kind, intent.target.name, intent.alert, now)
        row = DeliveryRow(channel_id=intent.channel.id, channel_name=intent.channel.name,
                          kind=intent.kind, target_id=intent.target.id,
                          target_name=intent.target.name, alert_id=intent.alert.id or None,
                          title=title, body=body, notify_type=ntype, created_at=now,
                          updated_at=now)
        if intent.suppressed:
            row.state, row.last_error = SUPPRESSED, intent.suppressed
            await self.deliveries.insert(row)
            return
        row.state, row.next_attempt_at = QUEUED, now
        await self.deliveries.enqueue(row)
        if self._wake is not None:
            self._wake.set()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ delivering

    async def _run(self) -> None:
        """Evaluate and start due deliveries; sleep until the next is due or a change wakes it.

        The policy also has time-driven decisions (reminders, cooldowns ending): with any
        channel it looks again at least every few seconds, with none it sleeps until woken.
        """
        assert self._wake is not None
        while True:
            try:
                self.evaluate()
            except Exception:  # a bug here must not end notifications for good
                log.exception("evaluating notifications failed")
            now = self.clock_ms()
            ready, next_due = self.deliveries.due(now)
            for did in ready:
                ch = self.channels.get(self.queue[did]["channel_id"])
                self._spawn(self._attempt(did, ch.url if ch else None))
            if self.channels:
                next_due = min(next_due, now + self._recheck_ms())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.01, (next_due - now) / 1000))

    def _recheck_ms(self) -> int:
        """How long the policy's time-driven decisions may wait (a fraction of the shortest
        of cooldown and reminder interval, between 1 s and 60 s)."""
        spans = [x for x in (self.settings.cooldown, self.settings.reminder_interval) if x > 0]
        return round(min(60.0, max(1.0, min(spans, default=60.0) / 10)) * 1000)

    async def _attempt(self, did: int, url: str | None) -> None:
        try:
            await self.deliveries.attempt(did, url)
        finally:
            if self._wake is not None:
                self._wake.set()

    # ------------------------------------------------------------------ API operations

    async def test(self, ch: Channel) -> dict[str, Any]:
        """Send a test message now (one attempt, no retries) and log it."""
        now = self.clock_ms()
        title, body, ntype = message("test", "", None, now)
        ok, error = await self.deliveries.send(ch.url, title, body, ntype)
        row = DeliveryRow(channel_id=ch.id, channel_name=ch.name, kind="test", title=title,
                          body=body, notify_type=ntype, state=SENT if ok else FAILED, attempts=1,
                          last_error=error, created_at=now, updated_at=self.clock_ms())
        return await self.deliveries.insert(row)

    async def save_channel(self, data: dict[str, Any], channel_id: int | None = None) -> Channel:
        """Create or change an API channel (the URL was validated by the caller)."""
        now = self.clock_ms()

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

        ch = Channel.of(await self.store.write(work))
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

        await self.store.write(work)
        self.channels.pop(ch.id, None)
        log.info("notification channel %r deleted", ch.name)
        if self._wake is not None:
            self._wake.set()  # its queued messages fail as "channel deleted"

    def log_rows(self, limit: int, state: str | None = None,
                 channel_id: int | None = None) -> list[DeliveryRow]:
        """The delivery log, newest first."""
        with self.store.session() as s:
            q = select(DeliveryRow)
            if state:
                q = q.where(DeliveryRow.state == state)
            if channel_id is not None:
                q = q.where(DeliveryRow.channel_id == channel_id)
            return list(s.exec(q.order_by(DeliveryRow.id.desc()).limit(limit)).all())

