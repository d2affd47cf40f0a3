"""API keys while pingr runs: the admin key made at start, and key management for the API."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sqlmodel import select

from pingr.errors import AppError
from pingr.keys import KeyRing, create_key, hash_key, key_id, refusal
from pingr.settings import AuthConfig
from pingr.storage.tables import ApiKeyRow
from pingr.store import Store

log = logging.getLogger(__name__)


class KeyAdmin:
    """Writes keys through the store and keeps the in-memory key ring current."""

    def __init__(self, store: Store, ring: KeyRing, auth: AuthConfig, *, key_dir: Path,
                 console: Any) -> None:
        self.store = store
        self.ring = ring
        self.auth = auth
        #: Where the first admin key is written when auth.key_file does not say.
        self.key_dir = key_dir
        self.console = console
        self.key_file: Path | None = None
        self.bootstrap_key: str | None = None

    def bootstrap(self) -> None:
        """A known admin key from config/env, or on first start a new one printed once.

        A configured key is made an enabled admin key at every start, whatever happened to it
        through the API or the CLI: it is the owner's way back in."""
        configured = self.auth.api_key
        with self.store.session() as s:
            for row in s.exec(select(ApiKeyRow)).all():
                if row.prefix != key_id(row.key_hash):  # lists once showed key characters
                    row.prefix = key_id(row.key_hash)
                    s.add(row)
            has_keys = s.exec(select(ApiKeyRow).limit(1)).first() is not None
            if configured:
                digest = hash_key(configured)
                row = (s.exec(select(ApiKeyRow).where(ApiKeyRow.key_hash == digest)).first()
                       or s.exec(select(ApiKeyRow).where(ApiKeyRow.name == "bootstrap")).first())
                if row is None:
                    if has_keys:
                        log.warning("the configured admin key (auth.api_key / PINGR_API_KEY) "
                                    "was deleted: created again as key 'bootstrap'")
                    create_key(s, "bootstrap", "admin", configured)
                elif (row.key_hash, row.scope, row.enabled) != (digest, "admin", True):
                    if row.key_hash == digest:
                        log.warning("the configured admin key (auth.api_key / PINGR_API_KEY), "
                                    "key %r, was disabled or lost its admin scope: enabled "
                                    "again as an admin key", row.name)
                    row.key_hash, row.prefix, row.scope, row.enabled = (
                        digest, key_id(digest), "admin", True)
                    s.add(row)
                s.commit()
                return
            if has_keys:
                s.commit()
                return
            _, plaintext = create_key(s, "admin", "admin")
            s.commit()
        self.bootstrap_key = plaintext
        key_file = (Path(self.auth.key_file) if self.auth.key_file
                    else self.key_dir / "admin.key")
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(plaintext + "\n")
        os.chmod(key_file, 0o600)
        self.key_file = key_file
        # The key goes to an interactive console only; under systemd stderr is the journal,
        # and secrets are never logged, so there only the file's path is shown.
        if getattr(self.console, "isatty", lambda: False)():
            print(f"\npingr: created the first admin API key (shown once):\n\n    {plaintext}\n",
                  file=self.console)
        log.warning("created the first admin API key; it is in %s (readable only by this user)",
                    key_file)

    async def manage(self, action: str, **kw: Any) -> Any:
        """list, create (name, scope), enable, disable or delete (key_id) on the writer thread;
        refreshes the key ring. Refusing to lose the last enabled admin key is AppError 409."""

        def plain(row: ApiKeyRow) -> ApiKeyRow:
            # A detached copy: the session's objects expire at commit.
            return ApiKeyRow(**row.model_dump())

        def work(s: Any) -> Any:
            if action == "list":
                return [plain(r) for r in s.exec(select(ApiKeyRow).order_by(ApiKeyRow.id))]
            if action == "create":
                row, plaintext = create_key(s, kw["name"], kw["scope"])
                return plain(row), plaintext
            row = s.get(ApiKeyRow, kw["key_id"])
            if row is None:
                return None
            refused = refusal(s, row, action)
            if refused:
                raise AppError(409, refused)
            if action == "delete":
                s.delete(row)
                return plain(row)
            row.enabled = action == "enable"
            s.add(row)
            s.flush()
            return plain(row)

        await self.store.commit()  # usage counts first, so the listing is current
        out = await self.store.write(work)
        if action != "list":
            self.ring.reload()
        return out
