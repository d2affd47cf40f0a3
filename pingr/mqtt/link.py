"""The connection to the broker: paho in its own thread, retained state, hops to the loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from pingr.mqtt.config import MqttConfig

log = logging.getLogger(__name__)

ONLINE, OFFLINE = "online", "offline"


class Link:
    """Keeps the broker up to date with every retained message we want there.

    paho-mqtt runs the socket in its own thread, connects and reconnects with back-off there,
    and queues publishes in memory, so a broker that is down, slow or refusing never holds up
    the event loop. Its callbacks hop onto the loop with call_soon_threadsafe. Every retained
    message is kept in `retained`; a (re)connect publishes all of it, so the broker always
    catches up with the latest state. `on_message(topic, payload)` and `on_connected()` run
    on the loop.
    """

    def __init__(self, config: MqttConfig, *, subscriptions: list[str],
                 on_message: Callable[[str, str], None],
                 on_connected: Callable[[], None], label: str = "MQTT",
                 max_payload: int | None = None,
                 on_oversized: Callable[[str, int], None] | None = None) -> None:
        self.config = config
        #: Names this connection in the log (the fleet has its own).
        self.label = label
        #: Messages larger than this are not decoded: `on_oversized(topic, size)` instead.
        self.max_payload = max_payload
        self.on_oversized = on_oversized
        self.status_topic = f"{config.base}/status"
        self.subscriptions = subscriptions
        self.on_message = on_message
        self.on_connected = on_connected
        #: topic -> payload of every retained message we want on the broker ("" deletes).
        self.retained: dict[str, str] = {}
        self.connected = False
        self.connects = 0
        self._closing = False
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Connect in the background (never waits for the broker)."""
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        cfg = self.config
        self._loop = asyncio.get_running_loop()
        client = paho.Client(CallbackAPIVersion.VERSION2,
                             client_id=cfg.client_id or f"pingr-{cfg.node_id}",
                             clean_session=True)
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls.enabled:
            client.tls_set(ca_certs=cfg.tls.ca_file, certfile=cfg.tls.cert_file,
                           keyfile=cfg.tls.key_file)
            client.tls_insecure_set(cfg.tls.insecure)
        # The broker announces our death for us: crash, power loss or a cut cable.
        client.will_set(self.status_topic, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=max(1, round(cfg.reconnect_min)),
                                   max_delay=max(1, round(cfg.reconnect_max)))
        # Bounded: while the link is down nothing piles up beyond this (we republish anyway).
        client.max_queued_messages_set(10_000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        # connect_async resolves and connects in paho's thread; loop_start retries forever.
        client.connect_async(cfg.host, cfg.port, keepalive=round(cfg.keepalive))
        client.loop_start()
        log.info("%s: connecting to %s:%d as node %r (topics under %s/)", self.label, cfg.host,
                 cfg.port, cfg.node_id, cfg.base)

    async def stop(self) -> None:
        """Say `offline` ourselves (a clean stop is not a crash) and disconnect."""
        client = self._client
        if client is None:
            return
        self._closing = True

        def close() -> None:
            if client.is_connected():
                info = client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
                with contextlib.suppress(Exception):
                    info.wait_for_publish(timeout=2)
            client.disconnect()
            client.loop_stop()

        # loop_stop joins paho's thread; never block the event loop on it.
        await asyncio.get_running_loop().run_in_executor(None, close)
        self.connected = False

    # ------------------------------------------------------------------ paho thread

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any,
                    _props: Any = None) -> None:
        if reason.is_failure:
            self._hop(self._refused, str(reason))
            return
        client.subscribe([(topic, 1) for topic in self.subscriptions])
        self._hop(self._connected)

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any,
                       _props: Any = None) -> None:
        self._hop(self._disconnected, str(reason))

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        if self.max_payload is not None and len(message.payload) > self.max_payload:
            if self.on_oversized is not None:
                self._hop(self.on_oversized, message.topic, len(message.payload))
            return
        payload = message.payload.decode("utf-8", "replace").strip()
        self._hop(self.on_message, message.topic, payload)

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
        log.info("%s: connected to %s:%d", self.label, self.config.host, self.config.port)
        self.send(self.status_topic, ONLINE)
        self.on_connected()
        self.republish()

    def _refused(self, reason: str) -> None:
        log.error("%s: the broker at %s:%d refused the connection: %s", self.label,
                  self.config.host, self.config.port, reason)

    def _disconnected(self, reason: str) -> None:
        if self.connected and not self._closing:
            log.warning("%s: lost the broker (%s); reconnecting with back-off", self.label,
                        reason)
        self.connected = False

    def republish(self) -> None:
        """Send every retained message again (the broker or Home Assistant lost them)."""
        for topic, payload in list(self.retained.items()):
            self.send(topic, payload)

    def send(self, topic: str, payload: str, retain: bool = True) -> None:
        client = self._client
        if client is None or not client.is_connected():
            return  # the reconnect republishes self.retained
        client.publish(topic, payload, qos=1, retain=retain)

    def put(self, topic: str, payload: str) -> None:
        """Want `payload` retained on `topic`; publish only when it differs from before."""
        if self.retained.get(topic) == payload:
            return
        self.retained[topic] = payload
        self.send(topic, payload)
