"""Memory: peak and steady RSS of `pingr run` with 100 targets, against the import floor."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

from bench.common import free_port, heading, median, row, wait_port
from bench.probes import SERVER

#: The reference: an idle interpreter that imported what `pingr run` has imported once it runs
#: (checked against the running process's sys.modules on 2026-11-22): the CLI with its start-up
#: import policy (`skip_unused_imports`), the App, the API, the components the App builds, and
#: what the first HTTP probe and the first API connection load (httpcore, h11, uvicorn's h11
#: protocol, sqlite3). It builds nothing: no config, no store, no targets, no routes of the
#: optional parts, no TLS context.
FLOOR = """
import time, pingr.cli
pingr.cli.skip_unused_imports()
import pingr.app, pingr.api, pingr.components, pingr.probes.context
import httpcore, h11, sqlite3, uvicorn.protocols.http.h11_impl, uvicorn.lifespan.off
print('ready', flush=True)
time.sleep(30)
"""


def rss_floor() -> int:
    """RSS of an idle interpreter that imported what `pingr run` imports (see FLOOR)."""
    proc = subprocess.Popen([sys.executable, "-c", FLOOR], stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        return psutil.Process(proc.pid).memory_info().rss
    finally:
        proc.kill()
        proc.wait()


def main(seconds: int = 120, interval: str = "5s") -> dict:
    heading(
        f"Memory: `pingr run` with 100 targets (50 ICMP, 50 HTTP, every {interval}) for {seconds} s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        http_port, port = free_port(), free_port()
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(http_port)])
        targets = [
            {"type": "icmp", "name": f"lo{i}", "host": f"127.0.1.{i + 1}", "interval": interval}
            for i in range(50)
        ]
        targets += [
            {
                "type": "http",
                "name": f"web{i}",
                "url": f"http://127.0.0.1:{http_port}/{i}",
                "interval": interval,
            }
            for i in range(50)
        ]
        cfg = {
            "host": "127.0.0.1",
            "port": port,
            "auth": {"api_key": "bench_admin_key_0123456789ab"},
            "storage": {"path": str(tmpdir / "m.db")},
            "targets": targets,
        }
        (tmpdir / "pingr.yaml").write_text(yaml.safe_dump(cfg))
        wait_port(http_port)
        pingr = subprocess.Popen(
            [sys.executable, "-m", "pingr", "run", "-c", str(tmpdir / "pingr.yaml")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        samples: list[tuple[float, int]] = []
        try:
            wait_port(port)
            proc = psutil.Process(pingr.pid)
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                samples.append((time.monotonic() - t0, proc.memory_info().rss))
                time.sleep(1.0)
            status = Path(f"/proc/{pingr.pid}/status").read_text()
            hwm = (
                int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1]) * 1024
            )
        finally:
            pingr.terminate()
            pingr.wait(timeout=30)
            server.terminate()
            server.wait()
    floor = rss_floor()
    values = [v for _, v in samples]
    half = len(values) // 2
    steady = median(values[half:])
    first_q = median(values[half : half + half // 2])
    last_q = median(values[half + half // 2 :])
    row("reference: idle interpreter with pingr imported", f"{floor / 2**20:.1f} MiB")
    row("pingr peak RSS (kernel VmHWM)", f"{hwm / 2**20:.1f} MiB")
    row(
        "pingr steady RSS (median, second half)",
        f"{steady / 2**20:.1f} MiB  (target <= 80 MB) = {steady / floor:.2f}x the import floor",
    )
    row("growth: 3rd vs 4th quarter medians", f"{(last_q - first_q) / 2**20:+.2f} MiB")
    return {
        "floor": floor,
        "peak": hwm,
        "steady": steady,
        "growth": last_q - first_q,
        "samples": samples,
    }


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 120)
