"""SIGHUP reloads the config of a running `pingr run`: a valid one live, an invalid one refused."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from tests.conftest import ADMIN_KEY, SLOW


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float = 20.0):
    deadline = time.time() + timeout * SLOW
    while True:
        try:
            value = predicate()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        assert time.time() < deadline, "condition not met"
        time.sleep(0.2)


def test_sighup_applies_a_valid_config_and_refuses_an_invalid_one(tmp_path: Path):
    port = _free_port()
    down = {"name": "gone", "type": "tcp", "host": "127.0.0.1", "port": _free_port(),
            "interval": "1s", "timeout": "500ms", "failure_threshold": 1}
    cfg = {"host": "127.0.0.1", "port": port, "auth": {"api_key": ADMIN_KEY},
           "storage": {"path": str(tmp_path / "p.db")}, "scheduler": {"stagger": 0},
           "targets": [down]}
    path = tmp_path / "pingr.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log = tmp_path / "stderr.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PINGR_")}
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "pingr", "run", "--config", str(path)],
                                stderr=err, env=env)
    base = f"http://127.0.0.1:{port}/api/v1"
    h = {"x-api-key": ADMIN_KEY}
    try:
        [alert] = _wait(lambda: httpx.get(f"{base}/alerts?state=open", headers=h).json())
        # A valid new config: one more target; the unchanged one keeps its open alert.
        cfg["targets"].append({"name": "self", "type": "http", "interval": "1s",
                               "url": f"http://127.0.0.1:{port}/api/v1/health"})
        path.write_text(yaml.safe_dump(cfg))
        proc.send_signal(signal.SIGHUP)
        _wait(lambda: {"gone", "self"} <= {t["name"] for t in httpx.get(
            f"{base}/targets", headers=h).json()["items"]})
        _wait(lambda: any(t["name"] == "self" and t["status"] == "up" for t in httpx.get(
            f"{base}/targets", headers=h).json()["items"]))
        open_now = httpx.get(f"{base}/alerts?state=open", headers=h).json()
        assert [a["id"] for a in open_now] == [alert["id"]]
        assert proc.poll() is None
        # An invalid config: every error logged, nothing changes, pingr keeps running.
        path.write_text("targets:\n  - {name: x, type: icmp, interval: 0s}\n"
                        "  - {name: y, type: tcp, host: 127.0.0.1, port: 99999}\n")
        proc.send_signal(signal.SIGHUP)
        _wait(lambda: "config NOT reloaded (3 errors)" in log.read_text())
        text = log.read_text()
        assert "interval must be at least 1s" in text and "less than or equal to 65535" in text
        assert "targets[0].host: Field required" in text
        time.sleep(1)
        assert proc.poll() is None
        names = {t["name"] for t in httpx.get(f"{base}/targets", headers=h).json()["items"]}
        assert names == {"gone", "self"}
        assert httpx.get(f"{base}/alert-status", headers=h).status_code == 200
    finally:
        proc.terminate()
        code = proc.wait(timeout=30)
    assert code == 0, log.read_text()[-2000:]
    assert "pingr stopped" in log.read_text()
