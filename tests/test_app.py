"""App lifecycle: config reconciliation across restarts, start-up errors, zero-config run."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from tests.conftest import make_config, running_app


def icmp(name, host="127.0.0.1", **kw):
    return {"name": name, "type": "icmp", "host": host, "interval_seconds": 5, **kw}


async def test_config_targets_are_reconciled_and_api_targets_persist(tmp_path):
    cfg = make_config(tmp_path, targets=[icmp("a"), icmp("b")])
    async with running_app(cfg) as run:
        ids = {t.name: t.id for t in run.app.targets.values()}
        r = await run.client.post("/api/v1/targets", json=icmp("from-api", "127.0.0.9"))
        api_id = r.json()["id"]
    cfg2 = make_config(tmp_path, targets=[icmp("a", "127.0.0.5"), icmp("c")])
    async with running_app(cfg2) as run:
        all_ = {t["name"]: t for t in
                (await run.client.get("/api/v1/targets?status=all")).json()["items"]}
        assert all_["a"]["id"] == ids["a"] and all_["a"]["host"] == "127.0.0.5"  # updated
        assert all_["b"]["enabled"] is False and all_["b"]["source"] == "config"  # removed
        assert all_["c"]["enabled"] is True                                       # added
        assert all_["from-api"]["id"] == api_id and all_["from-api"]["enabled"]  # kept
        assert all_["from-api"]["source"] == "api"


def test_icmp_without_privileges_is_a_clear_startup_error(tmp_path):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv(1) to start pingr without CAP_NET_RAW")
    with open("/proc/sys/net/ipv4/ping_group_range") as f:
        low, high = (int(x) for x in f.read().split())
    if low <= os.getgid() <= high:
        pytest.skip("ping_group_range admits our group here, so unprivileged ICMP works")
    cfg = {"host": "127.0.0.1", "port": 0, "storage": {"path": str(tmp_path / "x.db")},
           "auth": {"api_key": "k" * 32}, "targets": [icmp("lo")]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    # Root without CAP_NET_RAW in its bounding set: no raw socket, and no datagram ICMP socket
    # because ping_group_range excludes our group, exactly like an unprepared service user.
    out = subprocess.run(["setpriv", "--bounding-set", "-net_raw", sys.executable, "-m", "pingr",
                          "run", "--config", str(tmp_path / "c.yaml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "CAP_NET_RAW" in out.stderr and "ping_group_range" in out.stderr


async def test_port_in_use_is_an_error(tmp_path):
    async with running_app(make_config(tmp_path / "one")) as run:
        cfg = make_config(tmp_path / "two", port=run.app.port)
        with pytest.raises(OSError):
            async with running_app(cfg):
                pass


def test_zero_config_run_probes_loopback_and_serves(tmp_path):
    """`pingr run` with no config: real results from 127.0.0.1 and its own health endpoint."""
    port = _free_port()
    env = {**os.environ, "PINGR_PORT": str(port), "PINGR_DB": str(tmp_path / "z.db")}
    env.pop("PINGR_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "pingr", "run"], env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        key_file = tmp_path / "admin.key"
        deadline = time.time() + 40
        latest: list = []
        while time.time() < deadline:
            if key_file.exists():
                try:
                    latest = httpx.get(f"http://127.0.0.1:{port}/api/v1/results/latest-by-target",
                                       headers={"x-api-key": key_file.read_text().strip()}
                                       ).json()["items"]
                except httpx.HTTPError:
                    latest = []
                if {"localhost", "pingr-api"} <= {r["target_name"] for r in latest}:
                    break
            time.sleep(0.5)
        names = {r["target_name"]: r for r in latest}
        assert {"localhost", "pingr-api"} <= set(names), latest
        assert names["localhost"]["success"] and names["pingr-api"]["success"]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "pingr stopped" in err


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_api_connections_get_tcp_nodelay(tmp_path):
    """Responses must not wait for delayed ACKs: accepted sockets need TCP_NODELAY."""
    import socket

    async with running_app(make_config(tmp_path)) as run:
        [server] = run.server.uvicorn.servers
        [listener] = server.sockets
        # asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP.
        assert listener.proto == socket.IPPROTO_TCP
        r = await run.client.get("/api/v1/health")
        assert r.status_code == 200


async def test_date_header_is_current_after_an_idle_pause(tmp_path):
    """uvicorn's 10-per-second timer is gone (idle is idle); the Date header must not go
    stale with it: it is refreshed when a request arrives."""
    from email.utils import parsedate_to_datetime

    async with running_app(make_config(tmp_path)) as run:
        first = await run.client.get("/api/v1/health")
        await asyncio.sleep(2.2)
        second = await run.client.get("/api/v1/health")
        t1 = parsedate_to_datetime(first.headers["date"]).timestamp()
        t2 = parsedate_to_datetime(second.headers["date"]).timestamp()
        assert t2 - t1 >= 2
        assert abs(t2 - time.time()) < 2
