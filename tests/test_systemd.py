"""sd_notify to a real datagram socket, the heartbeat watchdog, and the unit files themselves."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pingr.app import App
from pingr.server import Server
from pingr.systemd import SdNotify, notify_address, watchdog_seconds
from tests.conftest import make_config

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "systemd"


class NotifySocket:
    """What systemd does for Type=notify: a bound AF_UNIX datagram socket that collects messages."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        """Read everything queued; return the new messages."""
        new = []
        while True:
            try:
                new.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                break
        self.messages += new
        return new

    def seen(self, text: str) -> bool:
        self.drain()
        return any(text in m.split("\n") for m in self.messages)

    def close(self) -> None:
        self.sock.close()


@contextlib.asynccontextmanager
async def serve(config: Any, env: dict[str, str]) -> AsyncIterator[App]:
    """A real App with the given environment (running_app always passes an empty one)."""
    app = App(config, env=env)
    server = Server(app)
    task = asyncio.create_task(server.run())
    waiter = asyncio.create_task(server.listening.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert waiter in done
    try:
        yield app
    finally:
        server.request_stop()
        await asyncio.wait_for(task, 20)


async def wait_for(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


def test_addresses_and_watchdog_environment() -> None:
    assert notify_address({}) is None
    assert notify_address({"NOTIFY_SOCKET": "/run/systemd/notify"}) == "/run/systemd/notify"
    assert notify_address({"NOTIFY_SOCKET": "@sd-notify"}) == b"\0sd-notify"
    assert notify_address({"NOTIFY_SOCKET": "vsock:2:1234"}) is None
    assert watchdog_seconds({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_seconds({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    # Inherited by a child: not ours to ping.
    assert watchdog_seconds({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_seconds({"WATCHDOG_USEC": "nonsense"}) is None
    assert watchdog_seconds({"WATCHDOG_USEC": "0"}) is None


def test_notifier_without_systemd_is_a_no_op() -> None:
    n = SdNotify({})
    assert not n.enabled
    assert n.send("READY=1") is False


def test_notifier_reaches_an_abstract_socket() -> None:
    name = f"pingr-test-{uuid.uuid4().hex}"
    listener = NotifySocket(b"\0" + name.encode())
    try:
        n = SdNotify({"NOTIFY_SOCKET": "@" + name})
        assert n.send("STATUS=hello")
        assert listener.seen("STATUS=hello")
        n.close()
    finally:
        listener.close()


async def test_ready_watchdog_and_stopping_over_the_notify_socket(tmp_path, target_server):
    listener = NotifySocket(str(tmp_path / "notify"))
    cfg = make_config(tmp_path, targets=[{"name": "web", "type": "http", "url": target_server.url,
                                          "interval_seconds": 1}])
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "10000000",
           "WATCHDOG_PID": str(os.getpid())}
    try:
        async with serve(cfg, env) as app:
            assert listener.seen("READY=1"), listener.messages
            ready = next(m for m in listener.messages if "READY=1" in m)
            assert f"API on port {app.port}" in ready
            await wait_for(lambda: listener.seen("WATCHDOG=1"))
            assert app.scheduler.last_beat > 0
            assert not listener.seen("STOPPING=1")
        assert listener.seen("STOPPING=1")
        # READY comes before any watchdog ping and STOPPING is the last word.
        kinds = [m.split("=")[0] for m in listener.messages]
        assert kinds.index("READY") < kinds.index("WATCHDOG")
        assert kinds[-1] == "STOPPING"
    finally:
        listener.close()


async def test_watchdog_pings_stop_when_probes_stop_finishing(tmp_path, target_server):
    """A stuck scheduler must not be hidden by a timer: pings stop, so systemd restarts pingr."""
    listener = NotifySocket(str(tmp_path / "notify"))
    cfg = make_config(tmp_path, alerts={"stale_factor": 2},
                      targets=[{"name": "web", "type": "http", "url": target_server.url,
                                "interval_seconds": 1, "timeout_ms": 500}])
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "10000000"}
    try:
        async with serve(cfg, env) as app:
            await wait_for(lambda: listener.seen("WATCHDOG=1"))
            # The probe loops die (as if wedged); the event loop and its timer keep running.
            await app.scheduler.stop()
            await wait_for(lambda: not app.liveness.verdict.healthy, 10)
            listener.drain()
            listener.messages.clear()
            await asyncio.sleep(4)  # the watchdog timer (a third of WatchdogSec) ticks again
            assert "WATCHDOG=1" not in listener.drain()
            # Probes come back: so do the pings.
            for target in app.targets.values():
                app.scheduler.set(target)
            await wait_for(lambda: listener.seen("WATCHDOG=1"), 10)
            assert app.liveness.verdict.healthy
    finally:
        listener.close()


async def test_no_watchdog_pings_unless_systemd_asked_for_them(tmp_path, target_server):
    listener = NotifySocket(str(tmp_path / "notify"))
    cfg = make_config(tmp_path, targets=[{"name": "web", "type": "http", "url": target_server.url,
                                          "interval_seconds": 1}])
    try:
        async with serve(cfg, {"NOTIFY_SOCKET": str(tmp_path / "notify")}) as app:
            await wait_for(lambda: app.scheduler.probes_run >= 2)
            await asyncio.sleep(1.1)
            assert listener.seen("READY=1")
            assert not listener.seen("WATCHDOG=1")
    finally:
        listener.close()


def _verify_root(tmp_path: Path) -> Path:
    """A root with the host's systemd units plus ours, and the executables they name."""
    root = tmp_path / "root"
    shutil.copytree(Path("/usr/lib/systemd/system"), root / "usr/lib/systemd/system",
                    symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in UNITS.glob("*.service"):
        shutil.copy(unit, root / "etc/systemd/system" / unit.name)
    for exe in ("opt/pingr/venv/bin/pingr", "usr/local/lib/pingr/firstboot.sh", "bin/kill",
                "usr/bin/chgrp", "usr/bin/chmod", "usr/bin/echo", "usr/bin/grep"):
        path = root / exe
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return root


def test_units_pass_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None or not Path("/usr/lib/systemd/system").is_dir():
        pytest.skip("systemd-analyze is not installed (tests/bootstrap.sh installs systemd)")
    root = _verify_root(tmp_path)
    units = sorted(u.name for u in UNITS.glob("*.service"))
    assert "pingr.service" in units
    proc = subprocess.run(["systemd-analyze", "verify", f"--root={root}", *units],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr


def test_unit_is_notify_with_watchdog_and_hardening():
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (tests/bootstrap.sh installs systemd)")
    proc = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                           str(UNITS / "pingr.service")], capture_output=True, text=True,
                          timeout=120)
    last = [line for line in proc.stdout.splitlines() if "Overall exposure level" in line]
    assert last, proc.stdout + proc.stderr
    score = float(last[0].split(":")[1].split()[0])
    # 1.5 when written; systemd calls anything below 2.0 "OK" (10 is "UNSAFE").
    assert score < 2.0, last[0]
    text = (UNITS / "pingr.service").read_text()
    for line in ("Type=notify", "Restart=on-failure", "User=pingr", "SupplementaryGroups=gpio",
                 "StateDirectory=pingr", "ConfigurationDirectory=pingr", "CapabilityBoundingSet=\n",
                 "ProtectSystem=strict"):
        assert line in text
    assert "WatchdogSec=" in text


def test_sysctl_drop_in_is_a_template_for_the_pingr_group():
    text = (UNITS / "99-pingr-ping.conf").read_text()
    setting = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert setting == ["net.ipv4.ping_group_range = @GID@ @GID@"]
