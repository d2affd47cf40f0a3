"""A real Mosquitto broker on a free loopback port, and a recording MQTT client for tests."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto"
                                          if Path("/usr/sbin/mosquitto").exists() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto bound to 127.0.0.1 only, anonymous access, no persistence (a restart forgets)."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        if MOSQUITTO is None:
            pytest.skip("mosquitto is not installed (tests/bootstrap.sh installs it)")
        self.port = port or free_port()
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                             "persistence false\nlog_dest stderr\nlog_type error\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "mosquitto.log"

    def start(self) -> Broker:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


class Recorder:
    """An MQTT client (paho, its own thread) that records every message it sees."""

    def __init__(self, port: int, topics: tuple[str, ...] = ("#",)) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, str, bool]] = []
        #: When each message arrived (time.monotonic()), in the order of `messages`.
        self.times: list[float] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")

        def on_connect(c: Any, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
            c.subscribe([(t, 1) for t in topics])

        def on_subscribe(*_: Any) -> None:
            self.subscribed.set()

        def on_message(_c: Any, _u: Any, msg: Any) -> None:
            with self.lock:
                self.messages.append((msg.topic, msg.payload.decode(), bool(msg.retain)))
                self.times.append(time.monotonic())

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.reconnect_delay_set(0.2, 1)
        client.connect("127.0.0.1", port)
        client.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError("test MQTT client could not subscribe")
        self.client = client

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def payloads(self, topic: str) -> list[str]:
        with self.lock:
            return [p for t, p, _ in self.messages if t == topic]

    def last(self, topic: str) -> str | None:
        found = self.payloads(topic)
        return found[-1] if found else None

    def topics(self) -> set[str]:
        with self.lock:
            return {t for t, _, _ in self.messages}

    def timed(self, topic: str) -> list[tuple[float, str]]:
        """(arrival time, payload) of every message on `topic`."""
        with self.lock:
            return [(at, p) for at, (t, p, _) in zip(self.times, self.messages, strict=True)
                    if t == topic]

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()
            self.times.clear()

    def publish(self, topic: str, payload: str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    async def wait(self, topic: str, predicate: Any = None, timeout: float = 15.0) -> str:
        """Wait until the latest payload on `topic` satisfies `predicate`; return it."""
        deadline = time.monotonic() + timeout
        while True:
            payload = self.last(topic)
            if payload is not None and (predicate is None or predicate(payload)):
                return payload
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching message on {topic} within {timeout}s; "
                                     f"seen: {self.payloads(topic)[-5:]}")
            await asyncio.sleep(0.05)
