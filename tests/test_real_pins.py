"""Real pins or a loud failure (issue 21): no silent MockFactory, a degraded appliance that
says why everywhere, `pingr gpio test --mock`, and no lamp test after a crash-restart."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pingr.cli import main
from pingr.outputs.backend import board_model
from tests.conftest import ADMIN_KEY, SLOW, make_config, running_app
from tests.test_outputs import SIREN, hardware, history, web_target

pytestmark = pytest.mark.skipif(
    board_model() is not None, reason="this machine is a Raspberry Pi: auto finds real pins")


def real_pins_hardware() -> dict:
    """The test hardware, but asking for real pins (as an installed appliance does)."""
    return {**hardware(), "backend": "auto"}


async def test_no_real_pins_is_degraded_and_said_everywhere(tmp_path, target_server):
    cfg = make_config(tmp_path, targets=[web_target(target_server)],
                      hardware=real_pins_hardware())
    async with running_app(cfg) as run:
        # Probing and the API go on.
        await run.wait_for(lambda: run.app.monitor.snapshot().statuses.get("web") == "up")
        health = (await run.client.get("/api/v1/health")).json()
        assert health["degraded"] is True
        [problem] = health["problems"]
        assert problem.startswith("GPIO outputs: ") and "not a Raspberry Pi" in problem
        assert "backend: mock" in problem  # the fix is named
        status = (await run.client.get("/api/v1/alert-status")).json()
        assert status["degraded"] == [problem] and status["alert"] is False
        hw = (await run.client.get("/api/v1/hardware")).json()
        assert hw["backend"] is None and hw["real_pins"] is False
        assert hw["problem"] and "not a Raspberry Pi" in hw["problem"]
        assert (await run.client.get("/api/v1/outputs")).json() == []


async def test_mock_pins_only_when_the_config_says_so(tmp_path, target_server):
    cfg = make_config(tmp_path, targets=[web_target(target_server)], hardware=hardware())
    async with running_app(cfg) as run:
        health = (await run.client.get("/api/v1/health")).json()
        assert health["degraded"] is False and health["problems"] == []
        assert "degraded" not in (await run.client.get("/api/v1/alert-status")).json()
        hw = (await run.client.get("/api/v1/hardware")).json()
        assert hw["backend"] == "mock" and hw["problem"] is None


def test_gpio_test_off_a_pi_is_an_error_unless_mock(tmp_path, capsys):
    path = tmp_path / "pingr.yaml"
    path.write_text(yaml.safe_dump({"hardware": real_pins_hardware()}))
    assert main(["gpio", "test", "--config", str(path), "--duration", "50ms"]) == 1
    err = capsys.readouterr().err
    assert "not a Raspberry Pi" in err and "--mock" in err
    assert main(["gpio", "test", "--mock", "--config", str(path), "--duration", "50ms"]) == 0
    assert capsys.readouterr().out.startswith("backend: mock")


async def test_a_crash_restart_does_not_sound_the_lamp_test(tmp_path, target_server):
    """A real `pingr run` is killed; the next start on its database skips the lamp test (the
    siren would chirp at every crash-restart); a start after a clean stop runs it again."""
    data = {"host": "127.0.0.1", "port": 0, "auth": {"api_key": ADMIN_KEY},
            "storage": {"path": str(tmp_path / "pingr.db")}, "targets": [web_target(target_server)],
            "hardware": hardware()}
    path = tmp_path / "pingr.yaml"
    path.write_text(yaml.safe_dump(data))
    proc = subprocess.Popen([sys.executable, "-m", "pingr", "run", "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PINGR_CONFIG": ""})
    lock = Path(str(tmp_path / "pingr.db") + ".lock")
    try:
        for _ in range(int(200 * SLOW)):
            if lock.exists() and lock.read_text().strip() == "running":
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"pingr did not start: {proc.stderr}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def siren_levels(run) -> list[int]:
        return [int(v) for _, v in history(run.app.outputs.backend.factory.pin(SIREN))]

    cfg = make_config(tmp_path, targets=[web_target(target_server)], hardware=hardware())
    async with running_app(cfg) as run:
        assert run.app.lock.previous_clean is False
        assert not any(run.app.outputs.testing(o) for o in run.app.outputs.outputs)
        await asyncio.sleep(0.4)
        assert siren_levels(run) == [0]  # never chirped
    async with running_app(cfg) as run:  # the last stop was clean
        assert run.app.lock.previous_clean is True
        await run.wait_for(lambda: siren_levels(run)[:3] == [0, 1, 0], timeout=3)
