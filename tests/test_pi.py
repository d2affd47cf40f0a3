"""Raspberry Pi health readers on recorded kernel files, and their thresholds as alert sources."""

from __future__ import annotations

import shutil
from pathlib import Path

from pingr.collectors.pi import PiReader, Throttling
from tests.conftest import make_config, running_app

FIXTURES = Path(__file__).parent / "fixtures" / "pi"


def test_reads_a_healthy_pi():
    health = PiReader(FIXTURES / "pi4-ok").read()
    assert health.available
    assert health.model == "Raspberry Pi 4 Model B Rev 1.4"
    assert health.temperature_c == 47.7
    assert health.throttling == Throttling.decode(0)
    assert health.root_read_only is False
    body = health.as_dict()
    assert body["throttled"]["raw"] == "0x0" and not body["throttled"]["undervoltage_now"]


def test_decodes_under_voltage_throttling_and_read_only_root():
    health = PiReader(FIXTURES / "pi4-undervoltage").read()
    t = health.throttling
    assert t is not None and t.raw == 0x50005
    assert t.undervoltage_now and t.undervoltage_since_boot
    assert t.throttled_now and t.throttled_since_boot
    assert not t.frequency_capped_now and not t.frequency_capped_since_boot
    assert not t.soft_temperature_limit_now and not t.soft_temperature_limit_since_boot
    assert health.temperature_c == 84.6
    assert health.root_read_only is True


def test_not_a_pi(tmp_path):
    assert PiReader(tmp_path).read().as_dict() == {"available": False}
    # A generic machine with a thermal zone: a temperature, but no Pi.
    zone = tmp_path / "sys/class/thermal/thermal_zone3"
    zone.mkdir(parents=True)
    (zone / "type").write_text("x86_pkg_temp\n")
    (zone / "temp").write_text("51000\n")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/mounts").write_text("/dev/sda1 / ext4 rw 0 0\n")
    reader = PiReader(tmp_path)
    assert not reader.read().available
    assert reader.temperature() == 51.0


def test_garbage_files_do_not_crash(tmp_path):
    shutil.copytree(FIXTURES / "pi4-ok", tmp_path / "root")
    root = tmp_path / "root"
    (root / "sys/class/thermal/thermal_zone0/temp").write_text("not a number\n")
    (root / "sys/devices/platform/soc/soc:firmware/get_throttled").write_text("zz\n")
    health = PiReader(root).read()
    assert health.available  # the model still says Raspberry Pi
    assert health.temperature_c is None and health.throttling is None


async def test_pi_endpoint_and_alerts_from_recorded_files(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "pi4-ok", root)
    cfg = make_config(tmp_path, alerts={"thresholds": {
        "interval": "1s", "temperature": {"above": 80, "for": "0s"},
        "undervoltage": {"enabled": True, "for": "0s"}}})
    async with running_app(cfg) as run:
        host = run.app.host
        host.sampler.pi = PiReader(root)  # the next scheduled sample reads the recorded files
        await run.wait_for(lambda: "pi:temperature" in run.app.monitor.snapshot().statuses,
                           timeout=5)
        r = await run.client.get("/api/v1/system/pi")
        assert r.status_code == 200
        body = r.json()
        assert body["available"] and body["model"].startswith("Raspberry Pi 4")
        assert body["temperature_c"] == 47.7 and body["root_read_only"] is False
        snap = run.app.monitor.snapshot()
        assert snap.statuses["pi:temperature"] == "up"
        assert snap.statuses["pi:undervoltage"] == "up"

        # The supply sags and the SoC heats up: both become failing targets.
        shutil.copytree(FIXTURES / "pi4-undervoltage", root, dirs_exist_ok=True)

        async def failing():
            status = (await run.client.get("/api/v1/alert-status")).json()
            return {f["name"] for f in status["failing_targets"]}

        names = await run.wait_for(
            lambda: _has(failing(), {"pi:temperature", "pi:undervoltage"}), timeout=10)
        assert names
        body = (await run.client.get("/api/v1/system/pi")).json()
        assert body["throttled"]["undervoltage_now"] and body["root_read_only"] is True
        alerts = (await run.client.get("/api/v1/alerts?state=open")).json()
        assert {a["target_name"] for a in alerts} >= {"pi:temperature", "pi:undervoltage"}

        # Power fixed: both recover on the next sample.
        shutil.copytree(FIXTURES / "pi4-ok", root, dirs_exist_ok=True)
        await run.wait_for(lambda: _none(failing()), timeout=10)


async def _has(coro, wanted: set[str]) -> bool:
    return wanted <= await coro


async def _none(coro) -> bool:
    return not await coro
