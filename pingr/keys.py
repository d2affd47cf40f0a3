"""API keys: random, scoped, stored only as their SHA-256; the in-memory key ring."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlmodel import Session, select

from pingr.storage.tables import ApiKeyRow
from pingr.store import Store
from pingr.timeutil import now_ms

SCOPES = ("read", "operate", "admin")
RANK = {s: i for i, s in enumerate(SCOPES)}
KEY_PREFIX = "pingr_"

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

    def get(self, key_id: int) -> KeyInfo | None:
        """The key with this id as last loaded (a dashboard session names its key by id)."""
        return next((k for k in self._by_hash.values() if k.id == key_id), None)

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
