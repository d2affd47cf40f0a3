"""MQTT against a real Mosquitto broker: discovery, state on change, commands, reconnects."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from pingr import __version__
from tests.conftest import ADMIN_KEY, make_config, running_app
from tests.mqttbroker import Broker, Recorder

# ---------------------------------------------------------------- Home Assistant's schema
# The keys Home Assistant's MQTT discovery accepts per platform (from its platform schemas:
# MQTT_ENTITY_COMMON_SCHEMA plus each platform's own), with the required ones. An unknown key
# makes Home Assistant reject the whole config, so the check is strict both ways.

COMMON = {
    "name": str, "unique_id": str, "availability_topic": str, "payload_available": str,
    "payload_not_available": str, "device": dict, "origin": dict, "icon": str,
    "json_attributes_topic": str, "json_attributes_template": str, "entity_category": str,
    "enabled_by_default": bool, "qos": int, "encoding": str,
}
PLATFORMS: dict[str, tuple[set[str], dict[str, type]]] = {
    "binary_sensor": ({"state_topic"}, {
        "state_topic": str, "device_class": str, "value_template": str, "payload_on": str,
        "payload_off": str, "expire_after": int, "force_update": bool, "off_delay": int}),
    "sensor": ({"state_topic"}, {
        "state_topic": str, "device_class": str, "state_class": str, "value_template": str,
        "unit_of_measurement": str, "expire_after": int, "force_update": bool,
        "suggested_display_precision": int}),
    "button": ({"command_topic"}, {
        "command_topic": str, "command_template": str, "payload_press": str, "retain": bool,
        "device_class": str}),
    "siren": ({"command_topic"}, {
        "command_topic": str, "state_topic": str, "payload_on": str, "payload_off": str,
        "state_on": str, "state_off": str, "optimistic": bool, "support_duration": bool,
        "support_volume_set": bool, "available_tones": list, "state_value_template": str,
        "command_template": str, "command_off_template": str, "retain": bool}),
}
DEVICE_CLASSES = {
    "binary_sensor": {"problem", "connectivity", "running", "safety", "power"},
    "sensor": {None},
}
STATE_CLASSES = {"measurement", "total", "total_increasing"}


def check_discovery(topic: str, payload: dict[str, Any], node: str, base: str) -> str:
    """Assert one discovery config is valid for Home Assistant; return its platform."""
    prefix, platform, node_id, object_id, last = topic.split("/")
    assert prefix == "homeassistant" and last == "config" and node_id == node
    assert platform in PLATFORMS, topic
    for part in (node_id, object_id):
        assert part and all(c.isalnum() or c in "_-" for c in part), topic
    required, own = PLATFORMS[platform]
    allowed = {**COMMON, **own}
    assert required <= payload.keys(), f"{topic}: missing {required - payload.keys()}"
    for key, value in payload.items():
        assert key in allowed, f"{topic}: Home Assistant does not know {key!r}"
        assert isinstance(value, allowed[key]), f"{topic}: {key} must be {allowed[key]}"
    assert payload["unique_id"].startswith(f"pingr_{node}_")
    assert payload["availability_topic"] == f"{base}/status"
    assert (payload["payload_available"], payload["payload_not_available"]) == ("online",
                                                                                  "offline")
    device = payload["device"]
    assert device["identifiers"] == [f"pingr_{node}"]
    assert device["model"] and device["manufacturer"] == "pingr" and device["name"]
    assert device["sw_version"] == __version__
    url = urlsplit(device["configuration_url"])
    assert url.scheme in ("http", "https") and url.hostname and url.port, device
    assert payload["origin"]["name"] == "pingr"
    if "device_class" in payload:
        assert payload["device_class"] in DEVICE_CLASSES[platform]
    if "state_class" in payload:
        assert payload["state_class"] in STATE_CLASSES
    for key in ("state_topic", "command_topic", "json_attributes_topic"):
        if key in payload:
            assert payload[key].startswith(base + "/"), f"{topic}: {key} outside {base}"
            assert not set(payload[key]) & set("+#")
    return platform


def render(template: str, value_json: Any) -> str:
    """Render a value_template the way Home Assistant does (Jinja2 with value_json)."""
    import jinja2

    return jinja2.Environment().from_string(template).render(value_json=value_json).strip()


def ha_siren_command(config: dict[str, Any], which: str) -> str:
    """What Home Assistant's MQTT siren publishes on turn_on / turn_off for a discovered
    config (homeassistant/components/mqtt/siren.py, MqttSiren._async_publish): with a
    command_template its rendering; without one, json_dumps({"state": payload_on|off,
    **turn_on parameters}), where json_dumps is orjson (compact: no spaces), and the turn_on
    parameters (tone, duration, volume_level) are dropped unless the entity supports them
    (siren/__init__.py, process_turn_on_params)."""
    assert "command_template" not in config and "command_off_template" not in config
    variables = {"state": config.get(which, "ON" if which == "payload_on" else "OFF")}
    # duration / volume_level / tone would be added here if supported; ours supports none.
    assert config["support_duration"] is False and config["support_volume_set"] is False
    assert "available_tones" not in config
    return json.dumps(variables, separators=(",", ":"))


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path).start()
    yield b
    b.stop()


@pytest.fixture
def recorder(broker):
    r = Recorder(broker.port)
    yield r
    r.close()


def mqtt_config(broker: Broker, node: str = "testpi", **extra: Any) -> dict[str, Any]:
    return {"enabled": True, "host": "127.0.0.1", "port": broker.port, "node_id": node,
            "reconnect_min": "1s", "reconnect_max": "2s", **extra}


def discovery(recorder: Recorder, node: str) -> dict[str, dict[str, Any]]:
    """Latest non-empty discovery config per topic for `node`."""
    out = {}
    for topic in recorder.topics():
        parts = topic.split("/")
        if len(parts) == 5 and parts[0] == "homeassistant" and parts[2] == node:
            last = recorder.last(topic)
            if last:
                out[topic] = json.loads(last)
    return out


def state(recorder: Recorder, topic: str) -> dict[str, Any]:
    return json.loads(recorder.last(topic) or "null")


# ---------------------------------------------------------------- tests


async def test_discovery_state_on_change_and_acknowledge(tmp_path, broker, recorder,
                                                          target_server):
    base = "pingr/testpi"
    cfg = make_config(tmp_path, mqtt=mqtt_config(broker), targets=[
        {"name": "web", "type": "http", "url": target_server.url, "interval": "1s",
         "failure_threshold": 2},
    ])
    async with running_app(cfg) as run:
        assert await recorder.wait(f"{base}/status") == "online"
        web = run.app.monitor.target_named("web").id
        target_topic = f"{base}/target/{web}"
        await recorder.wait(target_topic, lambda p: json.loads(p)["state"] == "up")
        # Discovery includes the configuration URL once the API port is known.
        # One entity per monitored target (collectors' thresholds too) plus the fixed four.
        await run_wait_discovery(run, recorder, "testpi")
        await run.wait_for(lambda: all("configuration_url" in c["device"]
                                       for c in discovery(recorder, "testpi").values()))
        n = 4 + len(list(run.app.monitor.states()))
        configs = discovery(recorder, "testpi")
        platforms = [check_discovery(t, c, "testpi", base) for t, c in configs.items()]
        assert sorted(set(platforms)) == ["binary_sensor", "button", "sensor"]
        alert_cfg = configs["homeassistant/binary_sensor/testpi/alert/config"]
        assert alert_cfg["device_class"] == "problem" and alert_cfg["name"] == "Alert"
        web_cfg = configs[f"homeassistant/binary_sensor/testpi/target_{web}/config"]
        assert web_cfg["device_class"] == "connectivity" and web_cfg["name"] == "web"
        assert web_cfg["state_topic"] == target_topic
        ack_cfg = configs["homeassistant/button/testpi/acknowledge/config"]
        assert ack_cfg["name"] == "Acknowledge all"
        count_cfg = configs["homeassistant/sensor/testpi/failing_count/config"]
        # The appliance itself is an entity too: a problem while degraded, unhealthy or stale.
        appliance_cfg = configs["homeassistant/binary_sensor/testpi/appliance/config"]
        assert appliance_cfg["device_class"] == "problem"
        appliance = json.loads(await recorder.wait(f"{base}/appliance"))
        assert appliance == {"problem": False, "degraded": False, "problems": [],
                             "healthy": True, "stale": False}
        assert render(appliance_cfg["value_template"], appliance) == "OFF"
        assert render(appliance_cfg["value_template"], {**appliance, "problem": True}) == "ON"
        assert len({c["unique_id"] for c in configs.values()}) == n

        # Healthy probes keep coming; the retained state is not republished for each one.
        n_target = len(recorder.payloads(target_topic))  # pending, then up
        n_status = len(recorder.payloads(f"{base}/alert_status"))
        hits = len(target_server.behaviour.hits)
        await run.wait_for(lambda: len(target_server.behaviour.hits) >= hits + 3)
        await asyncio.sleep(0.2)
        assert len(recorder.payloads(target_topic)) == n_target
        assert len(recorder.payloads(f"{base}/alert_status")) == n_status
        up = state(recorder, target_topic)
        assert up["failures"] == 0 and up["threshold"] == 2 and up["latency_ms"] is not None
        status = state(recorder, f"{base}/alert_status")
        assert render(alert_cfg["value_template"], status) == "OFF"
        assert render(web_cfg["value_template"], up) == "ON"

        # Flip: 1 failure (visible), 2 failures (down, alert).
        target_server.behaviour.status = 500
        down = json.loads(await recorder.wait(
            target_topic, lambda p: json.loads(p)["state"] == "down"))
        assert down["failures"] == 2 and down["error"]
        assert render(web_cfg["value_template"], down) == "OFF"
        status = json.loads(await recorder.wait(f"{base}/alert_status",
                                                 lambda p: json.loads(p)["alert"]))
        assert status["failing_count"] == 1 and status["failing_targets"][0]["name"] == "web"
        assert render(alert_cfg["value_template"], status) == "ON"
        assert render(count_cfg["value_template"], status) == "1"
        # Messages are retained: a client that connects now gets the current state at once.
        late = Recorder(broker.port, (f"{base}/#",))
        try:
            assert json.loads(await late.wait(target_topic))["state"] == "down"
        finally:
            late.close()

        # Home Assistant's "Acknowledge all" button: same path as the API (acknowledged_by).
        recorder.publish(ack_cfg["command_topic"], ack_cfg["payload_press"])
        status = json.loads(await recorder.wait(
            f"{base}/alert_status", lambda p: json.loads(p).get("acknowledged") == ["web"]))
        assert status["alert"] is False
        alerts = (await run.client.get("/api/v1/alerts", params={"state": "open"})).json()
        items = alerts["alerts"] if isinstance(alerts, dict) else alerts
        assert [a["acknowledged_by"] for a in items] == ["mqtt"]
        assert state(recorder, target_topic)["acknowledged"] is True

        target_server.behaviour.status = 200
        await recorder.wait(target_topic, lambda p: json.loads(p)["state"] == "up")
        n = len(recorder.payloads(target_topic))
        hits = len(target_server.behaviour.hits)
        await run.wait_for(lambda: len(target_server.behaviour.hits) >= hits + 2)
        assert len(recorder.payloads(target_topic)) == n

        # Home Assistant restarted: discovery is sent again.
        recorder.clear()
        recorder.publish("homeassistant/status", "online")
        await recorder.wait("homeassistant/binary_sensor/testpi/alert/config")

    # A clean stop says offline itself.
    assert recorder.last(f"{base}/status") == "offline"


async def test_unique_ids_stable_across_restarts_and_deleted_target_removed(
        tmp_path, broker, target_server):
    cfg = make_config(tmp_path, mqtt=mqtt_config(broker), targets=[
        {"name": "web", "type": "http", "url": target_server.url, "interval": "1s"},
        {"name": "port", "type": "tcp", "host": "127.0.0.1", "port": target_server.port,
         "interval": "1s"},
    ])
    seen = []
    for _ in range(2):
        rec = Recorder(broker.port)
        try:
            async with running_app(cfg) as run:
                await run_wait_discovery(run, rec, "testpi")
                seen.append({t: c["unique_id"] for t, c in discovery(rec, "testpi").items()})
        finally:
            rec.close()
    assert seen[0] == seen[1]

    rec = Recorder(broker.port)
    try:
        async with running_app(cfg) as run:
            await run_wait_discovery(run, rec, "testpi")
            resp = await run.client.post("/api/v1/targets", json={
                "name": "added", "type": "tcp", "host": "127.0.0.1",
                "port": target_server.port, "interval": "1s"})
            assert resp.status_code == 201, resp.text
            added = resp.json()["id"]
            config_topic = f"homeassistant/binary_sensor/testpi/target_{added}/config"
            assert json.loads(await rec.wait(config_topic))["name"] == "added"
            await rec.wait(f"pingr/testpi/target/{added}")
            assert (await run.client.delete(f"/api/v1/targets/{added}")).status_code == 204
            # Empty retained payloads: Home Assistant removes the entity, the broker the state.
            await rec.wait(config_topic, lambda p: p == "")
            await rec.wait(f"pingr/testpi/target/{added}", lambda p: p == "")
    finally:
        rec.close()
    # The broker keeps no retained config for the deleted target.
    fresh = Recorder(broker.port, ("homeassistant/#",))
    try:
        await asyncio.sleep(0.3)
        assert not any(added in t for t in fresh.topics())
        assert len(discovery(fresh, "testpi")) == len(seen[0])
    finally:
        fresh.close()


async def test_node_ids_never_collide(tmp_path, broker, recorder, target_server):
    def cfg(node: str, status_url: str) -> Any:
        (tmp_path / node).mkdir()
        return make_config(tmp_path / node, mqtt=mqtt_config(broker, node), targets=[
            {"name": "web", "type": "http", "url": status_url, "interval": "1s",
             "failure_threshold": 1}])

    async with running_app(cfg("pi-a", target_server.url)) as a, \
            running_app(cfg("pi-b", target_server.url + "missing")) as b:
        target_server.behaviour.status = 500
        for node in ("pi-a", "pi-b"):
            await recorder.wait(f"pingr/{node}/alert_status", lambda p: json.loads(p)["alert"])
        await run_wait_discovery(a, recorder, "pi-a")
        await run_wait_discovery(b, recorder, "pi-b")
        ids_a = {c["unique_id"] for c in discovery(recorder, "pi-a").values()}
        ids_b = {c["unique_id"] for c in discovery(recorder, "pi-b").values()}
        assert ids_a and ids_b and not ids_a & ids_b
        recorder.publish("pingr/pi-a/cmd/ack", "PRESS")
        await recorder.wait("pingr/pi-a/alert_status", lambda p: not json.loads(p)["alert"])
        await asyncio.sleep(0.5)
        assert json.loads(recorder.last("pingr/pi-b/alert_status"))["alert"] is True
        assert b.app.monitor.snapshot().alert and not a.app.monitor.snapshot().alert


async def run_wait_discovery(run: Any, recorder: Recorder, node: str) -> None:
    """Until every entity of `node` is discovered: the fixed four and one per target."""
    await run.wait_for(
        lambda: len(discovery(recorder, node)) == 4 + len(list(run.app.monitor.states())))


async def test_broker_restart_and_outage_never_delay_the_api(tmp_path, broker, target_server):
    base = "pingr/testpi"
    cfg = make_config(tmp_path, mqtt=mqtt_config(broker), targets=[
        {"name": "web", "type": "http", "url": target_server.url, "interval": "1s",
         "failure_threshold": 1}])
    async with running_app(cfg) as run:
        mqtt = run.app.mqtt
        await run.wait_for(lambda: mqtt.connected)
        broker.stop()
        await run.wait_for(lambda: not mqtt.connected)
        # While the broker is gone: probes go on, state changes, the API answers at once.
        target_server.behaviour.status = 500
        await run.wait_for(lambda: run.app.monitor.snapshot().alert)
        for _ in range(5):
            t0 = time.perf_counter()
            assert (await run.client.get("/api/v1/alert-status")).status_code == 200
            assert time.perf_counter() - t0 < 0.5
        broker.start()  # same port, and it forgot everything (no persistence)
        rec = Recorder(broker.port)
        try:
            # Reconnected: online again and the latest state republished.
            await rec.wait(f"{base}/status", lambda p: p == "online", timeout=20)
            status = json.loads(await rec.wait(f"{base}/alert_status"))
            assert status["alert"] is True
            await rec.wait("homeassistant/binary_sensor/testpi/alert/config")
            assert mqtt.link.connects >= 2
        finally:
            rec.close()


async def test_broker_down_at_start(tmp_path, target_server):
    broker = Broker(tmp_path)  # not started: nothing listens on its port yet
    cfg = make_config(tmp_path, mqtt=mqtt_config(broker), targets=[
        {"name": "web", "type": "http", "url": target_server.url, "interval": "1s"}])
    async with running_app(cfg) as run:
        web = run.app.monitor.target_named("web")
        await run.wait_for(lambda: run.app.monitor.state_of(web.id).last)
        assert (await run.client.get("/api/v1/alert-status")).status_code == 200
        broker.start()
        try:
            rec = Recorder(broker.port)
            try:
                await rec.wait("pingr/testpi/status", lambda p: p == "online", timeout=20)
            finally:
                rec.close()
        finally:
            broker.stop()


def test_config_validation():
    from pingr.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as err:
        parse_config("mqtt: {enabled: true, node_id: 'my pi'}\n")
    assert "node_id" in err.value.errors[0] and "letters, digits" in err.value.errors[0]
    with pytest.raises(ConfigError) as err:
        parse_config("mqtt: {base_topic: 'pingr/#'}\n")
    assert "invalid topic" in err.value.errors[0]
    with pytest.raises(ConfigError) as err:
        parse_config("mqtt: {tls: {enabled: true, cert_file: /x.pem}}\n")
    assert "cert_file and key_file together" in err.value.errors[0]
    cfg = parse_config("mqtt: {node_id: garage}\n")
    assert cfg.mqtt.enabled is False and cfg.mqtt.base == "pingr/garage"


async def test_last_will_on_sigkill(tmp_path, broker, recorder):
    """`pingr run` killed with SIGKILL: the broker publishes our last will, `offline`."""
    config = tmp_path / "pingr.yaml"
    config.write_text(yaml.safe_dump({
        "host": "127.0.0.1", "port": 0, "auth": {"api_key": ADMIN_KEY},
        "storage": {"path": str(tmp_path / "pingr.db")},
        "mqtt": mqtt_config(broker, "killme"),
        "targets": [{"name": "lo", "type": "tcp", "host": "127.0.0.1", "port": broker.port,
                     "interval": "1s"}],
    }))
    pingr = Path(sys.executable).with_name("pingr")
    proc = subprocess.Popen([str(pingr), "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PINGR_CONFIG": ""})
    try:
        await recorder.wait("pingr/killme/status", lambda p: p == "online", timeout=30)
        await recorder.wait("pingr/killme/alert_status")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        await recorder.wait("pingr/killme/status", lambda p: p == "offline", timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == -signal.SIGKILL



async def test_siren_and_lamp_test_through_the_outputs(tmp_path, broker, recorder,
                                                       target_server):
    """Home Assistant's siren and Lamp test entities drive the real outputs component
    (gpiozero MockFactory pins) through the same calls as the button and the API."""
    siren_pin, beacon_pin = 5, 26
    cfg = make_config(tmp_path, mqtt=mqtt_config(broker), targets=[
        {"name": "web", "type": "http", "url": target_server.url, "interval": "1s",
         "failure_threshold": 1}], hardware={
        "backend": "mock",
        "lamp_test": {"at_start": False, "duration": "400ms", "chirp": "100ms"},
        "outputs": [{"name": "siren", "type": "buzzer", "pin": siren_pin},
                    {"name": "beacon", "type": "relay", "pin": beacon_pin}],
    })
    base = "pingr/testpi"
    async with running_app(cfg) as run:
        mgr = run.app.outputs
        pin = mgr.backend.factory.pin
        await run.wait_for(lambda: len(discovery(recorder, "testpi")) ==
                           6 + len(list(run.app.monitor.states())))
        await run.wait_for(lambda: all("configuration_url" in c["device"]
                                       for c in discovery(recorder, "testpi").values()))
        configs = discovery(recorder, "testpi")
        for topic, config in configs.items():
            check_discovery(topic, config, "testpi", base)
        siren = configs["homeassistant/siren/testpi/siren_siren/config"]
        lamp = configs["homeassistant/button/testpi/lamp_test/config"]
        assert siren["name"] == "siren" and lamp["name"] == "Lamp test"
        assert not any("beacon" in t for t in configs)  # a relay is not a siren
        out_topic = f"{base}/output/siren"
        assert siren["state_topic"] == out_topic
        off = json.loads(await recorder.wait(out_topic))
        assert render(siren["state_value_template"], off) == "OFF"

        target_server.behaviour.status = 500
        on = json.loads(await recorder.wait(out_topic, lambda p: json.loads(p)["on"]))
        assert render(siren["state_value_template"], on) == "ON"
        await run.wait_for(lambda: pin(siren_pin).state == 1)
        # The latest message, once the new one arrived (the pin changes first, its message
        # crosses paho's thread and the broker after).
        assert json.loads(await recorder.wait(f"{base}/output/beacon",
                                              lambda p: json.loads(p)["active"]))["on"] is True

        # Home Assistant: siren.turn_off = silence, i.e. acknowledge (the button's path).
        # HA publishes exactly what ha_siren_command builds from the discovery config.
        recorder.publish(siren["command_topic"], ha_siren_command(siren, "payload_off"))
        silenced = json.loads(await recorder.wait(
            out_topic, lambda p: json.loads(p)["silenced_by"] == "acknowledged"))
        assert silenced["on"] is False and silenced["active"] is True
        await run.wait_for(lambda: pin(siren_pin).state == 0)
        assert pin(beacon_pin).state == 1  # visual outputs stay on after an acknowledge
        alerts = (await run.client.get("/api/v1/alerts", params={"state": "open"})).json()
        assert [a["acknowledged_by"] for a in alerts] == ["mqtt"]

        # siren.turn_on = its test chirp; the Lamp test button tests every output.
        assert ha_siren_command(siren, "payload_on") == '{"state":"ON"}'
        recorder.publish(siren["command_topic"], ha_siren_command(siren, "payload_on"))
        await recorder.wait(out_topic, lambda p: json.loads(p)["testing"])
        await run.wait_for(lambda: not mgr.testing("siren"))
        recorder.publish(lamp["command_topic"], lamp["payload_press"])
        await run.wait_for(lambda: mgr.testing("beacon") and mgr.testing("siren"), timeout=5)
        await run.wait_for(lambda: not mgr.testing("beacon"))
        await recorder.wait(out_topic, lambda p: not json.loads(p)["testing"])


def test_siren_command_payloads():
    """What Home Assistant has published over the years, and what people type by hand."""
    from pingr.mqtt.publisher import siren_command

    assert siren_command('{"state":"ON"}') == "ON"  # HA today (orjson)
    assert siren_command('{"state": "OFF"}') == "OFF"  # HA before orjson (json.dumps)
    assert siren_command('{"state":"ON","duration":5}') == "ON"  # turn_on parameters
    assert siren_command("OFF") == "OFF" and siren_command(" on ") == "ON"  # mosquitto_pub
    for junk in ('{"state":"maybe"}', "{", "[1]", '{"State":"ON"}', "", "PRESS"):
        assert siren_command(junk) is None, junk


async def test_state_topics_follow_the_situation_and_counters_wait(tmp_path, broker, recorder,
                                                                   target_server):
    """A down target is probed every second: its state and the alert-status mirror are not
    republished for each probe; the failure counts go out at most every counter_interval
    (2 s here, 30 s by default), and a change of situation (an acknowledgement) at once."""
    base = "pingr/testpi"
    cfg = make_config(tmp_path, mqtt=mqtt_config(broker, counter_interval="2s"), targets=[
        {"name": "web", "type": "http", "url": target_server.url, "interval": "1s",
         "failure_threshold": 2}])
    async with running_app(cfg) as run:
        web = run.app.monitor.target_named("web").id
        target_topic, status_topic = f"{base}/target/{web}", f"{base}/alert_status"
        await recorder.wait(target_topic, lambda p: json.loads(p)["state"] == "up")
        target_server.behaviour.status = 500
        await recorder.wait(target_topic, lambda p: json.loads(p)["state"] == "down")
        await recorder.wait(status_topic, lambda p: json.loads(p)["alert"])
        await asyncio.sleep(7.5)  # seven more failed probes
        assert run.app.monitor.state_of(web).failures >= 8
        for topic in (target_topic, status_topic):
            timed = recorder.timed(topic)
            first_down = next(i for i, (_, p) in enumerate(timed)
                              if json.loads(p).get("state") == "down" or json.loads(p).get("alert"))
            after = timed[first_down:]
            gaps = [b[0] - a[0] for a, b in zip(after, after[1:], strict=False)]
            assert 2 <= len(after) <= 5, (topic, [p for _, p in after])  # not 8
            assert all(g >= 1.8 for g in gaps), (topic, gaps)
        counts = [json.loads(p)["failures"] for _, p in recorder.timed(target_topic)
                  if json.loads(p)["state"] == "down"]
        assert counts == sorted(counts) and counts[0] == 2 and counts[-1] >= 5
        mirrored = json.loads(recorder.last(status_topic))
        assert mirrored["failing_targets"][0]["failures"] >= 5
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$", mirrored["timestamp"])

        # An acknowledgement changes the situation: out at once, not after the interval.
        t0 = time.monotonic()
        assert (await run.client.post("/api/v1/alerts/ack")).status_code == 200
        await recorder.wait(status_topic, lambda p: json.loads(p)["alert"] is False, timeout=5)
        await recorder.wait(target_topic, lambda p: json.loads(p)["acknowledged"], timeout=5)
        assert time.monotonic() - t0 < 1.5


async def test_counters_wait_thirty_seconds_by_default(tmp_path, broker, recorder,
                                                       target_server):
    base = "pingr/testpi"
    cfg = make_config(tmp_path, mqtt=mqtt_config(broker), targets=[
        {"name": "web", "type": "http", "url": target_server.url, "interval": "1s",
         "failure_threshold": 1}])
    assert cfg.mqtt.counter_interval == 30
    async with running_app(cfg) as run:
        web = run.app.monitor.target_named("web").id
        target_server.behaviour.status = 500
        await recorder.wait(f"{base}/target/{web}", lambda p: json.loads(p)["state"] == "down")
        await asyncio.sleep(5)
        assert run.app.monitor.state_of(web).failures >= 5
        downs = [p for p in recorder.payloads(f"{base}/target/{web}")
                 if json.loads(p)["state"] == "down"]
        alerts = [p for p in recorder.payloads(f"{base}/alert_status") if json.loads(p)["alert"]]
        assert len(downs) == 1 and len(alerts) == 1
        assert json.loads(downs[0])["failures"] == 1
