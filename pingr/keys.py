"""API keys: random, scoped, stored only as their SHA-256; the in-memory key ring."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
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
#: Why the last enabled admin key cannot go: after it every call would be 401 for good.
LAST_ADMIN = ("cannot {action} the last enabled admin key: nothing could manage pingr after it; "
              "create or enable another admin key first")

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
    """API keys in memory by hash; re-read within a second of a change by another process.

    `pingr keys disable|delete|enable|create` runs as another process on the same database.
    Once a second at most, a lookup asks SQLite's `PRAGMA data_version` (on a connection of
    its own: the number changes when any other connection commits, and asking costs no I/O
    beyond the WAL index) and re-reads the keys when it moved. A flood of requests, good
    keys or bad, costs one such question a second, and a revoked key stops working within
    one second of the command.
    """

    def __init__(self, store: Store, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self._by_hash: dict[str, KeyInfo] = {}
        self._checked_at = -1e9
        self._watch: sqlite3.Connection | None = None
        self._version: int | None = None

    def reload(self) -> None:
        self._changed()  # note the version this read is at
        with self.store.session() as s:
            rows = s.exec(select(ApiKeyRow)).all()
        self._by_hash = {
            r.key_hash: KeyInfo(r.id or 0, r.name, r.scope, r.key_hash, r.enabled) for r in rows
        }
        self._checked_at = self.clock()

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def _changed(self) -> bool:
        """Whether anyone committed to the database since the last call."""
        try:
            if self._watch is None:
                self._watch = sqlite3.connect(f"file:{self.store.path}?mode=ro", uri=True,
                                              check_same_thread=False)
            version = self._watch.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error:
            return False  # no database to read (a degraded start): the keys in memory stand
        changed = version != self._version
        self._version = version
        return changed

    def count(self) -> int:
        return len(self._by_hash)

    def get(self, key_id: int) -> KeyInfo | None:
        """The key with this id as last loaded (a dashboard session names its key by id)."""
        return next((k for k in self._by_hash.values() if k.id == key_id), None)

    def lookup(self, key: str) -> KeyInfo | None:
        now = self.clock()
        if now - self._checked_at >= 1.0:
            self._checked_at = now
            if self._changed():
                self.reload()
        digest = hash_key(key)
        info = self._by_hash.get(digest)
        # The dict lookup found the entry by hash; compare again in constant time anyway so
        # the check does not depend on how the lookup behaved.
        if info is None or not hmac.compare_digest(info.key_hash, digest):
            return None
        return info


def key_id(key_hash: str) -> str:
    """What lists show of a key: a short id taken from its hash, never characters of the key."""
    return key_hash[:8]


def enabled_admins(session: Session) -> int:
    """How many enabled admin keys there are (the last one cannot be disabled or deleted)."""
    return len(session.exec(select(ApiKeyRow).where(
        ApiKeyRow.scope == "admin", ApiKeyRow.enabled == True)).all())  # noqa: E712


def refusal(session: Session, row: ApiKeyRow, action: str) -> str | None:
    """Why `action` must not be done to the key `row`, or None: the one rule the API and the
    CLI share (the last enabled admin key is neither deleted nor disabled)."""
    if (action in ("delete", "disable") and row.scope == "admin" and row.enabled
            and enabled_admins(session) <= 1):
        return LAST_ADMIN.format(action=action)
    return None


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
        prefix=key_id(hash_key(plaintext)),
        created_at=now_ms(),
    )
    session.add(row)
    session.flush()
    return row, plaintext
