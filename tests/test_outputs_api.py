"""Outputs through the API and the CLI: listing, lamp tests, quiet hours, selectors, health."""

from __future__ import annotations

from datetime import datetime, timedelta

import yaml

from pingr.cli import main
from tests.conftest import make_config, running_app
from tests.test_outputs import hardware, levels, manager, rising, web_target


def around_now() -> str:
    now = datetime.now()
    return f"{(now - timedelta(hours=1)):%H:%M}-{(now + timedelta(hours=1)):%H:%M}"


async def test_no_hardware_means_no_pins_and_empty_answers(tmp_path, target_server):
    cfg = make_config(tmp_path, targets=[web_target(target_server)])
    async with running_app(cfg) as run:
        assert (await run.client.get("/api/v1/outputs")).json() == []
        hw = (await run.client.get("/api/v1/hardware")).json()
        assert hw["configured"] is False and hw["backend"] is None and hw["buttons"] == []
        assert manager(run).backend is None


async def test_outputs_listing_and_lamp_test_endpoint(tmp_path, target_server):
    cfg = make_config(tmp_path, targets=[web_target(target_server)],
                      hardware=hardware(lamp_test={"at_start": False, "duration": "2s"}))
    async with running_app(cfg) as run:
        mgr = manager(run)
        pin = mgr.backend.factory.pin
        await run.wait_for(lambda: run.app.monitor.snapshot().statuses.get("web") == "up")
        outs = {o["name"]: o for o in (await run.client.get("/api/v1/outputs")).json()}
        assert outs["tower"]["pins"] == {"green": 17, "amber": 27, "red": 22}
        assert outs["tower"]["value"] == {"green": 1, "amber": 0, "red": 0}
        assert outs["tower"]["driven_by"] == "state" and outs["tower"]["pattern"] is None
        assert outs["beacon"]["pins"] == {"out": 26} and outs["beacon"]["active_high"] is False
        assert (outs["beacon"]["value"], outs["beacon"]["active"]) == (0.0, False)
        assert outs["siren"]["audible"] and outs["siren"]["pattern"]["type"] == "beep"
        assert outs["healthy"]["driven_by"] == "healthy" and outs["healthy"]["value"] == 1.0
        hw = (await run.client.get("/api/v1/hardware")).json()
        assert (hw["backend"], hw["real_pins"], hw["state"], hw["healthy"]) == (
            "mock", False, "ok", True)
        button = hw["buttons"][0]
        assert (button["name"], button["pin"], button["pressed"], button["presses"]) == (
            "button", 16, False, 0)

        # Errors: 404 unknown, 400 bad duration, 409 heartbeat, 403 for a read-only key.
        r = await run.client.post("/api/v1/outputs/nope/test")
        assert (r.status_code, r.json()["detail"]) == (404, "no output named 'nope'")
        assert r.json()["error"] == r.json()["detail"]
        r = await run.client.post("/api/v1/outputs/tower/test", params={"duration": "soon"})
        assert r.status_code == 400 and r.json()["detail"].startswith("duration: invalid duration")
        r = await run.client.post("/api/v1/outputs/tower/test", params={"duration": "2m"})
        assert r.json()["detail"] == "duration must be between 50ms and 60s" == r.json()["error"]
        r = await run.client.post("/api/v1/outputs/heartbeat/test")
        assert r.status_code == 409 and "watchdog" in r.json()["detail"]
        _, read_key = await run.app.key_admin.manage("create", name="viewer", scope="read")
        r = await run.client.post("/api/v1/outputs/tower/test", headers={"x-api-key": read_key})
        assert r.status_code == 403

        # The tower's lamp test: all three on for the duration, then back to green.
        red = pin(22)
        r = await run.client.post("/api/v1/outputs/tower/test", params={"duration": "300ms"})
        assert r.status_code == 200 and r.json()["testing"] is True
        assert r.json()["value"] == {"green": 1, "amber": 1, "red": 1}
        await run.wait_for(lambda: not mgr.testing("tower"), timeout=3)
        assert (pin(17).state, pin(27).state, red.state) == (1, 0, 0)

        # The dead-man relay's test is dropping out: its alarm state.
        healthy = pin(6)
        r = await run.client.post("/api/v1/outputs/healthy/test", params={"duration": "200ms"})
        assert r.json()["value"] == 0.0
        await run.wait_for(lambda: healthy.state == 1, timeout=3)
        assert levels(healthy)[-3:] == [1, 0, 1]


async def test_quiet_hours_mute_audible_outputs_only(tmp_path, target_server):
    target_server.behaviour.status = 500
    cfg = make_config(tmp_path, targets=[web_target(target_server, failure_threshold=1)],
                      hardware=hardware(lamp_test={"at_start": False}, quiet_hours=around_now()))
    async with running_app(cfg) as run:
        mgr = manager(run)
        siren, beacon = mgr.backend.factory.pin(5), mgr.backend.factory.pin(26)
        await run.wait_for(lambda: beacon.state == 0)  # active-low: energised
        outs = {o["name"]: o for o in (await run.client.get("/api/v1/outputs")).json()}
        assert outs["siren"]["silenced_by"] == "quiet_hours" and outs["siren"]["active"]
        assert outs["beacon"]["silenced"] is False
        assert levels(siren) == [0]


async def test_selector_outputs_follow_only_their_targets(tmp_path, target_server):
    from tests.conftest import TargetServer

    other = TargetServer()
    try:
        cfg = make_config(
            tmp_path,
            targets=[web_target(target_server, tags=["shop"], failure_threshold=1),
                     web_target(other, name="nas", failure_threshold=1)],
            hardware={"backend": "mock", "lamp_test": {"at_start": False}, "outputs": [
                {"name": "shop lamp", "type": "led", "pin": 4, "when": {"tags": ["shop"]}},
                {"name": "nas lamp", "type": "led", "pin": 7, "when": {"targets": ["nas"]}},
                {"name": "all good", "type": "led", "pin": 8, "when": "ok"},
            ]})
        async with running_app(cfg) as run:
            pin = manager(run).backend.factory.pin
            shop, nas, good = pin(4), pin(7), pin(8)
            await run.wait_for(lambda: good.state == 1)
            other.behaviour.status = 500
            await run.wait_for(lambda: nas.state == 1)
            assert (shop.state, good.state) == (0, 0)
            other.behaviour.status = 200
            target_server.behaviour.status = 500
            await run.wait_for(lambda: shop.state == 1 and nas.state == 0)
            assert good.state == 0
    finally:
        other.close()


async def test_stalled_probing_drops_the_dead_man_relay_and_stops_the_heartbeat(
        tmp_path, target_server):
    cfg = make_config(tmp_path, targets=[web_target(target_server)],
                      alerts={"stale_factor": 1.5},
                      hardware=hardware(lamp_test={"at_start": False}))
    async with running_app(cfg) as run:
        mgr = manager(run)
        pin = mgr.backend.factory.pin
        healthy, heartbeat, amber, siren = pin(6), pin(13), pin(27), pin(5)
        await run.wait_for(lambda: run.app.monitor.snapshot().statuses.get("web") == "up")
        await run.app.scheduler.stop()  # probing dies; the process and its API live on
        # pingr's own liveness check or the monitor's staleness, whichever sees it first.
        await run.wait_for(lambda: healthy.state == 0, timeout=6)
        assert not run.app.monitor.snapshot().healthy
        await run.wait_for(lambda: mgr.state == "stale", timeout=3)
        assert heartbeat.state == 0
        stopped = heartbeat._last_change
        # The tower blinks amber (stale), and a stale monitor is an alert: the siren beeps.
        await run.wait_for(lambda: len(rising(amber, stopped)) >= 2, timeout=3)
        assert len(rising(siren, stopped)) >= 1
        assert rising(heartbeat, stopped) == []
        hw = (await run.client.get("/api/v1/hardware")).json()
        assert (hw["state"], hw["healthy"]) == ("stale", False)


async def test_silenced_target_sounds_nothing_and_shows_amber(tmp_path, target_server):
    target_server.behaviour.status = 500
    cfg = make_config(tmp_path, targets=[web_target(target_server, failure_threshold=1)],
                      hardware=hardware(lamp_test={"at_start": False}))
    async with running_app(cfg) as run:
        pin = manager(run).backend.factory.pin
        siren, beacon, red, amber = pin(5), pin(26), pin(22), pin(27)
        await run.wait_for(lambda: red.state == 1 and siren.state == 1)
        r = await run.client.post("/api/v1/silence", json={"targets": ["web"], "duration": "1h"})
        assert r.status_code == 201
        await run.wait_for(lambda: amber.state == 1, timeout=3)
        assert (red.state, beacon.state) == (0, 1)  # beacon relay released (active-low: high)
        await run.wait_for(lambda: siren.state == 0, timeout=1)
        outs = {o["name"]: o for o in (await run.client.get("/api/v1/outputs")).json()}
        assert not outs["siren"]["active"] and not outs["beacon"]["active"]


async def test_rgb_led_colours_follow_the_state(tmp_path, target_server):
    cfg = make_config(tmp_path, targets=[web_target(target_server, failure_threshold=1)],
                      hardware={"backend": "mock", "lamp_test": {"at_start": False}, "outputs": [
                          {"name": "rgb", "type": "rgb_led", "pins": {"red": 9, "green": 10,
                                                                      "blue": 11},
                           "colors": {"ok": "#00ff80", "alert": "red"}}]})
    async with running_app(cfg) as run:
        pin = manager(run).backend.factory.pin
        red, green, blue = pin(9), pin(10), pin(11)
        await run.wait_for(lambda: green.state == 1.0)
        assert (red.state, round(blue.state, 2)) == (0.0, 0.5)
        target_server.behaviour.status = 500
        await run.wait_for(lambda: red.state == 1.0)
        assert (green.state, blue.state) == (0.0, 0.0)


def test_cli_gpio_test_exercises_outputs_on_mock_pins(tmp_path, capsys):
    path = tmp_path / "pingr.yaml"
    path.write_text(yaml.safe_dump({"hardware": hardware()}))
    assert main(["gpio", "test", "--config", str(path), "--duration", "50ms"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "backend: mock (mock pins: nothing physical switches)"
    assert "beacon (relay, BCM 26, active-low): on for 0.05s; value 1.0" in out
    assert "tower: back to its safe state (off); value {'green': 0, 'amber': 0, 'red': 0}" in out
    assert "healthy (relay, BCM 6): dropping out for 0.05s (its alarm state); value 0.0" in out
    assert any(line.startswith("siren (buzzer, BCM 5): chirping") for line in out)
    assert main(["gpio", "test", "beacon", "--config", str(path), "--duration", "50ms"]) == 0
    only = capsys.readouterr().out.splitlines()
    assert len(only) == 3 and only[1].startswith("beacon ")
    assert main(["gpio", "test", "nope", "--config", str(path)]) == 1
    assert "no output named 'nope'; outputs: tower, beacon, siren" in capsys.readouterr().err
