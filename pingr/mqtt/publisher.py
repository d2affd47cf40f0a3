"""The MQTT part: alert-status and per-target state, outputs, discovery, and commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
from collections.abc import Callable
from typing import Any, Protocol

from pingr.alertstatus import body as alert_status_body
from pingr.alertstatus import situation
from pingr.models import Result, Target
from pingr.monitor import Change, Monitor
from pingr.mqtt import discovery
from pingr.mqtt.config import MqttConfig
from pingr.mqtt.discovery import SIREN_OFF, SIREN_ON, Device, safe
from pingr.mqtt.link import ONLINE, Link
from pingr.outputs.manager import Outputs

log = logging.getLogger(__name__)


def _days_left(result: Result | None) -> int | None:
    """Whole days until a certificate expires, from a TLS result (None for other kinds)."""
    metrics = result.metrics if result is not None else None
    days = metrics.get("days_left") if metrics else None
    return math.floor(days) if isinstance(days, int | float) else None


class Commands(Protocol):
    """What MQTT commands may do: the App's own methods, the same the API and buttons use."""

    def acknowledge(self, alert_id: int | None, by: str) -> list[Any]: ...

    def lamp_test(self, names: list[str] | None = None,
                  duration: float | None = None) -> list[str]: ...


class Mqtt:
    """Publishes pingr's state to an MQTT broker and takes commands from it.

    The App calls `update(change)` in its fan-out (after the outputs, whose new state it
    reads), `on_result` for every result (per-target counters), and `outputs_changed()` when
    an output changed outside the fan-out (a lamp test ended).
    """

    def __init__(self, config: MqttConfig, monitor: Monitor, outputs: Outputs,
                 commands: Commands, clock_ms: Callable[[], int]) -> None:
        self.config = config
        self.monitor = monitor
        self.outputs = outputs
        self.commands = commands
        self.clock_ms = clock_ms
        self.device = Device(config.node_id, config.base, config.discovery_prefix,
                             config.configuration_url)
        self.link = Link(config, subscriptions=[self.device.topic("cmd", "#"),
                                                f"{config.discovery_prefix}/status"],
                         on_message=self._message, on_connected=self.sync)
        #: What was last published: the situation, and the counters beside it.
        self._alert_key: Any = None
        self._alert_counters: Any = None
        self._alert_pub_ms = 0
        self._alert_version = -1
        self._targets: dict[str, tuple[Any, ...]] = {}
        self._target_counters: dict[str, tuple[Any, ...]] = {}
        self._target_pub_ms: dict[str, int] = {}
        #: A deferred counter update is sent by this timer when no later result sends it.
        self._flush: asyncio.TimerHandle | None = None
        self._handlers: dict[str, Callable[[str, str], None]] = {
            "ack": self._cmd_ack,
            "lamp_test": self._cmd_lamp_test,
            "siren": self._cmd_siren,
        }

    # ------------------------------------------------------------------ lifecycle

    def start(self, host: str, port: int) -> None:
        """Connect in the background; `host`/`port` make the device's configuration URL."""
        if self.config.configuration_url is None and port:
            if host in ("0.0.0.0", "::", ""):
                host = socket.gethostname()
            if ":" in host:
                host = f"[{host}]"
            self.device = Device(self.device.node, self.device.base, self.device.prefix,
                                 f"http://{host}:{port}/docs")
        self.sync()
        self.link.start()

    async def stop(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
        await self.link.stop()

    @property
    def connected(self) -> bool:
        return self.link.connected

    @property
    def retained(self) -> dict[str, str]:
        return self.link.retained

    def topic(self, *parts: str) -> str:
        return self.device.topic(*parts)

    # ------------------------------------------------------------------ state

    def update(self, change: Change) -> None:
        """Publish what a change made different."""
        for event in change.events:
            target = event.target
            if target is None:
                continue
            if event.type == "target.deleted":
                self._forget(target.id)
            else:
                self._target_state(target.id)
        if change.targets:
            for state in self.monitor.states():
                self._target_state(state.target.id)
            self._discovery()
        self._alert_state()
        self._appliance_state()
        self.outputs_changed()

    def _appliance_state(self) -> None:
        """Is the appliance itself in trouble? (degraded, unhealthy or stale)"""
        snap = self.monitor.snapshot()
        payload = {"problem": bool(snap.problems) or snap.stale or not snap.healthy,
                   "degraded": bool(snap.problems), "problems": list(snap.problems),
                   "healthy": snap.healthy, "stale": snap.stale}
        self.link.put(self.topic("appliance"), json.dumps(payload))

    def on_result(self, target: Target, result: Result) -> None:
        """A result: its target's counters (and, while a target is new, its entity)."""
        self._target_state(target.id)
        self._alert_state()

    def sync(self) -> None:
        """Bring every wanted retained message up to date (publishes only differences)."""
        self._alert_state()
        self._appliance_state()
        known = set()
        for state in self.monitor.states():
            known.add(state.target.id)
            self._target_state(state.target.id)
        for tid in [t for t in self._targets if t not in known]:
            self._forget(tid)
        self.outputs_changed()
        self._discovery()

    def _counters_due(self, last_ms: int, now: int) -> bool:
        """May counters go out now? If not, make sure they will when the interval is over."""
        wait = self.config.counter_interval * 1000 - (now - last_ms)
        if wait <= 0:
            return True
        if self._flush is None:
            with contextlib.suppress(RuntimeError):  # no loop: the next result sends them
                self._flush = asyncio.get_running_loop().call_later(wait / 1000, self._deferred)
        return False

    def _deferred(self) -> None:
        self._flush = None
        self._alert_state()
        for state in self.monitor.states():
            self._target_state(state.target.id)

    def _alert_state(self) -> None:
        """The alert-status mirror: at once when the situation changes (what a poller's ETag
        covers), the failure counters inside it at most every counter_interval."""
        snap = self.monitor.snapshot()
        if snap.version == self._alert_version:
            return
        now = self.clock_ms()
        key = situation(snap)
        counters = tuple(f.failures for f in snap.failing)
        if key == self._alert_key:
            if counters == self._alert_counters or not self._counters_due(self._alert_pub_ms,
                                                                           now):
                return
        self._alert_version = snap.version
        self._alert_key, self._alert_counters, self._alert_pub_ms = key, counters, now
        body = alert_status_body(snap, now / 1000)
        self.link.put(self.topic("alert_status"), json.dumps(body, separators=(",", ":")))

    def _target_state(self, target_id: str) -> None:
        """A target's state: at once when its situation changes (status, acknowledgement,
        name, threshold), its counters (failures, last error) at most every counter_interval,
        and its latency every latency_refresh."""
        state = self.monitor.state_of(target_id)
        if state is None:
            return
        target = state.target
        last = state.last
        days_left = _days_left(last)
        key = (target.name, state.status, target.spec.failure_threshold, state.acknowledged,
               target.spec.type, state.warning is not None, days_left)
        counters = (state.failures, last.error if last is not None and not last.success
                    else None)
        now = self.clock_ms()
        published = self._target_pub_ms.get(target_id, now)
        if self._targets.get(target_id) == key:
            refresh = self.config.latency_refresh * 1000
            stale_latency = bool(refresh) and now - published >= refresh
            if not stale_latency and (self._target_counters.get(target_id) == counters
                                      or not self._counters_due(published, now)):
                return
        new = target_id not in self._targets
        self._targets[target_id] = key
        self._target_counters[target_id] = counters
        self._target_pub_ms[target_id] = now
        payload = {
            "name": target.name,
            "state": state.status,
            "failures": state.failures,
            "threshold": target.spec.failure_threshold,
            "latency_ms": last.latency_ms if last is not None and last.success else None,
            "error": counters[1],
            "acknowledged": state.acknowledged,
            "type": target.spec.type,
        }
        if days_left is not None:
            # A certificate check: whole days left, and its expiry warning (not an alarm).
            payload["days_left"] = days_left
            payload["warning"] = state.warning
        self.link.put(self.topic("target", safe(target_id)), json.dumps(payload))
        if new:
            self._discovery()

    def _forget(self, target_id: str) -> None:
        """A deleted target: clear its state and remove its Home Assistant entity."""
        self._targets.pop(target_id, None)
        self._target_counters.pop(target_id, None)
        self._target_pub_ms.pop(target_id, None)
        self.link.put(self.topic("target", safe(target_id)), "")
        self.link.put(self.device.config_topic("binary_sensor", f"target_{safe(target_id)}"), "")

    def outputs_changed(self) -> None:
        """Publish each output's state (on, active, silenced, testing)."""
        for out in self.outputs.states():
            payload = {
                "on": out.on,
                "active": out.active,
                "silenced_by": out.silenced_by,
                "testing": out.testing,
                "audible": out.audible,
                "type": out.kind,
            }
            self.link.put(self.topic("output", safe(out.name)), json.dumps(payload))

    def _discovery(self) -> None:
        if not self.config.discovery:
            return
        targets = [s.target for s in self.monitor.states()]
        outputs = self.outputs.states() if self.outputs.outputs else None
        for topic, payload in discovery.messages(self.device, targets, outputs).items():
            self.link.put(topic, json.dumps(payload, sort_keys=True))

    def discovery_messages(self) -> dict[str, dict[str, Any]]:
        """Every Home Assistant discovery config we want retained, by topic."""
        outputs = self.outputs.states() if self.outputs.outputs else None
        return discovery.messages(self.device, [s.target for s in self.monitor.states()],
                                  outputs)

    # ------------------------------------------------------------------ commands

    def _message(self, topic: str, payload: str) -> None:
        if topic == f"{self.config.discovery_prefix}/status":
            if payload == ONLINE and self.link.connected:
                # Home Assistant restarted: it lost non-retained state, so send everything.
                self.link.republish()
            return
        prefix = self.topic("cmd") + "/"
        if not topic.startswith(prefix):
            return
        parts = topic[len(prefix):].split("/", 1)
        handler = self._handlers.get(parts[0])
        if handler is None:
            log.warning("MQTT: unknown command topic %s", topic)
            return
        try:
            handler(parts[1] if len(parts) > 1 else "", payload)
        except Exception:
            log.exception("MQTT: command %s failed", topic)

    def _cmd_ack(self, rest: str, payload: str) -> None:
        """Acknowledge all open alerts (HA's button sends PRESS), or one by its id."""
        alert_id = int(payload) if payload.isdigit() else None
        try:
            done = self.commands.acknowledge(alert_id, "mqtt")
        except (KeyError, ValueError) as exc:
            log.warning("MQTT: cannot acknowledge alert %s: %s", payload, exc)
            return
        log.info("MQTT: acknowledged %d alert(s)", len(done))

    def _cmd_lamp_test(self, rest: str, payload: str) -> None:
        """The lamp test of every output that takes part (as holding the button does)."""
        if not self.outputs.outputs:
            log.warning("MQTT: lamp test requested but no outputs are configured")
            return
        self.commands.lamp_test()

    def _cmd_siren(self, name: str, payload: str) -> None:
        """OFF silences (acknowledge all, as the button does); ON sounds its test chirp.

        Home Assistant's MQTT siren, with no command_template (as discovered), publishes
        JSON: `{"state": "ON"}` / `{"state": "OFF"}` (payload_on / payload_off under "state",
        plus tone/duration/volume_level when supported: ours supports none). A bare ON/OFF,
        as people type it into mosquitto_pub, works too.
        """
        out = next((o for o in self.outputs.states()
                    if safe(o.name) == name and o.audible and not o.shows_states), None)
        if out is None:
            log.warning("MQTT: no audible output %r", name)
            return
        command = siren_command(payload)
        if command == SIREN_OFF:
            self._cmd_ack("", "")
        elif command == SIREN_ON:
            self.commands.lamp_test([out.name])
        else:
            log.warning("MQTT: siren %s: expected {\"state\": \"ON\"} or {\"state\": \"OFF\"}, "
                        "got %r", name, payload[:40])


def siren_command(payload: str) -> str | None:
    """ON, OFF or None from a siren command: HA's JSON `{"state": "ON"}` or a bare word."""
    text = payload.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return None
        state = data.get("state") if isinstance(data, dict) else None
        return state if state in (SIREN_ON, SIREN_OFF) else None
    word = text.upper()
    return word if word in (SIREN_ON, SIREN_OFF) else None
