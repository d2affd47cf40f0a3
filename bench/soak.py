"""Soak: a real `pingr run` whose targets are all healthy, under mixed abuse for 10 minutes.

Abuse, all on loopback: idle sockets (thousands, reopened when closed), slowloris clients
trickling header lines, oversized bodies (10 MB announced, with and without keys), bad keys
from thousands of loopback addresses; meanwhile a valid poller reads alert-status once a
second. Reports the poller's p50/p99 against a quiet baseline measured first in the same run,
false alerts (must be 0), the RSS high-water mark (must stay under 150 MB) and log bytes.

    python -m bench soak            # 10 minutes (python -m bench.soak --seconds 60: shorter)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from bench.common import free_port, heading, percentile, row, wait_port

KEY = "pingr_soak_admin_key_0123456789abcdef"
RSS_LIMIT_MB = 150
#: The valid poller's address; the abuse comes from 127.0.0.1 and 127.10.0.0/16.
POLLER = "127.0.0.2"


class Healthy:
    """TCP listeners that accept and close, in a child process of their own (the abuse loop in
    this process must not starve them): targets that are always up."""

    CHILD = ("import socket, sys, threading\n"
             "def serve(s):\n"
             "    while True:\n"
             "        c, _ = s.accept(); c.close()\n"
             "socks = []\n"
             "for _ in range(int(sys.argv[1])):\n"
             "    s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(512); socks.append(s)\n"
             "    threading.Thread(target=serve, args=(s,), daemon=True).start()\n"
             "print(' '.join(str(s.getsockname()[1]) for s in socks), flush=True)\n"
             "sys.stdin.read()\n")

    def __init__(self, n: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", self.CHILD, str(n)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.ports = [int(p) for p in self.proc.stdout.readline().split()]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Soak:
    def __init__(self, port: int, seconds: float) -> None:
        self.port = port
        self.seconds = seconds
        self.base = f"http://127.0.0.1:{port}"
        self.counts = {"idle opened": 0, "slowloris": 0, "big bodies": 0, "bad keys": 0}
        self.poll_ms: list[float] = []
        self.poll_errors = 0
        self.poll_failures: list[str] = []
        self.alerts_seen = 0
        self.stop = asyncio.Event()

    async def poller(self, until: float, into: list[float]) -> None:
        # From an address of its own: the abusers' failed authentications block theirs.
        async with httpx.AsyncClient(base_url=self.base, headers={"x-api-key": KEY}, timeout=10,
                                     transport=httpx.AsyncHTTPTransport(
                                         local_address=POLLER)) as c:
            while time.monotonic() < until:
                start = time.perf_counter()
                try:
                    r = await c.get("/api/v1/alert-status")
                    into.append((time.perf_counter() - start) * 1000)
                    if r.status_code != 200:
                        self.poll_errors += 1
                    elif r.json()["alert"]:
                        self.alerts_seen += 1
                except httpx.HTTPError as exc:
                    self.poll_errors += 1
                    self.poll_failures.append(f"{type(exc).__name__}")
                await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - start)))

    async def idle(self, n: int) -> None:
        held: list[socket.socket] = []
        while not self.stop.is_set():
            while len(held) < n:
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", self.port))
                held.append(s)
                self.counts["idle opened"] += 1
            await asyncio.sleep(2)
            alive = []
            for s in held:  # the server closes the oldest: open new ones in their place
                try:
                    if s.recv(1) == b"":
                        s.close()
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    s.close()
                    continue
                alive.append(s)
            held = alive
        for s in held:
            s.close()

    async def slowloris(self, n: int) -> None:
        async def one() -> None:
            while not self.stop.is_set():
                try:
                    _, w = await asyncio.open_connection("127.0.0.1", self.port)
                    self.counts["slowloris"] += 1
                    w.write(b"GET /api/v1/alert-status HTTP/1.1\r\nHost: x\r\n")
                    for i in range(1000):
                        if self.stop.is_set():
                            break
                        w.write(b"X-%d: y\r\n" % i)
                        await w.drain()
                        await asyncio.sleep(1)
                    w.close()
                except OSError:
                    await asyncio.sleep(0.5)
        await asyncio.gather(*(one() for _ in range(n)))

    async def big_bodies(self) -> None:
        keys = (b"", b"x-api-key: wrong\r\n", b"x-api-key: " + KEY.encode() + b"\r\n")
        heads = [b"POST /api/v1/targets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                 b"\r\nContent-Length: 10485760\r\n" + extra + b"\r\n" for extra in keys]
        while not self.stop.is_set():
            for head in heads:
                try:
                    r, w = await asyncio.open_connection("127.0.0.1", self.port)
                    w.write(head + b"{" * 65536)
                    await w.drain()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(r.read(4096), 5)
                    w.close()
                    self.counts["big bodies"] += 1
                except OSError:
                    pass
            await asyncio.sleep(0.2)

    async def bad_keys(self, addresses: int) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            n = random.randrange(addresses)
            addr = f"127.{10 + n // 65536}.{n // 256 % 256}.{n % 256 or 1}"
            try:
                transport = httpx.AsyncHTTPTransport(local_address=addr)
                async with httpx.AsyncClient(base_url=self.base, transport=transport,
                                             timeout=5) as c:
                    await c.get("/api/v1/alert-status", headers={"x-api-key": f"bad{i}"})
                self.counts["bad keys"] += 1
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.01)


async def run(seconds: float, baseline: float) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="pingr-soak-"))
    healthy = Healthy(8)
    port = free_port()
    targets = [{"name": f"svc{i}", "type": "tcp", "host": "127.0.0.1", "port": p,
                "interval": "2s", "failure_threshold": 2} for i, p in enumerate(healthy.ports)]
    targets.append({"name": "self", "type": "http", "interval": "5s",
                    "url": f"http://127.0.0.1:{port}/api/v1/health"})
    cfg = {"host": "127.0.0.1", "port": port, "auth": {"api_key": KEY},
           "storage": {"path": str(tmp / "pingr.db")}, "targets": targets}
    (tmp / "pingr.yaml").write_text(yaml.safe_dump(cfg))
    log_path = tmp / "stderr.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PINGR_")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "pingr", "run", "--config",
                                 str(tmp / "pingr.yaml")], stderr=log, env=env)
    soak = Soak(port, seconds)
    rss_max = 0.0
    try:
        wait_port(port, 60)
        await asyncio.sleep(15)  # first probes: every target up
        quiet: list[float] = []
        await soak.poller(time.monotonic() + baseline, quiet)
        start_log = log_path.stat().st_size
        until = time.monotonic() + seconds
        tasks = [asyncio.create_task(c) for c in (
            soak.poller(until, soak.poll_ms), soak.idle(1000), soak.slowloris(100),
            soak.big_bodies(), soak.bad_keys(5000))]
        while time.monotonic() < until:
            rss_max = max(rss_max, rss_mb(proc.pid))
            assert proc.poll() is None, "pingr exited during the soak"
            await asyncio.sleep(1)
        soak.stop.set()
        await asyncio.wait(tasks, timeout=30)
        async with httpx.AsyncClient(base_url=soak.base, headers={"x-api-key": KEY},
                                     transport=httpx.AsyncHTTPTransport(
                                         local_address=POLLER)) as c:
            alerts = (await c.get("/api/v1/alerts", params={"state": "all"})).json()
        log_bytes = log_path.stat().st_size - start_log
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        healthy.close()
    heading(f"soak: {seconds:.0f} s of abuse against {len(targets)} healthy targets")
    for name, n in soak.counts.items():
        row(f"abuse: {name}", f"{n}")
    row("alert-status p50 / p99, quiet baseline (ms)",
        f"{percentile(quiet, 50):.1f} / {percentile(quiet, 99):.1f} ({len(quiet)} polls)")
    row("alert-status p50 / p99, under abuse (ms)",
        f"{percentile(soak.poll_ms, 50):.1f} / {percentile(soak.poll_ms, 99):.1f} "
        f"({len(soak.poll_ms)} polls, {soak.poll_errors} failed)")
    if soak.poll_failures:
        row("failed polls by error", ", ".join(sorted(set(soak.poll_failures))))
    row("false alerts (must be 0)", f"{len(alerts)} alerts, {soak.alerts_seen} polls with "
        "alert=true" + "".join(f"; {a['target_name']}: {a['last_error']}" for a in alerts))
    row(f"RSS high-water mark (must stay under {RSS_LIMIT_MB} MB)", f"{rss_max:.1f} MB")
    row("log bytes written during the abuse", f"{log_bytes}")
    ok = not alerts and not soak.alerts_seen and rss_max < RSS_LIMIT_MB and not soak.poll_errors
    row("verdict", "PASS" if ok else "FAIL")
    return 0 if ok else 1


def main(seconds: float = 600, baseline: float = 30) -> int:
    return asyncio.run(run(seconds, baseline))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--baseline", type=float, default=30)
    args = parser.parse_args()
    raise SystemExit(main(args.seconds, args.baseline))
