"""Dashboard sessions: an API key exchanged for a signed, expiring cookie, and CSRF tokens.

The cookie holds no secret: the key's id, a fingerprint of its hash (a key replaced under the
same id ends its sessions), a random session id and the expiry, signed with HMAC-SHA256 under
a secret kept in the state directory beside the database (so sign-ins survive a restart).
Every request re-checks that the key still exists and is enabled, and counts against the
key's rate limit exactly like an API request (pingr.access).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pingr.access import Authenticator
from pingr.keys import RANK, KeyInfo

log = logging.getLogger(__name__)

COOKIE = "pingr_session"
#: The sign-in form's own CSRF cookie (double submit): there is no session yet to bind it to.
LOGIN_COOKIE = "pingr_login"
SECRET_FILE = "web-session.key"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    """A signed-in dashboard user: the key (as loaded now), the session id, its expiry."""

    key: KeyInfo
    sid: str
    expires_ms: int
    csrf: str

    @property
    def scope(self) -> str:
        return self.key.scope

    def allows(self, scope: str) -> bool:
        return RANK[self.key.scope] >= RANK[scope]


@dataclass(frozen=True)
class Refusal:
    """Why a request with a valid session is refused anyway: 429 (rate limit) or 403 (scope)."""

    status: int
    detail: str
    headers: dict[str, str]


class Sessions:
    """Issues and checks session cookies for one App."""

    def __init__(self, auth: Authenticator, secret_dir: Path, lifetime_s: float,
                 clock_ms: Callable[[], int]) -> None:
        self.auth = auth
        self.secret_dir = secret_dir
        self.lifetime_ms = int(lifetime_s * 1000)
        self.clock_ms = clock_ms
        self._secret: bytes | None = None
        self._lock = threading.Lock()
        #: Signed-out session ids -> their expiry: refused until then (in memory: a restart
        #: forgets them, but the browser was told to drop the cookie at sign-out).
        self._revoked: dict[str, int] = {}

    # ------------------------------------------------------------------ the secret

    @property
    def secret(self) -> bytes:
        """The signing secret, read from (or first written to) the state directory."""
        if self._secret is None:
            with self._lock:
                if self._secret is None:
                    self._secret = self._load_secret()
        return self._secret

    def _load_secret(self) -> bytes:
        path = self.secret_dir / SECRET_FILE
        try:
            text = path.read_text().strip()
            if len(text) >= 64:
                return bytes.fromhex(text)
        except (OSError, ValueError):
            pass
        secret = secrets.token_bytes(32)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secret.hex() + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            # A read-only or full disk must not lock everybody out of the dashboard.
            log.error("cannot keep the dashboard's session secret in %s (%s): sign-ins last "
                      "until pingr restarts", path, exc.strerror or exc)
        return secret

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.secret, payload.encode(), hashlib.sha256).digest())

    # ------------------------------------------------------------------ sessions

    def issue(self, key: KeyInfo) -> tuple[str, int]:
        """A new session cookie value for `key`, and its lifetime in seconds."""
        now = self.clock_ms()
        body = {"k": key.id, "h": key.key_hash[:16], "s": secrets.token_urlsafe(16),
                "e": now + self.lifetime_ms}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}", self.lifetime_ms // 1000

    def read(self, cookie: str | None) -> Session | None:
        """The session a cookie names, or None when it is absent, forged, expired, signed out,
        or its key was disabled, deleted or replaced."""
        if not cookie or cookie.count(".") != 1:
            return None
        payload, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            body = json.loads(_unb64(payload))
            key_id, fingerprint, sid, expires = body["k"], body["h"], body["s"], body["e"]
        except (ValueError, KeyError, TypeError):
            return None
        now = self.clock_ms()
        if not isinstance(expires, int) or expires <= now or sid in self._revoked:
            return None
        key = self.auth.keys.get(key_id)
        if key is None or not key.enabled or not hmac.compare_digest(
                key.key_hash[:16], str(fingerprint)):
            return None
        return Session(key, sid, expires, self.csrf_token(sid))

    def revoke(self, session: Session) -> None:
        """Sign out: this session id is refused from now on, whatever the browser keeps."""
        now = self.clock_ms()
        self._revoked = {s: e for s, e in self._revoked.items() if e > now}
        self._revoked[session.sid] = session.expires_ms

    def csrf_token(self, sid: str) -> str:
        """The per-session token every state-changing form carries."""
        return _b64(hmac.new(self.secret, f"csrf|{sid}".encode(), hashlib.sha256).digest())[:32]

    def login_token(self) -> str:
        """A fresh token for the sign-in form's double-submit cookie."""
        return secrets.token_urlsafe(24)

    # ------------------------------------------------------------------ per request

    def admit(self, session: Session, scope: str) -> Refusal | None:
        """Count the request against the key's rate limit, as the API does, and check scope."""
        decision = self.auth.buckets.hit(session.key.id)
        headers = {"X-RateLimit-Limit": str(decision.limit),
                   "X-RateLimit-Remaining": str(decision.remaining),
                   "X-RateLimit-Reset": str(decision.reset)}
        if not decision.allowed:
            headers["Retry-After"] = str(decision.retry_after)
            return Refusal(429, f"Rate limit exceeded. Try again in {decision.retry_after} "
                                "seconds.", headers)
        self.auth.store.note_key_use(session.key.id, self.clock_ms())
        if not session.allows(scope):
            return Refusal(403, f"This API key has the '{session.scope}' scope; this needs "
                                f"'{scope}'.", headers)
        return None

    def sign_in(self, key_text: str, ip: str) -> KeyInfo | Refusal:
        """Check a key typed into the sign-in form, with the API's failed-attempt limit."""
        wait = self.auth.failures.blocked_for(ip)
        if wait:
            return Refusal(429, "Too many failed authentication attempts. Try again in "
                                f"{wait} seconds.", {"Retry-After": str(wait)})
        key_text = key_text.strip()
        info = self.auth.keys.lookup(key_text) if key_text else None
        if info is None or not info.enabled:
            self.auth.failures.fail(ip)
            return Refusal(401, "Invalid or disabled API key" if key_text
                           else "Type an API key to sign in", {})
        return info
