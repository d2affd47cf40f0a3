"""API keys, scopes, rate limits and failed-authentication lockout, with exact bodies/headers."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys

import httpx
import yaml

from pingr.ratelimit import MAX_ENTRIES, FailureWindow
from tests.conftest import ADMIN_KEY, make_config, running_app


def err(message: str) -> dict[str, str]:
    """Every error body: the Pingu draft's `error` and PiAlert's `detail`, the same text."""
    return {"error": message, "detail": message}


MISSING = err("Missing API key in x-api-key header")
INVALID = err("Invalid or disabled API key")
PATHS = ["/api/v1/alert-status", "/api/v1/targets"]  # fast path and a FastAPI route


async def _key(run, name: str, scope: str) -> tuple[int, str]:
    r = await run.client.post("/api/v1/keys", json={"name": name, "scope": scope})
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


async def test_401_403_and_scopes(tmp_path):
    async with running_app(make_config(tmp_path)) as run:
        async with httpx.AsyncClient(base_url=run.base) as c:
            for path in PATHS:
                r = await c.get(path)
                assert r.status_code == 401 and r.json() == MISSING, path
                r = await c.get(path, headers={"x-api-key": "pingr_wrong"})
                assert r.status_code == 401 and r.json() == INVALID, path
                assert "x-ratelimit-limit" not in r.headers
            assert (await c.get("/api/v1/health")).status_code == 200

        _, read = await _key(run, "dashboard", "read")
        kid, operate = await _key(run, "ops", "operate")
        async with httpx.AsyncClient(base_url=run.base) as c:
            for path in PATHS:
                r = await c.get(path, headers={"x-api-key": read})
                assert r.status_code == 200, path
                assert r.headers["x-ratelimit-limit"] == "120"
                assert int(r.headers["x-ratelimit-remaining"]) <= 119
                assert int(r.headers["x-ratelimit-reset"]) >= 0
            r = await c.get("/api/v1/targets", headers={"Authorization": f"Bearer {read}"})
            assert r.status_code == 200
            r = await c.post("/api/v1/alerts/ack", headers={"x-api-key": read})
            assert r.status_code == 403
            assert r.json() == err("This API key has the 'read' scope; "
                                   "this request needs 'operate'.")
            assert (await c.post("/api/v1/alerts/ack",
                                 headers={"x-api-key": operate})).status_code == 200
            r = await c.post("/api/v1/targets", headers={"x-api-key": operate},
                             json={"name": "x", "type": "icmp", "host": "127.0.0.1"})
            assert r.status_code == 403
            assert (await c.get("/api/v1/keys", headers={"x-api-key": operate})).status_code == 403

            # Disabled keys are refused with the same message as unknown ones.
            assert (await run.client.post(f"/api/v1/keys/{kid}/disable")).json()["enabled"] is False
            r = await c.get("/api/v1/alert-status", headers={"x-api-key": operate})
            assert r.status_code == 401 and r.json() == INVALID
            assert (await run.client.post(f"/api/v1/keys/{kid}/enable")).status_code == 200
            assert (await c.get("/api/v1/alert-status",
                                headers={"x-api-key": operate})).status_code == 200
            assert (await run.client.delete(f"/api/v1/keys/{kid}")).status_code == 204
            assert (await run.client.delete(f"/api/v1/keys/{kid}")).status_code == 404
            r = await c.get("/api/v1/alert-status", headers={"x-api-key": operate})
            assert r.status_code == 401


async def test_rate_limit_per_key(tmp_path):
    cfg = make_config(tmp_path, auth={"api_key": ADMIN_KEY, "rate_limit_per_minute": 5})
    async with running_app(cfg) as run:
        _, other = await _key(run, "other", "read")
        async with httpx.AsyncClient(base_url=run.base, headers={"x-api-key": other}) as c:
            seen = []
            for i in range(5):
                r = await c.get(PATHS[i % 2])
                assert r.status_code == 200
                seen.append(int(r.headers["x-ratelimit-remaining"]))
            assert seen == [4, 3, 2, 1, 0]
            for path in PATHS:
                r = await c.get(path)
                assert r.status_code == 429, path
                n = int(r.headers["retry-after"])
                assert r.json() == err(f"Rate limit exceeded. Try again in {n} seconds.")
                # Five accepted within a second: the next one is accepted when the first of
                # them is a minute old, and a full burst when the last one is.
                assert 58 <= n <= 60
                assert r.headers["x-ratelimit-remaining"] == "0"
                assert n <= int(r.headers["x-ratelimit-reset"]) <= 60
        # Another key has its own budget.
        r = await run.client.get("/api/v1/alert-status")
        assert r.status_code == 200


async def test_failed_auth_lockout_per_ip_even_with_valid_key(tmp_path):
    cfg = make_config(tmp_path, auth={"api_key": ADMIN_KEY, "auth_failures_per_minute": 3})
    async with running_app(cfg) as run:
        async with httpx.AsyncClient(base_url=run.base) as c:
            for _ in range(3):
                assert (await c.get("/api/v1/targets",
                                    headers={"x-api-key": "bad"})).status_code == 401
            for path in PATHS:
                r = await c.get(path, headers={"x-api-key": ADMIN_KEY})
                assert r.status_code == 429, path
                n = int(r.headers["retry-after"])
                assert 50 <= n <= 60
                assert r.json() == err("Too many failed authentication attempts. "
                                       f"Try again in {n} seconds.")
        # Another client address (127.0.0.0/8 all answers) is not affected.
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(base_url=run.base, transport=transport) as other:
            r = await other.get("/api/v1/targets", headers={"x-api-key": ADMIN_KEY})
            assert r.status_code == 200


async def test_forwarded_for_only_from_trusted_proxies(tmp_path):
    cfg = make_config(tmp_path, auth={"api_key": ADMIN_KEY, "auth_failures_per_minute": 2,
                                      "trusted_proxies": ["127.0.0.1/32"]})
    async with running_app(cfg) as run:
        auth = run.app.auth
        assert auth.client_ip("127.0.0.1", "203.0.113.9, 127.0.0.1") == "203.0.113.9"
        assert auth.client_ip("127.0.0.5", "203.0.113.9") == "127.0.0.5"
        async with httpx.AsyncClient(base_url=run.base) as c:
            for _ in range(2):
                await c.get("/api/v1/targets", headers={"x-api-key": "x",
                                                        "X-Forwarded-For": "198.51.100.7"})
            r = await c.get("/api/v1/targets", headers={"x-api-key": ADMIN_KEY,
                                                        "X-Forwarded-For": "198.51.100.7"})
            assert r.status_code == 429  # the forwarded client is locked out ...
            r = await c.get("/api/v1/targets", headers={"x-api-key": ADMIN_KEY,
                                                        "X-Forwarded-For": "198.51.100.8"})
            assert r.status_code == 200  # ... not the proxy itself
        # From an untrusted peer the header is ignored: the peer itself is the client.
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.3")
        async with httpx.AsyncClient(base_url=run.base, transport=transport) as c:
            for _ in range(2):
                await c.get("/api/v1/targets", headers={"x-api-key": "x",
                                                        "X-Forwarded-For": "192.0.2.1"})
            r = await c.get("/api/v1/targets", headers={"x-api-key": ADMIN_KEY,
                                                        "X-Forwarded-For": "192.0.2.99"})
            assert r.status_code == 429


def test_limiters_stay_bounded_with_100k_addresses():
    clock = [0.0]
    fails = FailureWindow(10, clock=lambda: clock[0])
    for i in range(100_000):
        addr = f"127.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        fails.fail(addr)
        clock[0] += 0.0001
    assert len(fails) <= MAX_ENTRIES
    # The most recent offenders are still tracked.
    for _ in range(9):
        fails.fail("127.1.134.159")
    assert fails.blocked_for("127.1.134.159") > 0


async def test_keys_are_hashed_shown_once_and_usage_is_batched(tmp_path):
    async with running_app(make_config(tmp_path)) as run:
        kid, key = await _key(run, "ha", "read")
        assert key.startswith("pingr_") and len(key) >= 6 + 43
        listed = (await run.client.get("/api/v1/keys")).json()
        assert all("key" not in k for k in listed)
        assert {k["name"] for k in listed} == {"bootstrap", "ha"}
        dup = await run.client.post("/api/v1/keys", json={"name": "ha", "scope": "read"})
        assert dup.status_code == 409
        bad = await run.client.post("/api/v1/keys", json={"name": "x", "scope": "root"})
        assert bad.status_code == 400
        async with httpx.AsyncClient(base_url=run.base, headers={"x-api-key": key}) as c:
            for _ in range(7):
                assert (await c.get("/api/v1/alert-status")).status_code == 200
        # Counted in memory, not written per request; the listing commits them first.
        row = next(k for k in (await run.client.get("/api/v1/keys")).json() if k["id"] == kid)
        assert row["usage_count"] == 7 and row["last_used_at"].endswith("Z")
    raw = (tmp_path / "pingr.db").read_bytes()
    for ext in ("-wal",):
        p = tmp_path / f"pingr.db{ext}"
        if p.exists():
            raw += p.read_bytes()
    assert key.encode() not in raw and ADMIN_KEY.encode() not in raw


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pingr", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


def test_keys_cli(tmp_path):
    env = {"PINGR_DB": str(tmp_path / "cli.db")}
    out = _cli("keys", "create", "backup-script", "--scope", "operate", env=env)
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()
    assert key.startswith("pingr_") and "only time" in out.stderr
    assert _cli("keys", "create", "backup-script", env=env).returncode == 1
    listing = _cli("keys", "list", env=env).stdout
    assert "backup-script" in listing and "operate" in listing and key not in listing
    assert _cli("keys", "disable", "backup-script", env=env).returncode == 0
    with sqlite3.connect(tmp_path / "cli.db") as db:
        assert db.execute("SELECT enabled FROM api_keys").fetchone()[0] == 0
    assert _cli("keys", "enable", "backup-script", env=env).returncode == 0
    assert _cli("keys", "delete", "backup-script", env=env).returncode == 0
    assert _cli("keys", "delete", "backup-script", env=env).returncode == 1


async def test_cli_created_key_works_in_a_running_service(tmp_path):
    async with running_app(make_config(tmp_path)) as run:
        await run.wait_for(lambda: run.app.store.spool_file.frames > 0)
        spool = run.app.store.spool_file.path
        live = spool.read_bytes()
        out = _cli("keys", "create", "late", env={"PINGR_DB": str(tmp_path / "pingr.db")})
        key = out.stdout.strip()
        # The CLI left the service's spool alone (no replay, no truncation, not removed).
        assert spool.read_bytes().startswith(live)
        async with httpx.AsyncClient(base_url=run.base, headers={"x-api-key": key}) as c:
            await run.wait_for(lambda: True)
            import asyncio

            await asyncio.sleep(1.1)  # the key ring re-reads the database at most once a second
            assert (await c.get("/api/v1/alert-status")).status_code == 200


async def test_first_start_creates_admin_key_file(tmp_path):
    cfg = make_config(tmp_path, auth={})
    cfg.auth.api_key = None

    class Tty:
        def __init__(self):
            self.text = ""

        def isatty(self):
            return True

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    console = Tty()
    async with running_app(cfg, console=console) as run:
        key_file = run.app.key_admin.key_file
        assert key_file == tmp_path / "admin.key"
        key = key_file.read_text().strip()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert key in console.text
        async with httpx.AsyncClient(base_url=run.base, headers={"x-api-key": key}) as c:
            assert (await c.get("/api/v1/keys")).status_code == 200
    # Second start: keys exist, nothing new is created or printed.
    console2 = Tty()
    async with running_app(cfg, console=console2) as run:
        assert run.app.key_admin.key_file is None and console2.text == ""


def test_no_key_on_a_non_interactive_console(tmp_path):
    cfg = {"host": "127.0.0.1", "port": 0, "storage": {"path": str(tmp_path / "d.db")},
           "targets": [{"name": "lo", "type": "tcp", "host": "127.0.0.1", "port": 9}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "pingr", "run", "--config",
                             str(tmp_path / "c.yaml")], stderr=subprocess.PIPE, text=True)
    import time

    deadline = time.time() + 20
    while not (tmp_path / "admin.key").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.terminate()
    _, err = proc.communicate(timeout=20)
    key = (tmp_path / "admin.key").read_text().strip()
    assert key and key not in err
    assert str(tmp_path / "admin.key") in err


async def test_limiter_memory_is_bounded_over_real_connections(tmp_path):
    """Bad keys from 150 real loopback addresses: the failure table never passes its cap."""
    async with running_app(make_config(tmp_path)) as run:
        auth = run.app.auth
        auth.failures.max_entries = 50  # the production cap is 20,000; same code path
        sizes = []
        for i in range(150):
            addr = f"127.3.{i // 100}.{i % 100 + 1}"
            transport = httpx.AsyncHTTPTransport(local_address=addr)
            async with httpx.AsyncClient(base_url=run.base, transport=transport) as c:
                r = await c.get("/api/v1/alert-status", headers={"x-api-key": "wrong"})
                assert r.status_code == 401
            sizes.append(len(auth.failures))
        assert max(sizes) == 50
        # The newest addresses are remembered; the oldest were forgotten.
        assert "127.3.1.50" in auth.failures._counting
        assert "127.3.0.1" not in auth.failures._counting
