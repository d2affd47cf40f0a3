"""Run `pingr run --config FILE` and its references as subprocesses, through stable interfaces.

The newer parts (idle, foreign, startup, simplemonitor, mixed) drive pingr only through the
`pingr run` command, its YAML config, `GET /api/v1/health` and /proc, so they keep working
while pingr's insides are rewired.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from bench.common import free_port, wait_port

API_KEY = "bench_admin_key_0123456789abcdef"

#: A trivial FastAPI app served the way pingr serves its API (pingr.app.App.serve: a
#: uvicorn.Server with these settings, inside asyncio.run, on a socket bound beforehand):
#: the reference for idle cost and start-up. argv: port [notick] [asgi]. With "notick"
#: uvicorn's main loop (a 0.1 s `on_tick` poll for should_exit, which also refreshes the Date
#: header) is replaced by a wait on nothing, to show how much of the floor that poll is. With
#: "asgi" the app is a plain ASGI function instead of FastAPI (no FastAPI/pydantic import).
BARE_APP = """
import asyncio, socket, sys
import uvicorn
if "asgi" in sys.argv:
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", b"11")]})
        await send({"type": "http.response.body", "body": b'{"ok":true}'})
else:
    from fastapi import FastAPI
    app = FastAPI()
    @app.get("/api/v1/health")
    async def health():
        return {"ok": True}
class Server(uvicorn.Server):
    if "notick" in sys.argv:
        async def main_loop(self):
            await asyncio.Event().wait()
async def main():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", int(sys.argv[1])))
    config = uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False,
                            log_level="warning", lifespan="off", server_header=False)
    await Server(config).serve(sockets=[sock])
asyncio.run(main())
"""


def write_config(tmp: Path, targets: list[dict], *, port: int | None = None,
                 name: str = "pingr.yaml", **extra: object) -> tuple[Path, int]:
    """A `pingr run` config with its API on a free loopback port and its database in `tmp`."""
    port = port or free_port()
    cfg = {
        "host": "127.0.0.1",
        "port": port,
        "log_level": "warning",
        "auth": {"api_key": API_KEY},
        "storage": {"path": str(tmp / "pingr.db")},
        "targets": targets,
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path, port


def start_pingr(config: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pingr", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def start_bare(port: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", BARE_APP, str(port), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def health(port: int, timeout: float = 1.0) -> tuple[int, bytes]:
    """GET /api/v1/health once: (status, body); raises OSError when nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/api/v1/health")
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def wait_healthy(port: int, proc: subprocess.Popen | None = None, timeout: float = 60.0,
                 poll: float = 0.005) -> float:
    """Poll /api/v1/health until it answers 200; the monotonic time it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"exited with {proc.returncode} before answering: {err[-2000:]}")
        try:
            status, _ = health(port)
            if status == 200:
                return time.monotonic()
        except OSError:
            pass
        time.sleep(poll)
    raise RuntimeError(f"no healthy answer on port {port} within {timeout} s")


def stop(proc: subprocess.Popen | None, timeout: float = 30) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def running(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    try:
        yield proc
    finally:
        stop(proc)


@contextlib.contextmanager
def bare_app(*extra: str) -> Iterator[tuple[subprocess.Popen, int]]:
    port = free_port()
    with running(start_bare(port, *extra)) as proc:
        wait_port(port)
        yield proc, port


class TcpListener:
    """A loopback TCP port that accepts and closes (a TCP target that is up), in a thread."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class EchoCounter:
    """Counts ICMP echo requests sent on loopback to given addresses (a raw socket, in a
    thread): how many probes a monitor really sent in a window, whatever it is.

    A request to the same address within `same_probe` seconds of the last one is the same probe
    sent again (pingr repeats a send that stalled between its timestamp and `sendto`; at load 6
    on 2 cores, 1,015 requests went out in a window where 900 probes were due): counted in
    `repeated`, not in `count`.
    """

    same_probe = 1.0

    def __init__(self, addresses: set[str]) -> None:
        self.addresses = {socket.inet_aton(a) for a in addresses}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.settimeout(0.2)
        self.count = 0
        self.repeated = 0
        self._last: dict[bytes, float] = {}
        self._closed = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        sock, wanted = self.sock, self.addresses
        while not self._closed:
            try:
                data = sock.recv(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            ihl = (data[0] & 0x0F) * 4
            if data[ihl] == 8 and data[16:20] in wanted:
                now, dest = time.monotonic(), data[16:20]
                if now - self._last.get(dest, -1e9) < self.same_probe:
                    self.repeated += 1
                else:
                    self.count += 1
                self._last[dest] = now

    def close(self) -> None:
        self._closed = True
        self.sock.close()
