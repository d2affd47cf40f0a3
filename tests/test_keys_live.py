"""Keys: CLI changes reach a running server within a second, the last admin key cannot go, a
configured admin key is enabled again at start, lists show no key characters, pingr.db is 0600."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import time

import httpx

from pingr.keys import hash_key
from tests.conftest import ADMIN_KEY, SLOW, make_config, running_app


def _cli(*args: str, db) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pingr", "keys", *args], capture_output=True,
                          text=True, env={**os.environ, "PINGR_DB": str(db)}, timeout=60)


async def _status_within(c: httpx.AsyncClient, wanted: int, seconds: float) -> float:
    """Poll alert-status until it answers `wanted`; return how long that took."""
    start = time.monotonic()
    while True:
        r = await c.get("/api/v1/alert-status")
        if r.status_code == wanted:
            return time.monotonic() - start
        assert time.monotonic() - start < seconds, f"still {r.status_code} after {seconds}s"
        await asyncio.sleep(0.05)


async def test_cli_disable_enable_delete_reach_a_running_server_within_a_second(tmp_path):
    db = tmp_path / "pingr.db"
    async with running_app(make_config(tmp_path)) as run:
        r = await run.client.post("/api/v1/keys", json={"name": "poller", "scope": "read"})
        key = r.json()["key"]
        async with httpx.AsyncClient(base_url=run.base, headers={"x-api-key": key}) as c:
            assert (await c.get("/api/v1/alert-status")).status_code == 200
            # The poller keeps polling (every 100 ms) while the CLI changes its key.
            for action, wanted in (("disable", 401), ("enable", 200), ("delete", 401)):
                out = await asyncio.to_thread(_cli, action, "poller", db=db)
                assert out.returncode == 0, out.stderr
                took = await _status_within(c, wanted, 5 * SLOW)
                # The key ring looks at most once a second; the rest is one request's time
                # on a shared, busy machine.
                assert took <= 1.5 * SLOW, f"{action}: {took:.2f}s"
                await asyncio.sleep(0.3)


async def test_last_admin_key_cannot_be_disabled_or_deleted(tmp_path):
    async with running_app(make_config(tmp_path)) as run:
        keys = (await run.client.get("/api/v1/keys")).json()
        [admin] = [k for k in keys if k["scope"] == "admin"]
        for call in (run.client.post(f"/api/v1/keys/{admin['id']}/disable"),
                     run.client.delete(f"/api/v1/keys/{admin['id']}")):
            r = await call
            assert r.status_code == 409, r.text
            assert "last enabled admin key" in r.json()["detail"]
        assert (await run.client.get("/api/v1/keys")).status_code == 200
        # With a second admin key the first may go.
        r = await run.client.post("/api/v1/keys", json={"name": "second", "scope": "admin"})
        second = r.json()
        assert (await run.client.post(f"/api/v1/keys/{admin['id']}/disable")).status_code == 200
        async with httpx.AsyncClient(base_url=run.base,
                                     headers={"x-api-key": second["key"]}) as c:
            r = await c.delete(f"/api/v1/keys/{second['id']}")
            assert r.status_code == 409
    out = _cli("disable", "second", db=tmp_path / "pingr.db")
    assert out.returncode == 1 and "last enabled admin key" in out.stderr


async def test_configured_admin_key_is_enabled_again_at_start(tmp_path, caplog):
    cfg = make_config(tmp_path)
    async with running_app(cfg) as run:
        # Another admin key first: the last one could not be disabled.
        r = await run.client.post("/api/v1/keys", json={"name": "other", "scope": "admin"})
        assert r.status_code == 201
        [boot] = [k for k in (await run.client.get("/api/v1/keys")).json()
                  if k["name"] == "bootstrap"]
        assert (await run.client.post(f"/api/v1/keys/{boot['id']}/disable")).status_code == 200
        assert (await run.client.get("/api/v1/alert-status")).status_code == 401
    async with running_app(cfg) as run:
        assert (await run.client.get("/api/v1/alert-status")).status_code == 200
    assert "enabled again" in caplog.text


async def test_keys_list_shows_no_key_characters_and_db_is_private(tmp_path):
    cfg = make_config(tmp_path)
    async with running_app(cfg) as run:
        r = await run.client.post("/api/v1/keys", json={"name": "ha", "scope": "read"})
        key = r.json()["key"]
        listing = (await run.client.get("/api/v1/keys")).json()
        for item in listing:
            for plaintext in (key, ADMIN_KEY):
                # No run of 6 characters of a key (beyond the common "pingr_") is shown.
                secret = plaintext.removeprefix("pingr_")
                text = repr(item)
                assert not any(secret[i:i + 6] in text for i in range(len(secret) - 5)), item
        [ha] = [k for k in listing if k["name"] == "ha"]
        assert ha["prefix"] == hash_key(key)[:8]
    for name in ("pingr.db", "pingr.db-wal", "pingr.db-shm"):
        path = tmp_path / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
