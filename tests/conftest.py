"""Shared fixtures: a real pingr App on a loopback port, and controllable loopback HTTP servers."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pingr.app import App
from pingr.config import parse_config
from pingr.server import Server
from pingr.timeutil import parse_timestamp

#: Fixture modules shared by several test files (a private dockerd for the Docker tests).
pytest_plugins = ["tests.dockerd"]

ADMIN_KEY = "pingr_test_admin_key_0123456789abcdef"

#: How much longer than on an ordinary machine to wait for things that take time (a start, a
#: state change): scripts/test-arm64.sh sets PINGR_TEST_SLOW under qemu-user emulation, which
#: runs Python several times slower. It stretches the deadlines of waits (wait_for, start, stop);
#: latency bounds a test asserts explicitly are not scaled.
SLOW = max(1.0, float(os.environ.get("PINGR_TEST_SLOW") or 1))


class Behaviour:
    """What a TargetServer answers; tests change it while the server runs."""

    def __init__(self) -> None:
        self.status = 200
        self.body = b"OK pingr-test"
        self.delay = 0.0
        self.hits: list[float] = []


class TargetServer:
    """A real HTTP server on 127.0.0.1 (port 0) in a thread, for probes to hit."""

    def __init__(self) -> None:
        behaviour = self.behaviour = Behaviour()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                behaviour.hits.append(time.time())
                if behaviour.delay:
                    time.sleep(behaviour.delay)
                body = behaviour.body
                self.send_response(behaviour.status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET  # noqa: N815
            do_HEAD = do_GET  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a probe that times out resets its connection: expected, not news

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def target_server() -> Iterator[TargetServer]:
    server = TargetServer()
    yield server
    server.close()


def make_config(tmp_path: Path, extra: dict[str, Any] | None = None, **overrides: Any) -> Any:
    """A Config for tests: port 0, a DB in tmp_path, a known admin key, fast flushes."""
    data: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "auth": {"api_key": ADMIN_KEY},
        "storage": {"path": str(tmp_path / "pingr.db"), "flush_interval": "100ms"},
        "scheduler": {"stagger": 0},
    }
    data.update(extra or {})
    data.update(overrides)
    return parse_config(yaml.safe_dump(data), "test.yaml")


class Running:
    """A started App (behind its Server) and an httpx client authenticated as admin."""

    def __init__(self, server: Server, client: httpx.AsyncClient,
                 tap: EventTap | None = None) -> None:
        self.server = server
        #: Every event since before the first probe (running_app(..., tap=True)).
        self.tap = tap
        self.app = server.app
        self.client = client
        self.base = f"http://127.0.0.1:{self.app.port}"

    async def wait_for(self, predicate: Any, timeout: float = 15.0, step: float = 0.05) -> Any:
        """Poll `predicate()` (sync or async) until it is truthy; fail after `timeout` (× SLOW)."""
        timeout *= SLOW
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s")
            await asyncio.sleep(step)


@contextlib.asynccontextmanager
async def running_app(config: Any, *, tap: bool = False, **kwargs: Any
                      ) -> AsyncIterator[Running]:
    """Serve a real App on 127.0.0.1 in this event loop; stop it cleanly afterwards.
    `tap`: subscribe an EventTap before the first probe runs (run.tap)."""
    app = App(config, env={}, **kwargs)
    tapped = EventTap(app) if tap else None
    server = Server(app)
    task = asyncio.create_task(server.run())
    waiter = asyncio.create_task(server.listening.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=20 * SLOW,
                                 return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises the start-up error
    assert waiter in done, f"pingr did not start listening within {20 * SLOW:g} s"
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.port}",
                               headers={"x-api-key": ADMIN_KEY}, timeout=10)
    try:
        yield Running(server, client, tapped)
    finally:
        await client.aclose()
        server.request_stop()
        await asyncio.wait_for(task, 20 * SLOW)


class EventTap:
    """Every event the App publishes, as an SSE client receives it (a real subscriber of the
    App's event broker; per-result events are left out so a long test cannot overflow it)."""

    def __init__(self, app: App) -> None:
        from pingr.events import EVENT_TYPES

        sub = app.events.subscribe(frozenset(EVENT_TYPES) - {"target.check_result"})
        assert sub is not None, "the event broker refused a subscriber"
        self.sub = sub
        self.items: list[tuple[str, dict[str, Any]]] = []

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        while not self.sub.queue.empty():
            message = self.sub.queue.get_nowait()
            if message is None:
                raise AssertionError("the event broker closed this subscriber")
            fields = dict(line.split(": ", 1) for line in message.decode().strip().split("\n"))
            self.items.append((fields["event"], json.loads(fields["data"])))
        return self.items

    @property
    def types(self) -> list[str]:
        return [kind for kind, _ in self.drain()]

    def first(self, kind: str, **match: Any) -> dict[str, Any]:
        """The first event of `kind` whose target has the given fields (e.g. name=...)."""
        for k, data in self.drain():
            if k == kind and all((data.get("target") or {}).get(f) == v
                                 for f, v in match.items()):
                return data
        raise AssertionError(f"no {kind} event {match or ''} in {self.types}")

    def at(self, kind: str) -> float:
        """When the monitor made the first `kind` change, on time.monotonic()'s scale (the
        clock gpiozero's MockPin stamps pin changes with)."""
        ts = parse_timestamp(self.first(kind)["ts"]).timestamp()
        return ts - (time.time() - time.monotonic())
