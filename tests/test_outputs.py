"""Outputs end to end: a real App, a real HTTP target, gpiozero MockFactory pin histories."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.conftest import EventTap, make_config, running_app

TOWER = {"green": 17, "amber": 27, "red": 22}
BEACON, SIREN, HEALTHY, HEARTBEAT, BUTTON = 26, 5, 6, 13, 16


def hardware(**extra: Any) -> dict[str, Any]:
    data = {
        "backend": "mock",
        "lamp_test": {"at_start": True, "duration": "300ms", "chirp": "100ms"},
        "outputs": [
            {"name": "tower", "type": "tower", "pins": dict(TOWER)},
            # A red beacon on an active-low relay module: visual, so an ack leaves it on.
            {"name": "beacon", "type": "relay", "pin": BEACON, "active_high": False},
            {"name": "siren", "type": "buzzer", "pin": SIREN,
             "pattern": {"type": "beep", "count": 2, "on": "100ms", "off": "100ms",
                         "repeat": "700ms"}},
            {"name": "healthy", "type": "relay", "pin": HEALTHY, "when": "healthy"},
            {"name": "heartbeat", "type": "led", "pin": HEARTBEAT, "when": "heartbeat",
             "pattern": {"type": "blink", "on": "100ms", "off": "100ms"}},
        ],
        "buttons": [{"pin": BUTTON, "bounce": "30ms"}],
    }
    data.update(extra)
    return data


def web_target(server: Any, **extra: Any) -> dict[str, Any]:
    # Failures here are status codes, never timeouts: the timeout is the whole interval, as a
    # first request under qemu-user emulation takes about 0.5 s (a timeout there made the first
    # probe fail, and the tower showed amber between the lamp test and green).
    return {"name": "web", "type": "http", "url": server.url, "interval": "1s", "timeout": "1s",
            "failure_threshold": 2, **extra}


def manager(run: Any) -> Any:
    return run.app.outputs


def history(pin: Any) -> list[tuple[float, float]]:
    """A MockPin's states with absolute time.monotonic() stamps (gpiozero stores deltas)."""
    out = []
    t = pin._last_change
    for state in reversed(list(pin.states)):
        out.append((t, float(state.state)))
        t -= state.timestamp
    return out[::-1]


def levels(pin: Any) -> list[int]:
    return [int(v) for _, v in history(pin)]


def rising(pin: Any, after: float = 0.0) -> list[float]:
    hist = history(pin)
    return [t for (t, v), (_, prev) in zip(hist[1:], hist, strict=False)
            if v and not prev and t >= after]


def first_change_after(pin: Any, t0: float, value: int) -> float:
    for t, v in history(pin):
        if t >= t0 and int(v) == value:
            return t
    raise AssertionError(f"pin never went to {value} after the event: {history(pin)}")


def press(pin: Any, seconds: float) -> None:
    """A finger on the button (pull-up: pressed = low), from a thread like gpiozero's own."""
    pin.drive_low()
    time.sleep(seconds)
    pin.drive_high()


async def test_whole_sequence_lamp_test_to_safe_states(tmp_path, target_server):
    cfg = make_config(tmp_path, targets=[web_target(target_server)], hardware=hardware())
    async with running_app(cfg) as run:
        app, mgr = run.app, manager(run)
        # The monitor's own time of each change (its events carry it), on the pins' clock.
        events = EventTap(app)
        pin = mgr.backend.factory.pin
        tower = {c: pin(n) for c, n in TOWER.items()}
        beacon, siren, healthy, heartbeat, button = (pin(n) for n in (BEACON, SIREN, HEALTHY,
                                                                    HEARTBEAT, BUTTON))
        assert mgr.backend.name == "mock" and not mgr.backend.real

        # Lamp test: every lamp lit, the siren only chirps; then all up = green.
        await run.wait_for(lambda: app.monitor.snapshot().statuses.get("web") == "up"
                           and not mgr.testing("tower"))
        assert [tower[c].state for c in ("green", "amber", "red")] == [1, 0, 0]
        assert levels(tower["amber"])[:3] == [0, 1, 0] and levels(tower["red"])[:3] == [0, 1, 0]
        assert levels(beacon)[:4] == [0, 1, 0, 1]  # active-low: off=high, lamp test=low, off
        chirp = history(siren)
        assert [int(v) for _, v in chirp] == [0, 1, 0]
        # 100 ms: start-up work (building the API) on the loop may stretch it, never shorten it.
        assert chirp[2][0] - chirp[1][0] > 0.09
        assert healthy.state == 1

        # One failure, below the threshold of two: amber.
        target_server.behaviour.status = 500
        await run.wait_for(lambda: "web" in app.monitor.snapshot().degraded)
        assert [tower[c].state for c in ("green", "amber", "red")] == [0, 1, 0]
        assert beacon.state == 1 and siren.state == 0

        # Second failure: alert. Red, beacon relay energised (pin low), siren in bursts.
        await run.wait_for(lambda: app.monitor.snapshot().alert)
        down_at = events.at("target.down")
        for p, value in ((tower["red"], 1), (beacon, 0), (siren, 1)):
            latency = first_change_after(p, down_at, value) - down_at
            assert 0 <= latency < 0.05, f"pin reacted {latency * 1000:.1f} ms after the flip"
        await run.wait_for(lambda: len(rising(siren, down_at)) >= 4, timeout=5)
        edges = rising(siren, down_at)[:4]
        gaps = [b - a for a, b in zip(edges, edges[1:], strict=False)]
        # Bursts of two beeps 0.2 s apart, a burst every 0.7 s (timed from absolute deadlines,
        # so one late toggle on a busy machine does not shift the bursts after it).
        assert gaps[0] < gaps[1] > gaps[2], gaps
        assert 0.6 < edges[2] - edges[0] < 0.85, gaps

        # The button: short press acknowledges; siren silent, the red beacon stays on.
        await asyncio.to_thread(press, button, 0.1)
        await run.wait_for(lambda: "web" in app.monitor.snapshot().acknowledged)
        ack_at = events.at("alert.acknowledged")
        assert siren.state == 0 and beacon.state == 0 and tower["red"].state == 0
        assert tower["amber"].state == 1  # acknowledged alerts show amber on the tower
        await asyncio.sleep(0.8)  # longer than a burst period: no new beeps
        assert rising(siren, ack_at) == []
        outputs = {o["name"]: o for o in (await run.client.get("/api/v1/outputs")).json()}
        assert outputs["siren"]["silenced_by"] == "acknowledged" and outputs["siren"]["active"]
        assert outputs["beacon"]["active"] and not outputs["beacon"]["silenced"]
        assert outputs["beacon"]["value"] == 1.0

        # The API and the button acknowledge the same alert.
        open_alerts = (await run.client.get("/api/v1/alerts", params={"state": "open"})).json()
        assert [a["acknowledged_by"] for a in open_alerts] == ["button"]
        again = (await run.client.post("/api/v1/alerts/ack")).json()
        assert [a["id"] for a in again["acknowledged"]] == [open_alerts[0]["id"]]
        assert again["acknowledged"][0]["acknowledged_by"] == "button"

        # Recovery: green, relay off, within 50 ms of the flip.
        target_server.behaviour.status = 200
        await run.wait_for(lambda: app.monitor.snapshot().statuses["web"] == "up")
        up_at = events.at("target.up")
        for p, value in ((tower["green"], 1), (beacon, 1)):
            latency = first_change_after(p, up_at, value) - up_at
            assert 0 <= latency < 0.05, f"pin reacted {latency * 1000:.1f} ms after the flip"
        assert [tower[c].state for c in ("green", "amber", "red")] == [1, 0, 0]
        assert healthy.state == 1
        assert len(rising(heartbeat)) >= 10  # toggled all along while healthy
        hb_edges = rising(heartbeat, down_at)  # past start-up, whose work delays timers
        hb_gaps = sorted(b - a for a, b in zip(hb_edges, hb_edges[1:], strict=False))
        # A period of 0.2 s; a busy shared CI core can delay single toggles, not the rhythm.
        assert abs(hb_gaps[len(hb_gaps) // 2] - 0.2) < 0.03, hb_gaps

    # Clean shutdown: every output in its safe state (off; the active-low relay's pin high).
    assert [tower[c].state for c in ("green", "amber", "red")] == [0, 0, 0]
    assert (beacon.state, siren.state, healthy.state, heartbeat.state) == (1, 0, 0, 0)
    assert levels(tower["green"]) == [0, 1, 0, 1, 0]
    assert levels(tower["amber"]) == [0, 1, 0, 1, 0, 1, 0]
    assert levels(tower["red"]) == [0, 1, 0, 1, 0]
    assert levels(beacon) == [0, 1, 0, 1, 0, 1]
    assert levels(healthy) == [0, 1, 0]


async def test_api_ack_silences_and_button_then_changes_nothing(tmp_path, target_server):
    target_server.behaviour.status = 503
    cfg = make_config(tmp_path, targets=[web_target(target_server, failure_threshold=1)],
                      hardware=hardware(lamp_test={"at_start": False}))
    async with running_app(cfg) as run:
        app, mgr = run.app, manager(run)
        siren, beacon, button = (mgr.backend.factory.pin(n) for n in (SIREN, BEACON, BUTTON))
        await run.wait_for(lambda: app.monitor.snapshot().alert)
        await run.wait_for(lambda: siren.state == 1)
        body = (await run.client.post("/api/v1/alerts/ack")).json()
        assert body["count"] == 1 and body["acknowledged"][0]["acknowledged_by"] != "button"
        # The route runs in a worker thread; the outputs still change on the loop, at once.
        await run.wait_for(lambda: siren.state == 0, timeout=1)
        assert beacon.state == 0  # energised: visual alarms stay until recovery
        await asyncio.to_thread(press, button, 0.1)
        await run.wait_for(lambda: mgr.buttons["button"].presses == 1, timeout=2)
        alerts = (await run.client.get("/api/v1/alerts", params={"state": "open"})).json()
        assert len(alerts) == 1 and alerts[0]["acknowledged_by"] == body["acknowledged"][0][
            "acknowledged_by"]


async def test_button_bounce_ignored_and_hold_runs_lamp_test(tmp_path, target_server):
    cfg = make_config(tmp_path, targets=[web_target(target_server)],
                      hardware=hardware(lamp_test={"at_start": False, "duration": "300ms"},
                                        buttons=[{"pin": BUTTON, "bounce": "50ms",
                                                  "hold_time": "500ms"}]))
    async with running_app(cfg) as run:
        mgr = manager(run)
        pin = mgr.backend.factory.pin
        button, red = pin(BUTTON), pin(TOWER["red"])
        await run.wait_for(lambda: run.app.monitor.snapshot().statuses.get("web") == "up")
        before = len(red.states)
        # Contact chatter: 5 ms blips are not presses.
        for _ in range(3):
            await asyncio.to_thread(press, button, 0.005)
        await asyncio.sleep(0.1)
        btn = mgr.buttons["button"]
        assert (btn.presses, btn.bounces) == (0, 3)
        # Held past hold_time: lamp test, and no acknowledge on release.
        await asyncio.to_thread(press, button, 0.8)
        await run.wait_for(lambda: btn.holds == 1, timeout=2)
        await run.wait_for(lambda: not mgr.testing("tower"), timeout=3)
        assert btn.presses == 0
        assert [int(s.state) for s in red.states[before:]] == [1, 0]
        hw = (await run.client.get("/api/v1/hardware")).json()
        assert hw["buttons"][0]["holds"] == 1 and hw["buttons"][0]["ignored_bounces"] == 3
        assert hw["buttons"][0]["last_action"] == "lamp_test" and hw["backend"] == "mock"
