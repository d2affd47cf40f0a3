"""Home Assistant MQTT discovery: the device, its entities and their config topics (pure)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pingr import __version__
from pingr.models import Target
from pingr.mqtt.link import OFFLINE, ONLINE
from pingr.outputs.manager import OutputState


def safe(value: str) -> str:
    """A topic level / object id Home Assistant accepts ([A-Za-z0-9_-])."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", value)


@dataclass(frozen=True)
class Device:
    """Where this appliance's topics live and how Home Assistant names it."""

    node: str
    base: str
    prefix: str
    configuration_url: str | None

    def topic(self, *parts: str) -> str:
        return "/".join((self.base, *parts))

    def config_topic(self, component: str, object_id: str) -> str:
        return f"{self.prefix}/{component}/{self.node}/{object_id}/config"

    def info(self) -> dict[str, Any]:
        """The one Home Assistant device every entity of this appliance belongs to."""
        device: dict[str, Any] = {
            "identifiers": [f"pingr_{self.node}"],
            "name": f"pingr {self.node}",
            "manufacturer": "pingr",
            "model": "pingr network monitor",
            "sw_version": __version__,
        }
        if self.configuration_url:
            device["configuration_url"] = self.configuration_url
        return device

    def entity(self, object_id: str, name: str, **fields: Any) -> dict[str, Any]:
        return {
            "name": name,
            "unique_id": f"pingr_{self.node}_{object_id}",
            "availability_topic": self.topic("status"),
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
            "device": self.info(),
            "origin": {"name": "pingr", "sw_version": __version__},
            **fields,
        }


#: payload_on / payload_off of a siren. Home Assistant's MQTT siren, with no
#: command_template (none is set here), publishes them as JSON under "state":
#: `{"state": "ON"}` / `{"state": "OFF"}` (homeassistant/components/mqtt/siren.py,
#: `_async_publish`: json_dumps of {"state": value, **turn-on parameters}).
SIREN_ON, SIREN_OFF = "ON", "OFF"


def messages(device: Device, targets: Iterable[Target],
             outputs: list[OutputState] | None) -> dict[str, dict[str, Any]]:
    """Every discovery config we want retained, by topic (`outputs` None: no GPIO outputs)."""
    alert_topic = device.topic("alert_status")
    out = {
        device.config_topic("binary_sensor", "alert"): device.entity(
            "alert", "Alert", device_class="problem", state_topic=alert_topic,
            value_template="{{ 'ON' if value_json.alert else 'OFF' }}",
            payload_on="ON", payload_off="OFF", json_attributes_topic=alert_topic),
        device.config_topic("sensor", "failing_count"): device.entity(
            "failing_count", "Failing targets", state_topic=alert_topic,
            value_template="{{ value_json.failing_count }}", state_class="measurement",
            icon="mdi:alert-circle"),
        device.config_topic("button", "acknowledge"): device.entity(
            "acknowledge", "Acknowledge all", command_topic=device.topic("cmd", "ack"),
            payload_press="PRESS", icon="mdi:check-all"),
        # The appliance itself: degraded (relays that cannot switch, storage that cannot be
        # written), unhealthy or stale. A problem entity, so it shows in HA's repairs views.
        device.config_topic("binary_sensor", "appliance"): device.entity(
            "appliance", "Appliance problem", device_class="problem",
            state_topic=device.topic("appliance"),
            value_template="{{ 'ON' if value_json.problem else 'OFF' }}",
            payload_on="ON", payload_off="OFF", json_attributes_topic=device.topic("appliance"),
            entity_category="diagnostic"),
    }
    for target in targets:
        oid = f"target_{safe(target.id)}"
        topic = device.topic("target", safe(target.id))
        # pending/paused are neither: "None" makes the entity's state unknown.
        if target.probed:  # is it reachable?
            kind, template = "connectivity", (
                "{{ 'ON' if value_json.state == 'up' else ('OFF' if "
                "value_json.state in ['down', 'unreachable'] else 'None') }}")
        else:  # a collector's finding (CPU, disk, a container): is there a problem?
            kind, template = "problem", (
                "{{ 'ON' if value_json.state in ['down', 'unreachable'] else ('OFF' if "
                "value_json.state == 'up' else 'None') }}")
        out[device.config_topic("binary_sensor", oid)] = device.entity(
            oid, target.name, device_class=kind, state_topic=topic,
            value_template=template, payload_on="ON", payload_off="OFF",
            json_attributes_topic=topic)
    if outputs is not None:
        out[device.config_topic("button", "lamp_test")] = device.entity(
            "lamp_test", "Lamp test", command_topic=device.topic("cmd", "lamp_test"),
            payload_press="PRESS", icon="mdi:lightbulb-on")
        for output in outputs:
            if not output.audible or output.shows_states:
                continue
            oid = f"siren_{safe(output.name)}"
            state_topic = device.topic("output", safe(output.name))
            out[device.config_topic("siren", oid)] = device.entity(
                oid, output.name, command_topic=device.topic("cmd", "siren", safe(output.name)),
                state_topic=state_topic,
                state_value_template="{{ 'ON' if value_json.on else 'OFF' }}",
                payload_on=SIREN_ON, payload_off=SIREN_OFF, state_on="ON", state_off="OFF",
                optimistic=False, support_duration=False, support_volume_set=False,
                json_attributes_topic=state_topic)
    return out
