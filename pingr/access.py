"""Access control shared by every route, the alert-status fast path and the pages: the key,
its scope, the per-key rate limit and the per-address failed-authentication limit."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pingr.keys import RANK, KeyInfo, KeyRing
from pingr.ratelimit import FailureWindow, SlidingWindow
from pingr.store import Store
from pingr.timeutil import now_ms

log = logging.getLogger(__name__)

MISSING = "Missing API key in x-api-key header"
INVALID = "Invalid or disabled API key"


@dataclass
class AuthOutcome:
    """Either a key that passed (`key`) or an HTTP error to send (`status`, `detail`)."""

    status: int = 200
    detail: str | None = None
    key: KeyInfo | None = None
    headers: dict[str, str] = field(default_factory=dict)


class Authenticator:
    """Checks a request's key, scope and rate limits; shared by every route and the fast path."""

    def __init__(self, keys: KeyRing, store: Store, *, per_minute: int, failures_per_minute: int,
                 trusted_proxies: list[str], clock: Callable[[], float] = time.monotonic) -> None:
        self.keys = keys
        self.store = store
        self.buckets = SlidingWindow(per_minute, 60.0, clock)
        self.failures = FailureWindow(failures_per_minute, 60.0, clock)
        self.trusted = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str:
        """The socket peer, or the first untrusted hop of X-Forwarded-For from a trusted proxy."""
        addr = peer or "unknown"
        if not forwarded_for or not self._trusted(addr):
            return addr
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop
        return hops[0] if hops else addr

    def _trusted(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    def precheck(self, key: str | None, ip: str) -> AuthOutcome | None:
        """Before a request body is read: None when the key is known and enabled and the
        address is not blocked, else the refusal `check` gives (counted once, as there).

        Spends no rate-limit token: the route's own `check` does that."""
        if not self.failures.blocked_for(ip) and key:
            info = self.keys.lookup(key)
            if info is not None and info.enabled:
                return None
        return self.check(key, ip, "read")

    def check(self, key: str | None, ip: str, scope: str) -> AuthOutcome:
        wait = self.failures.blocked_for(ip)
        if wait:
            return AuthOutcome(
                429, f"Too many failed authentication attempts. Try again in {wait} seconds.",
                headers={"Retry-After": str(wait)},
            )
        if not key:
            self.failures.fail(ip)
            return AuthOutcome(401, MISSING, headers={"WWW-Authenticate": "ApiKey"})
        info = self.keys.lookup(key)
        if info is None or not info.enabled:
            self.failures.fail(ip)
            return AuthOutcome(401, INVALID, headers={"WWW-Authenticate": "ApiKey"})
        decision = self.buckets.hit(info.id)
        headers = {
            "X-RateLimit-Limit": str(decision.limit),
            "X-RateLimit-Remaining": str(decision.remaining),
            "X-RateLimit-Reset": str(decision.reset),
        }
        if not decision.allowed:
            headers["Retry-After"] = str(decision.retry_after)
            return AuthOutcome(
                429, f"Rate limit exceeded. Try again in {decision.retry_after} seconds.",
                key=info, headers=headers,
            )
        self.store.note_key_use(info.id, now_ms())
        if RANK[info.scope] < RANK[scope]:
            return AuthOutcome(
                403, f"This API key has the '{info.scope}' scope; this request needs '{scope}'.",
                key=info, headers=headers,
            )
        return AuthOutcome(200, key=info, headers=headers)


def key_from_headers(get: Callable[[str], Any]) -> str | None:
    """`x-api-key`, else `Authorization: Bearer <key>`."""
    key = get("x-api-key")
    if key:
        return key.strip()
    auth = get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None

