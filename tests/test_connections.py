"""Connection exhaustion and slowloris against a real `pingr run`: idle sockets cannot take every
file descriptor, slow headers are cut off, repeated errors are logged once with a count."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from pingr.logrepeat import RepeatFilter
from tests.conftest import ADMIN_KEY, SLOW, make_config, running_app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Listener:
    """A TCP port that accepts (and closes) connections: a healthy target for a tcp probe."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]


def _limit_fds(n: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return apply


def test_idle_sockets_cannot_exhaust_descriptors(tmp_path: Path):
    """A pingr limited to 256 descriptors gets 600 idle connections: the API keeps answering,
    a healthy target stays up (no "Too many open files", no false alarm) and the log stays
    small. Before, ~1,000 idle sockets on 1,024 descriptors stopped the API, took healthy
    targets DOWN and wrote 150 MB of log in 40 s."""
    listener = _Listener()
    port = _free_port()
    cfg = {"host": "127.0.0.1", "port": port, "auth": {"api_key": ADMIN_KEY},
           "storage": {"path": str(tmp_path / "p.db")}, "scheduler": {"stagger": 0},
           "http": {"header_timeout": "30s"},
           "targets": [{"name": "lan", "type": "tcp", "host": "127.0.0.1",
                        "port": listener.port, "interval": "1s", "failure_threshold": 2}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    log_path = tmp_path / "stderr.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "pingr", "run", "--config",
                                 str(tmp_path / "c.yaml")], stderr=log,
                                preexec_fn=_limit_fds(256))
    base = f"http://127.0.0.1:{port}"
    headers = {"x-api-key": ADMIN_KEY}
    socks: list[socket.socket] = []
    try:
        deadline = time.time() + 30 * SLOW
        while True:
            try:
                if httpx.get(base + "/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline and proc.poll() is None, log_path.read_text()
            time.sleep(0.2)
        for _ in range(600):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            socks.append(s)
        time.sleep(3)  # several probe rounds with every connection open
        answers = []
        for _ in range(10):
            r = httpx.get(base + "/api/v1/alert-status", headers=headers, timeout=5)
            answers.append(r.status_code)
            time.sleep(0.2)
        assert answers == [200] * 10
        body = r.json()
        assert body["alert"] is False and body["failing_count"] == 0, body
        [lan] = [t for t in httpx.get(base + "/api/v1/targets", headers=headers,
                                      timeout=5).json()["items"] if t["name"] == "lan"]
        assert lan["status"] == "up" and lan["consecutive_failures"] == 0, lan
        fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
        assert fds < 200, f"{fds} descriptors open"
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        proc.wait(timeout=30)
        listener.sock.close()
    text = log_path.read_text()
    assert "Too many open files" not in text
    assert log_path.stat().st_size < 20_000, text[-3000:]
    assert "pingr stopped" in text


async def test_slowloris_is_closed_after_the_header_timeout(tmp_path):
    """A client that trickles a header line every 0.2 s is closed after `header_timeout`
    while a poller's requests keep being answered."""
    cfg = make_config(tmp_path, http={"header_timeout": "1s"})
    async with running_app(cfg) as run:
        reader, writer = await asyncio.open_connection("127.0.0.1", run.app.port)
        writer.write(b"GET /api/v1/alert-status HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        closed_after = None
        polls = []
        for i in range(40):
            try:
                writer.write(b"X-Slow-%d: y\r\n" % i)
                await writer.drain()
            except ConnectionError:
                closed_after = time.monotonic() - start
                break
            r = await run.client.get("/api/v1/alert-status")
            polls.append(r.status_code)
            await asyncio.sleep(0.2)
            if reader.at_eof() or (reader._buffer if hasattr(reader, "_buffer") else b""):
                closed_after = time.monotonic() - start
                break
        if closed_after is None:  # a write may still succeed once after the close
            data = await asyncio.wait_for(reader.read(), 2)
            assert data == b""
            closed_after = time.monotonic() - start
        writer.close()
        assert closed_after < 4 * SLOW, closed_after
        assert polls and set(polls) == {200}
        assert run.server.connections.timed_out >= 1


async def test_past_the_cap_the_oldest_idle_connection_goes(tmp_path):
    cfg = make_config(tmp_path, http={"max_connections": 8, "header_timeout": "60s"})
    async with running_app(cfg) as run:
        idle = [await asyncio.open_connection("127.0.0.1", run.app.port) for _ in range(20)]
        await asyncio.sleep(0.3)
        assert len(run.server.connections.open) <= 8
        # The oldest were closed by the server (EOF), the newest are still open.
        assert await asyncio.wait_for(idle[0][0].read(), 2) == b""
        # A real client still gets in and is answered.
        async with httpx.AsyncClient(base_url=run.base, headers={"x-api-key": ADMIN_KEY}) as c:
            assert (await c.get("/api/v1/alert-status")).status_code == 200
        assert run.server.connections.evicted >= 12
        for _, w in idle:
            w.close()


def test_repeated_errors_are_logged_once_per_interval_with_a_count():
    now = [0.0]
    flt = RepeatFilter(interval=60, clock=lambda: now[0])
    logger = logging.getLogger("pingr.test.repeat")
    logger.propagate = False
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger.addHandler(Keep())
    logger.addFilter(flt)
    try:
        for _ in range(1000):
            try:
                raise OSError(24, "Too many open files")
            except OSError:
                logger.error("socket.accept() out of system resource", exc_info=True)
            now[0] += 0.1  # 1,000 in 100 s
        logger.error("another kind of error")
    finally:
        logger.removeFilter(flt)
    texts = [r.getMessage() for r in records]
    assert texts[0] == "socket.accept() out of system resource" and records[0].exc_info
    assert texts[1] == ("socket.accept() out of system resource (repeated 599 more times in the "
                        "last 60s)")
    assert records[1].exc_info is None
    assert texts[2] == "another kind of error"
    assert len(records) == 3
