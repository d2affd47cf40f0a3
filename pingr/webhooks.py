"""Outgoing webhooks: events POSTed as JSON, signed with HMAC-SHA256 of the raw body."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from sqlmodel import delete, select

from pingr import __version__
from pingr.events import event_payload
from pingr.monitor import Change
from pingr.secrets import mask_text
from pingr.settings import NotifySettings
from pingr.storage.tables import WebhookRow
from pingr.store import Store

log = logging.getLogger(__name__)

#: Events a webhook can subscribe to ("*" = all of them). Per-result events are left out on
#: purpose: one POST per probe would be a flood; use the SSE stream for those.
WEBHOOK_EVENTS = (
    "target.down", "target.up", "target.unreachable", "target.paused", "target.deleted",
    "alert.acknowledged", "monitor.stale", "monitor.fresh", "heartbeat.pinged",
    "heartbeat.missed", "silence.changed", "certificate.alert", "certificate.recovery",
    "container.state_changed", "container.health_changed", "container.restart_alert",
)
SIGNATURE_HEADER = "X-Pingr-Signature"
TIMESTAMP_HEADER = "X-Pingr-Timestamp"
#: Attempts per event before it is given up (webhooks are for machines that are usually up).
ATTEMPTS = 3
#: Seconds a test delivery (POST /webhooks/{id}/test) may take: one attempt, answered at once.
TEST_TIMEOUT = 5.0


def sign(secret: str, body: bytes) -> str:
    """The X-Pingr-Signature value: `sha256=` + hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


class Webhooks:
    """Delivers monitor events to the registered webhooks, each POST signed and time-stamped."""

    def __init__(self, store: Store, settings: NotifySettings, clock_ms: Callable[[], int],
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.store = store
        self.settings = settings
        self.clock_ms = clock_ms
        self.hooks: dict[int, dict[str, Any]] = {}
        self.transport = transport
        self.client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sem: asyncio.Semaphore | None = None

    async def start(self) -> None:
        with self.store.session() as s:
            self.hooks = {r.id: r.model_dump() for r in s.exec(select(WebhookRow)).all()
                          if r.id is not None}
        self._sem = asyncio.Semaphore(self.settings.max_concurrency)

    def _client(self) -> httpx.AsyncClient:
        """The client, made for the first delivery: its TLS context loads the CA bundle
        (~40 ms of start-up and ~1.8 MiB that a box without webhooks never needs)."""
        if self.client is None:
            self.client = httpx.AsyncClient(
                transport=self.transport, timeout=httpx.Timeout(self.settings.timeout),
                headers={"User-Agent": f"pingr/{__version__}"}, follow_redirects=False,
                trust_env=False)
        return self.client

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.client is not None:
            await self.client.aclose()

    def on_change(self, change: Change) -> None:
        """POST each event of a change to the webhooks that want it."""
        if not self.hooks:
            return
        for event in change.events:
            if event.type not in WEBHOOK_EVENTS:
                continue
            payload = event_payload(event)
            for hook in self.hooks.values():
                if hook["enabled"] and ("*" in hook["events"] or event.type in hook["events"]):
                    task = asyncio.get_running_loop().create_task(
                        self.deliver(hook, event.type, payload))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    def body(self, event_type: str, payload: dict[str, Any], sent_at: int) -> bytes:
        """The exact bytes that are signed and sent. `sent_at` repeats the timestamp header
        inside the signed body, so a captured request cannot be replayed with a new header."""
        return json.dumps({"event": event_type, "sent_at": sent_at, "delivery": str(uuid.uuid4()),
                           "payload": payload}, separators=(",", ":")).encode()

    async def deliver(self, hook: dict[str, Any], event_type: str, payload: dict[str, Any],
                      attempts: int = ATTEMPTS, timeout: float | None = None) -> dict[str, Any]:
        """POST one event, retrying with back-off; returns {ok, status, error}."""
        assert self._sem is not None
        client = self._client()
        status: int | None = None
        error: str | None = None
        extra = {} if timeout is None else {"timeout": httpx.Timeout(timeout)}
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(min(self.settings.retry_base * 2 ** (attempt - 1), 60))
            sent_at = self.clock_ms() // 1000
            raw = self.body(event_type, payload, sent_at)
            headers = {"Content-Type": "application/json", "X-Pingr-Event": event_type,
                       TIMESTAMP_HEADER: str(sent_at), SIGNATURE_HEADER: sign(hook["secret"], raw)}
            try:
                async with self._sem:
                    response = await client.post(hook["url"], content=raw, headers=headers,
                                                      **extra)
                status, error = response.status_code, None
                if response.is_success:
                    break
                error = f"HTTP {status}"
            except httpx.HTTPError as exc:
                status, error = None, mask_text(f"{type(exc).__name__}: {exc}")[:300]
        ok = error is None
        if not ok:
            log.warning("webhook %r: %s could not be delivered: %s", hook["name"], event_type,
                        error)
        await self._record(hook["id"], status, error)
        return {"ok": ok, "status": status, "error": error}

    async def _record(self, hook_id: int, status: int | None, error: str | None) -> None:
        now = self.clock_ms()
        hook = self.hooks.get(hook_id)
        if hook is None:
            return
        hook.update(last_sent_at=now, last_status=status, last_error=error)

        def work(s: Any) -> None:
            row = s.get(WebhookRow, hook_id)
            if row is not None:
                row.last_sent_at, row.last_status, row.last_error = now, status, error
                s.add(row)

        await self.store.write(work)

    # ------------------------------------------------------------------ API operations

    async def create(self, name: str, url: str, events: list[str],
                     secret: str | None) -> dict[str, Any]:
        now = self.clock_ms()

        def work(s: Any) -> dict[str, Any]:
            if s.exec(select(WebhookRow).where(WebhookRow.name == name)).first() is not None:
                raise FileExistsError(f"a webhook named {name!r} already exists")
            row = WebhookRow(name=name, url=url, secret=secret or new_secret(), events=events,
                             created_at=now)
            s.add(row)
            s.flush()
            return row.model_dump()

        hook = await self.store.write(work)
        self.hooks[hook["id"]] = hook
        log.info("webhook %r added", name)
        return hook

    async def delete(self, hook_id: int) -> bool:
        hook = self.hooks.pop(hook_id, None)
        if hook is None:
            return False
        await self.store.write(
            lambda s: s.exec(delete(WebhookRow).where(WebhookRow.id == hook_id)))
        log.info("webhook %r deleted", hook["name"])
        return True

    async def test(self, hook: dict[str, Any]) -> dict[str, Any]:
        """One attempt with a short timeout, answered within the request (it used to retry
        for 90 s inside it)."""
        payload = {"type": "webhook.test", "message": "test delivery from pingr"}
        return await self.deliver(hook, "webhook.test", payload, attempts=1,
                                  timeout=min(TEST_TIMEOUT, self.settings.timeout))
