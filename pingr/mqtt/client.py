"""MQTT: availability, retained state on change, Home Assistant discovery, and commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pingr import __version__
from pingr.mqtt.config import MqttConfig

if TYPE_CHECKING:
    from pingr.app import App
    from pingr.models import Result, Target
    from pingr.monitor import Event

log = logging.getLogger(__name__)

ONLINE, OFFLINE = "online", "offline"


def _safe(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", value)


class Mqtt:
    """Publishes pingr's state to an MQTT broker and takes commands from it.

    paho-mqtt runs the socket in its own thread, connects and reconnects with back-off there,
    and queues our publishes in memory, so a broker that is down, slow or refusing never holds
    up the event loop (probes, outputs, API). Its callbacks hop onto the event loop with
    call_soon_threadsafe, the same way the GPIO button does. Every retained message we want on
    the broker is kept in `self.retained`; a (re)connect publishes all of it, so the broker
    always catches up with the latest state.
    """

    name = "mqtt"

    def __init__(self, app: App, config: MqttConfig) -> None:
        self.app = app
        self.config = config
        self.base = config.base
        self.node = config.node_id
        self.routers: list[Any] = []
        #: topic -> payload of every retained message we want on the broker ("" deletes).
        self.retained: dict[str, str] = {}
        self.connected = False
        self.connects = 0
        self._closing = False
        self._outputs_pending = False
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._alert_key: Any = None
        self._alert_version = -1
        self._targets: dict[str, tuple[Any, ...]] = {}
        self._target_pub_ms: dict[str, int] = {}
        self._sync_task: asyncio.Task[None] | None = None
        self._commands: dict[str, Callable[[str, str], None]] = {
            "ack": self._cmd_ack,
            "lamp_test": self._cmd_lamp_test,
            "siren": self._cmd_siren,
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect in the background (never waits for the broker) and start listening."""
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        cfg = self.config
        self._loop = asyncio.get_running_loop()
        client = paho.Client(CallbackAPIVersion.VERSION2,
                             client_id=cfg.client_id or f"pingr-{self.node}",
                             clean_session=True)
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls.enabled:
            client.tls_set(ca_certs=cfg.tls.ca_file, certfile=cfg.tls.cert_file,
                           keyfile=cfg.tls.key_file)
            client.tls_insecure_set(cfg.tls.insecure)
        # The broker announces our death for us: crash, power loss or a cut cable.
        client.will_set(self.topic("status"), OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=max(1, round(cfg.reconnect_min)),
                                   max_delay=max(1, round(cfg.reconnect_max)))
        # Bounded: while the link is down nothing piles up beyond this (we republish anyway).
        client.max_queued_messages_set(10_000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        self.app.monitor.listeners.append(self._on_event)
        self.app.monitor.result_listeners.append(self._on_result)
        self.sync()
        # connect_async resolves and connects in paho's thread; loop_start retries forever.
        client.connect_async(cfg.host, cfg.port, keepalive=round(cfg.keepalive))
        client.loop_start()
        self._sync_task = self._loop.create_task(self._resync(), name="mqtt-sync")
        log.info("MQTT: connecting to %s:%d as node %r (topics under %s/)", cfg.host, cfg.port,
                 self.node, self.base)

    async def stop(self) -> None:
        """Say `offline` ourselves (a clean stop is not a crash) and disconnect."""
        monitor = self.app.monitor
        with contextlib.suppress(ValueError):
            monitor.listeners.remove(self._on_event)
        with contextlib.suppress(ValueError):
            monitor.result_listeners.remove(self._on_result)
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        client = self._client
        if client is None:
            return

        self._closing = True

        def close() -> None:
            if client.is_connected():
                info = client.publish(self.topic("status"), OFFLINE, qos=1, retain=True)
                with contextlib.suppress(Exception):
                    info.wait_for_publish(timeout=2)
            client.disconnect()
            client.loop_stop()

        # loop_stop joins paho's thread; never block the event loop on it.
        await asyncio.get_running_loop().run_in_executor(None, close)
        self.connected = False

    def topic(self, *parts: str) -> str:
        """A topic under this appliance's base topic."""
        return "/".join((self.base, *parts))

    # ------------------------------------------------------------------ paho thread

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any,
                    _props: Any = None) -> None:
        if reason.is_failure:
            self._hop(self._refused, str(reason))
            return
        client.subscribe([(self.topic("cmd", "#"), 1),
                          (f"{self.config.discovery_prefix}/status", 1)])
        self._hop(self._connected)

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any,
                       _props: Any = None) -> None:
        self._hop(self._disconnected, str(reason))

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        payload = message.payload.decode("utf-8", "replace").strip()
        self._hop(self._message, message.topic, payload)

    def _hop(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed between the check and now
            loop.call_soon_threadsafe(fn, *args)

    # ------------------------------------------------------------------ event loop

    def _connected(self) -> None:
        if self._client is None or not self._client.is_connected():
            return
        self.connected = True
        self.connects += 1
        log.info("MQTT: connected to %s:%d", self.config.host, self.config.port)
        self._send(self.topic("status"), ONLINE)
        self.sync()
        for topic, payload in list(self.retained.items()):
            self._send(topic, payload)

    def _refused(self, reason: str) -> None:
        log.error("MQTT: the broker at %s:%d refused the connection: %s",
                  self.config.host, self.config.port, reason)

    def _disconnected(self, reason: str) -> None:
        if self.connected and not self._closing:
            log.warning("MQTT: lost the broker (%s); reconnecting with back-off", reason)
        self.connected = False

    def _message(self, topic: str, payload: str) -> None:
        if topic == f"{self.config.discovery_prefix}/status":
            if payload == ONLINE and self.connected:
                # Home Assistant restarted: it lost non-retained state, so send everything.
                for t, p in list(self.retained.items()):
                    self._send(t, p)
            return
        prefix = self.topic("cmd") + "/"
        if not topic.startswith(prefix):
            return
        parts = topic[len(prefix):].split("/", 1)
        handler = self._commands.get(parts[0])
        if handler is None:
            log.warning("MQTT: unknown command topic %s", topic)
            return
        try:
            handler(parts[1] if len(parts) > 1 else "", payload)
        except Exception:
            log.exception("MQTT: command %s failed", topic)

    def _send(self, topic: str, payload: str) -> None:
        client = self._client
        if client is None or not client.is_connected():
            return  # the reconnect republishes self.retained
        client.publish(topic, payload, qos=1, retain=True)

    def _put(self, topic: str, payload: str) -> None:
        """Want `payload` retained on `topic`; publish only when it differs from before."""
        if self.retained.get(topic) == payload:
            return
        self.retained[topic] = payload
        self._send(topic, payload)

    # ------------------------------------------------------------------ state

    def _on_result(self, target: Target, result: Result) -> None:
        new = target.id not in self._targets
        self._outputs_soon()
        self._target_state(target.id)
        self._alert_state()
        if new:
            self._discover_target(target.id)

    def _on_event(self, event: Event) -> None:
        self._outputs_soon()
        if event.type == "target.deleted" and event.target is not None:
            self._forget(event.target.id)
        elif event.target is not None:
            self._target_state(event.target.id)
            self._discover_target(event.target.id)
        self._alert_state()

    async def _resync(self) -> None:
        """Catch what no event announces: targets added or renamed, output changes, the URL."""
        while True:
            await asyncio.sleep(2.0)
            try:
                self.sync()
            except Exception:
                log.exception("MQTT: state sync failed")

    def sync(self) -> None:
        """Bring every wanted retained message up to date (publishes only differences)."""
        self._alert_state()
        monitor = self.app.monitor
        for tid in list(monitor.states):
            self._target_state(tid)
        for tid in [t for t in self._targets if t not in monitor.states]:
            self._forget(tid)
        self._outputs_state()
        if self.config.discovery:
            self._discovery()

    def _alert_state(self) -> None:
        monitor = self.app.monitor
        if monitor.snapshot().version == self._alert_version:
            return
        self._alert_version = monitor.snapshot().version
        raw, _ = monitor.alert_status()
        body = json.loads(raw)
        # The timestamp moves with every snapshot; only a change of content is news.
        key = {k: v for k, v in body.items() if k != "timestamp"}
        if key != self._alert_key:
            self._alert_key = key
            self._put(self.topic("alert_status"), raw.decode())

    def _target_state(self, target_id: str) -> None:
        state = self.app.monitor.states.get(target_id)
        if state is None:
            return
        target = state.target
        key = (target.name, state.status, state.failures, target.spec.failure_threshold,
               state.acknowledged)
        now = self.app.clock_ms()
        refresh = self.config.latency_refresh * 1000
        stale_latency = bool(refresh) and now - self._target_pub_ms.get(target_id, now) >= refresh
        if self._targets.get(target_id) == key and not stale_latency:
            return
        self._targets[target_id] = key
        self._target_pub_ms[target_id] = now
        last = state.last
        payload = {
            "name": target.name,
            "state": state.status,
            "failures": state.failures,
            "threshold": target.spec.failure_threshold,
            "latency_ms": last.latency_ms if last is not None and last.success else None,
            "error": last.error if last is not None and not last.success else None,
            "acknowledged": state.acknowledged,
            "type": target.spec.type,
        }
        self._put(self.topic("target", _safe(target_id)), json.dumps(payload))

    def _forget(self, target_id: str) -> None:
        """A deleted target: clear its state and remove its Home Assistant entity."""
        self._targets.pop(target_id, None)
        self._target_pub_ms.pop(target_id, None)
        self._put(self.topic("target", _safe(target_id)), "")
        self._put(self._config_topic("binary_sensor", f"target_{_safe(target_id)}"), "")

    # ------------------------------------------------------------------ outputs

    def _outputs(self) -> Any:
        """The GPIO outputs component when it drives at least one output, else None."""
        mgr = next((c for c in self.app.components if getattr(c, "name", "") == "outputs"), None)
        return mgr if mgr is not None and getattr(mgr, "outputs", None) else None

    def _outputs_soon(self) -> None:
        # The outputs component reconciles on the same events after us: read it afterwards.
        if self._loop is not None and not self._outputs_pending:
            self._outputs_pending = True
            self._loop.call_soon(self._outputs_state)

    def _outputs_state(self) -> None:
        self._outputs_pending = False
        mgr = self._outputs()
        if mgr is None:
            return
        for name, out in mgr.outputs.items():
            muted = mgr.silenced.get(name)
            active = bool(mgr.active.get(name, False))
            payload = {
                "on": (active and muted is None) or mgr.testing(name),
                "active": active,
                "silenced_by": muted,
                "testing": mgr.testing(name),
                "audible": bool(out.config.is_audible),
                "type": out.config.type,
            }
            self._put(self.topic("output", _safe(name)), json.dumps(payload))

    def _cmd_ack(self, rest: str, payload: str) -> None:
        """Acknowledge all open alerts (HA's button sends PRESS), or one by its id."""
        alert_id = int(payload) if payload.isdigit() else None
        try:
            done = self.app.acknowledge(alert_id, "mqtt")
        except (KeyError, ValueError) as exc:
            log.warning("MQTT: cannot acknowledge alert %s: %s", payload, exc)
            return
        log.info("MQTT: acknowledged %d alert(s)", len(done))

    def _cmd_lamp_test(self, rest: str, payload: str) -> None:
        """The lamp test of every output that takes part (as holding the button does)."""
        mgr = self._outputs()
        if mgr is None:
            log.warning("MQTT: lamp test requested but no outputs are configured")
            return
        mgr.lamp_test()
        self._outputs_state()

    def _cmd_siren(self, name: str, payload: str) -> None:
        """OFF silences (acknowledge all, as the button does); ON sounds its test chirp."""
        mgr = self._outputs()
        out = next((o for n, o in (mgr.outputs.items() if mgr else ())
                    if _safe(n) == name and o.config.is_audible), None)
        if mgr is None or out is None:
            log.warning("MQTT: no audible output %r", name)
            return
        command = payload.upper()
        if command == "OFF":
            self._cmd_ack("", "")
        elif command == "ON":
            mgr.lamp_test([out.name])
        else:
            log.warning("MQTT: siren %s: expected ON or OFF, got %r", name, payload[:40])
        self._outputs_state()

    # ------------------------------------------------------------------ discovery

    def _config_topic(self, component: str, object_id: str) -> str:
        return f"{self.config.discovery_prefix}/{component}/{self.node}/{object_id}/config"

    def configuration_url(self) -> str | None:
        """Where Home Assistant's device page links to (pingr's API docs)."""
        if self.config.configuration_url:
            return self.config.configuration_url
        port = self.app.port
        if not port:
            return None  # not listening yet (port 0 in tests): the next sync adds it
        host = self.app.config.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/docs"

    def device(self) -> dict[str, Any]:
        """The one Home Assistant device every entity of this appliance belongs to."""
        device: dict[str, Any] = {
            "identifiers": [f"pingr_{self.node}"],
            "name": f"pingr {self.node}",
            "manufacturer": "pingr",
            "model": "pingr network monitor",
            "sw_version": __version__,
        }
        url = self.configuration_url()
        if url:
            device["configuration_url"] = url
        return device

    def _entity(self, object_id: str, name: str, **fields: Any) -> dict[str, Any]:
        return {
            "name": name,
            "unique_id": f"pingr_{self.node}_{object_id}",
            "availability_topic": self.topic("status"),
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
            "device": self.device(),
            "origin": {"name": "pingr", "sw_version": __version__},
            **fields,
        }

    def discovery_messages(self) -> dict[str, dict[str, Any]]:
        """Every Home Assistant discovery config we want retained, by topic."""
        alert_topic = self.topic("alert_status")
        out = {
            self._config_topic("binary_sensor", "alert"): self._entity(
                "alert", "Alert", device_class="problem", state_topic=alert_topic,
                value_template="{{ 'ON' if value_json.alert else 'OFF' }}",
                payload_on="ON", payload_off="OFF", json_attributes_topic=alert_topic),
            self._config_topic("sensor", "failing_count"): self._entity(
                "failing_count", "Failing targets", state_topic=alert_topic,
                value_template="{{ value_json.failing_count }}", state_class="measurement",
                icon="mdi:alert-circle"),
            self._config_topic("button", "acknowledge"): self._entity(
                "acknowledge", "Acknowledge all", command_topic=self.topic("cmd", "ack"),
                payload_press="PRESS", icon="mdi:check-all"),
        }
        for tid, state in self.app.monitor.states.items():
            oid = f"target_{_safe(tid)}"
            topic = self.topic("target", _safe(tid))
            # pending/paused are neither: "None" makes the entity's state unknown.
            if state.target.pk > 0:  # a probed target: is it reachable?
                kind, template = "connectivity", (
                    "{{ 'ON' if value_json.state == 'up' else ('OFF' if "
                    "value_json.state in ['down', 'unreachable'] else 'None') }}")
            else:  # a collector's threshold (CPU, disk, a container): is there a problem?
                kind, template = "problem", (
                    "{{ 'ON' if value_json.state in ['down', 'unreachable'] else ('OFF' if "
                    "value_json.state == 'up' else 'None') }}")
            out[self._config_topic("binary_sensor", oid)] = self._entity(
                oid, state.target.name, device_class=kind, state_topic=topic,
                value_template=template, payload_on="ON", payload_off="OFF",
                json_attributes_topic=topic)
        outputs = self._outputs()
        if outputs is not None:
            out[self._config_topic("button", "lamp_test")] = self._entity(
                "lamp_test", "Lamp test", command_topic=self.topic("cmd", "lamp_test"),
                payload_press="PRESS", icon="mdi:lightbulb-on")
            for name, output in outputs.outputs.items():
                if not output.config.is_audible or output.config.type in ("tower", "rgb_led"):
                    continue
                oid = f"siren_{_safe(name)}"
                out[self._config_topic("siren", oid)] = self._entity(
                    oid, name, command_topic=self.topic("cmd", "siren", _safe(name)),
                    state_topic=self.topic("output", _safe(name)),
                    state_value_template="{{ 'ON' if value_json.on else 'OFF' }}",
                    payload_on="ON", payload_off="OFF", state_on="ON", state_off="OFF",
                    optimistic=False, support_duration=False, support_volume_set=False,
                    json_attributes_topic=self.topic("output", _safe(name)))
        return out

    def _discover_target(self, target_id: str) -> None:
        if self.config.discovery and target_id in self.app.monitor.states:
            self._discovery()

    def _discovery(self) -> None:
        for topic, payload in self.discovery_messages().items():
            self._put(topic, json.dumps(payload, sort_keys=True))



def mqtt_component(app: App) -> Mqtt | None:
    """Factory for pingr.components: only when `mqtt.enabled: true`."""
    config: MqttConfig | None = getattr(app.config, "mqtt", None)
    if config is None or not config.enabled:
        return None
    return Mqtt(app, config)
