"""API keys (hashed, scoped), client addresses, and the one dependency that guards routes."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, HTTPException, Request, Response, Security
from fastapi.security import APIKeyHeader
from sqlmodel import Session, select

from pingr.api.ratelimit import FailureWindow, TokenBucket
from pingr.storage.tables import ApiKeyRow
from pingr.store import Store
from pingr.timeutil import now_ms

log = logging.getLogger(__name__)

SCOPES = ("read", "operate", "admin")
_RANK = {s: i for i, s in enumerate(SCOPES)}
KEY_PREFIX = "pingr_"

MISSING = "Missing API key in x-api-key header"
INVALID = "Invalid or disabled API key"


def new_key() -> str:
    """A fresh key: 32 random bytes, URL-safe (256 bits of entropy)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    # A plain SHA-256 is enough here: keys carry 256 random bits, so there is nothing for a
    # slow password hash to protect against, and it keeps each request's check cheap.
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(slots=True)
class KeyInfo:
    id: int
    name: str
    scope: str
    key_hash: str
    enabled: bool


@dataclass
class AuthOutcome:
    """Either a key that passed (`key`) or an HTTP error to send (`status`, `detail`)."""

    status: int = 200
    detail: str | None = None
    key: KeyInfo | None = None
    headers: dict[str, str] = field(default_factory=dict)


class KeyRing:
    """API keys in memory by hash; the database is re-read when another process changed it."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self._by_hash: dict[str, KeyInfo] = {}
        self._loaded_at = -1e9

    def reload(self) -> None:
        with self.store.session() as s:
            rows = s.exec(select(ApiKeyRow)).all()
        self._by_hash = {
            r.key_hash: KeyInfo(r.id or 0, r.name, r.scope, r.key_hash, r.enabled) for r in rows
        }
        self._loaded_at = self.clock()

    def count(self) -> int:
        return len(self._by_hash)

    def lookup(self, key: str) -> KeyInfo | None:
        digest = hash_key(key)
        info = self._by_hash.get(digest)
        if info is None and self.clock() - self._loaded_at > 1.0:
            # `pingr keys create` may have added it from another process; re-read at most
            # once a second so a flood of bad keys cannot turn into a flood of queries.
            self.reload()
            info = self._by_hash.get(digest)
        # The dict lookup found the entry by hash; compare again in constant time anyway so
        # the check does not depend on how the lookup behaved.
        if info is None or not hmac.compare_digest(info.key_hash, digest):
            return None
        return info


def create_key(session: Session, name: str, scope: str,
               key: str | None = None) -> tuple[ApiKeyRow, str]:
    """Insert a key and return (row, plaintext). The plaintext is never stored."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    name = name.strip()
    if not name or len(name) > 64:
        raise ValueError("key name must be 1 to 64 characters")
    if session.exec(select(ApiKeyRow).where(ApiKeyRow.name == name)).first() is not None:
        raise FileExistsError(f"an API key named {name!r} already exists")
    plaintext = key or new_key()
    row = ApiKeyRow(
        name=name,
        scope=scope,
        key_hash=hash_key(plaintext),
        prefix=plaintext[: len(KEY_PREFIX) + 4],
        created_at=now_ms(),
    )
    session.add(row)
    session.flush()
    return row, plaintext


class Authenticator:
    """Checks a request's key, scope and rate limits; shared by every route and the fast path."""

    def __init__(self, keys: KeyRing, store: Store, *, per_minute: int, failures_per_minute: int,
                 trusted_proxies: list[str], clock: Callable[[], float] = time.monotonic) -> None:
        self.keys = keys
        self.store = store
        self.buckets = TokenBucket(per_minute, 60.0, clock)
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
        if _RANK[info.scope] < _RANK[scope]:
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


#: Declares the header in OpenAPI (every route using `require` is marked as secured); the
#: check itself is Authenticator.check, which also accepts `Authorization: Bearer`.
API_KEY_HEADER = APIKeyHeader(name="x-api-key", auto_error=False,
                              description="An API key; `Authorization: Bearer <key>` works too")


def require(scope: str) -> Any:
    """A FastAPI dependency that admits keys with at least `scope` and returns the KeyInfo."""

    # Async on purpose: it runs on the event loop, like the alert-status fast path, so the
    # limiters and usage counters are never touched from two threads.
    async def dependency(request: Request, response: Response,
                   _documented: str | None = Security(API_KEY_HEADER)) -> KeyInfo:
        auth: Authenticator = request.app.state.pingr.auth
        peer = request.client.host if request.client else None
        ip = auth.client_ip(peer, request.headers.get("x-forwarded-for"))
        outcome = auth.check(key_from_headers(request.headers.get), ip, scope)
        if outcome.status != 200:
            raise HTTPException(outcome.status, outcome.detail, headers=outcome.headers)
        response.headers.update(outcome.headers)
        request.state.rate_headers = outcome.headers
        assert outcome.key is not None
        return outcome.key

    dependency.__name__ = f"require_{scope}"
    return Depends(dependency)
