"""Writes while a target is down ride the batched commit; one pingr per database."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import httpx

from tests.conftest import ADMIN_KEY, SLOW, make_config, running_app


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once closed


async def test_a_target_down_commits_only_its_state_flips(tmp_path):
    """One target down, probed every second for 8 s: the alert opening commits at once, the
    growing failure count does not (it was 11 commits in 20 s, one per failed probe)."""
    target = {"name": "gone", "type": "tcp", "host": "127.0.0.1", "port": _closed_port(),
              "interval": "1s", "timeout": "500ms", "failure_threshold": 1}
    cfg = make_config(tmp_path, targets=[target])
    async with running_app(cfg) as run:
        store = run.app.store
        await run.wait_for(lambda: any(a.open for a in store.open_alerts()), timeout=15)
        await asyncio.sleep(0.5)  # the opening's commit
        opened = store.commits
        await asyncio.sleep(8)
        [alert] = (await run.client.get("/api/v1/alerts")).json()
        assert alert["peak_failures"] >= 7  # the count grew, in memory and in reads
        assert store.commits == opened, f"{store.commits - opened} commits while down"


def test_second_run_on_the_same_database_is_refused(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PINGR_DB": str(tmp_path / "p.db"), "PINGR_API_KEY": ADMIN_KEY,
           "PINGR_PORT": str(port), "PINGR_HOST": "127.0.0.1"}
    env.pop("PINGR_CONFIG", None)
    first = subprocess.Popen([sys.executable, "-m", "pingr", "run"], env=env,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30 * SLOW
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2)
                break
            except httpx.HTTPError:
                assert time.time() < deadline and first.poll() is None
                time.sleep(0.2)
        spool = tmp_path / "p.db-spool"
        before = spool.read_bytes() if spool.exists() else b""
        second = subprocess.run([sys.executable, "-m", "pingr", "run", "--port", "0"], env=env,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert "another pingr is already running on this database" in second.stderr
        assert "Traceback" not in second.stderr
        # The first one's live spool was not replayed or cut by the second.
        assert not spool.exists() or spool.read_bytes().startswith(before)
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5).status_code == 200
    finally:
        first.terminate()
        first.communicate(timeout=30)
