"""Probe throughput: 1,000 ICMP targets vs fping, 1,000 HTTP targets vs a bare asyncio.gather."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.common import cpu_children, cpu_self, free_port, heading, percentile, row, wait_port

N = 1000


def addresses(n: int = N) -> list[str]:
    """Distinct loopback addresses 127.0.x.y (every one of them answers)."""
    return [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(n)]


def config(tmp: Path, targets: list[dict], **storage: object) -> object:
    from pingr.config import parse_config

    data = {
        "host": "127.0.0.1",
        "port": 0,
        "auth": {"api_key": "bench_admin_key_0123456789abcdef"},
        "storage": {"path": str(tmp / "bench.db"), **storage},
        "scheduler": {"stagger": 0},
        "targets": targets,
    }
    return parse_config(yaml.safe_dump(data), "bench.yaml")


async def pingr_round(targets: list[dict]) -> dict:
    """Start the service (no HTTP needed) and time one round of every target's first probe."""
    from pingr.app import App

    with tempfile.TemporaryDirectory() as tmp:
        app = App(config(Path(tmp), targets), env={})
        latencies: list[int] = []
        failures: list[str] = []
        done = asyncio.Event()

        def on_result(result) -> None:  # noqa: ANN001
            app.on_result(result)
            if result.success:
                latencies.append(result.latency_ms or 0)
            else:
                failures.append(result.error or "")
            if len(latencies) + len(failures) >= len(targets):
                done.set()

        app.scheduler.sink = on_result  # the scheduler's one sink, counted on its way through
        await app.start()  # the scheduler's tasks start when this coroutine yields
        # process_time/thread_time: nanosecond clocks (os.times counts 10 ms ticks).
        cpu0, loop0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
        await asyncio.wait_for(done.wait(), 120)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        loop_cpu = time.thread_time() - loop0
        from pingr.probes import icmp as icmp_probe

        d = icmp_probe._DISPATCHERS.get(asyncio.get_running_loop())
        resent = d.resent if d is not None else 0
        await app.stop()
    return {
        "wall": wall,
        "cpu": cpu,
        # The event loop's thread (scheduler, probes, monitor, store buffering); the rest is
        # other threads, i.e. the store's writer flushing the batch (every 500 results).
        "loop_cpu": loop_cpu,
        "ok": len(latencies),
        "failed": len(failures),
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": max(latencies, default=0),
        "over10": sum(1 for x in latencies if x > 10),
        "resent": resent,
        "errors": sorted(set(failures))[:3],
    }


def fping_round(addrs: list[str]) -> dict:
    cpu0, t0 = cpu_children(), time.perf_counter()
    proc = subprocess.run(["fping", "-c1", "-i0", "-q", *addrs], capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, cpu_children() - cpu0
    ok = len(re.findall(r"xmt/rcv/%loss = 1/1/", proc.stderr))
    rtts = [float(x) for x in re.findall(r"min/avg/max = ([\d.]+)/", proc.stderr)]
    return {
        "wall": wall,
        "cpu": cpu,
        "ok": ok,
        "p99": percentile(rtts, 99),
        "max": max(rtts, default=0),
    }


def icmp(runs: int = 3) -> dict:
    heading(f"ICMP probe throughput: one round of {N} loopback addresses")
    addrs = addresses()
    targets = [
        {"type": "icmp", "name": f"lo{i}", "host": a, "interval": "1h", "timeout": "2s"}
        for i, a in enumerate(addrs)
    ]
    ours, ref = [], []
    for _ in range(runs):  # alternate so both see the same machine load
        ref.append(fping_round(addrs))
        ours.append(asyncio.run(pingr_round(targets)))
    p = sorted(ours, key=lambda r: r["cpu"])[len(ours) // 2]
    f = sorted(ref, key=lambda r: r["cpu"])[len(ref) // 2]
    row(
        "fping -c1 -i0: wall / CPU (median run)",
        f"{f['wall'] * 1000:.0f} ms / {f['cpu'] * 1000:.0f} ms"
        f"  ({f['ok']} replies, max RTT {f['max']:.2f} ms)",
    )
    row(
        "pingr scheduler: wall / CPU (median run)",
        f"{p['wall'] * 1000:.0f} ms / {p['cpu'] * 1000:.0f} ms"
        f"  ({p['ok']} replies, {p['failed']} failed)",
    )
    row(
        "CPU per probe: pingr / fping",
        f"{p['cpu'] / N * 1e6:.0f} us / {f['cpu'] / N * 1e6:.0f} us"
        f" = {p['cpu'] / max(f['cpu'], 1e-9):.1f}x  (target <= 3x)",
    )
    row(
        "pingr CPU: event-loop thread / other threads",
        f"{p['loop_cpu'] / N * 1e6:.0f} us / {(p['cpu'] - p['loop_cpu']) / N * 1e6:.0f} us"
        " per probe (other = the store's writer thread)",
    )
    row(
        "pingr reply latency p50 / p99 / max",
        f"{p['p50']} / {p['p99']} / {p['max']} ms (median run)",
    )
    row(
        f"pingr over all {runs} runs ({runs * N} probes)",
        f"max {max(r['max'] for r in ours)} ms, {sum(r['over10'] for r in ours)} over 10 ms"
        f" (target: none); {sum(r['resent'] for r in ours)} sends stalled and were repeated",
    )
    if p["errors"]:
        row("pingr probe errors (sample)", "; ".join(p["errors"]))
    return {"pingr": ours, "fping": ref}


SERVER = """
import sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"OK"})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False, lifespan="off")
"""


async def bare_gather(urls: list[str]) -> dict:
    from pingr.probes.context import make_client

    client = make_client()
    cpu0, t0 = cpu_self(), time.perf_counter()

    # The same concurrency as pingr's scheduler (max_concurrency 100): unbounded, 1,000
    # requests queue on httpx's 200-connection pool and stall (measured: > 40 s).
    gate = asyncio.Semaphore(100)

    async def one(url: str) -> bool:
        async with gate:
            r = await client.get(url, timeout=10)
        return r.status_code == 200

    oks = await asyncio.gather(*(one(u) for u in urls), return_exceptions=True)
    wall, cpu = time.perf_counter() - t0, cpu_self() - cpu0
    await client.aclose()
    return {"wall": wall, "cpu": cpu, "ok": sum(1 for x in oks if x is True)}


def http(runs: int = 3) -> dict:
    heading(f"HTTP probe throughput: {N} targets against one local server")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        wait_port(port)
        urls = [f"http://127.0.0.1:{port}/t{i}" for i in range(N)]
        targets = [
            {"type": "http", "name": f"h{i}", "url": u, "interval": "1h", "timeout": "10s"}
            for i, u in enumerate(urls)
        ]
        ours, ref = [], []
        for _ in range(runs):
            ref.append(asyncio.run(bare_gather(urls)))
            ours.append(asyncio.run(pingr_round(targets)))
    finally:
        server.terminate()
        server.wait()
    p = sorted(ours, key=lambda r: r["wall"])[len(ours) // 2]
    g = sorted(ref, key=lambda r: r["wall"])[len(ref) // 2]
    row(
        "bare asyncio.gather (httpx): wall / CPU",
        f"{g['wall'] * 1000:.0f} ms / {g['cpu'] * 1000:.0f} ms  ({g['ok']} ok)",
    )
    row(
        "pingr scheduler: wall / CPU",
        f"{p['wall'] * 1000:.0f} ms / {p['cpu'] * 1000:.0f} ms"
        f"  ({p['ok']} ok, {p['failed']} failed)",
    )
    row("round time: pingr / bare gather", f"{p['wall'] / g['wall']:.2f}x  (target <= 1.3x)")
    return {"pingr": ours, "gather": ref}


if __name__ == "__main__":
    which = sys.argv[1:] or ["icmp", "http"]
    if "icmp" in which:
        icmp()
    if "http" in which:
        http()
