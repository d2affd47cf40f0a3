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
#: import policy (`skip_unused_imports`), the App and its parts, the API, and
#: what the first HTTP probe and the first API connection load (httpcore, h11, uvicorn's h11
#: protocol, sqlite3). It builds nothing: no config, no store, no targets, no routes of the
#: optional parts, no TLS context.
FLOOR = """
import time, pingr.launch
pingr.launch.skip_unused_imports()
import pingr.cli
import pingr.server, pingr.probes.context
import httpcore, h11, sqlite3, uvicorn.protocols.http.h11_impl, uvicorn.lifespan.off
print('ready', flush=True)
time.sleep(30)
"""


#: The same floor without the database layer: every module FLOOR has loaded except pingr's own
#: (they import it) and SQLAlchemy/SQLModel's, imported one by one. The difference is what the
#: "sqlmodel over SQLite" choice costs a running pingr; a store on the standard library's
#: sqlite3 (which FLOOR loads anyway) would not pay it.
WITHOUT_ORM = FLOOR.replace("print('ready', flush=True)", """import sys
names = [m for m in sys.modules if m.split('.')[0] not in ('pingr', 'sqlalchemy', 'sqlmodel')]
print(' '.join(names), flush=True)
""")
IMPORT_EACH = """
import importlib, sys, time
for name in sys.stdin.readline().split():
    try:
        importlib.import_module(name)
    except Exception:
        pass
leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('pingr', 'sqlalchemy', 'sqlmodel'))
print('ready' if not leaked else 'leaked ' + ' '.join(leaked[:5]), flush=True)
time.sleep(30)
"""


def _rss_of(code: str, stdin: str | None = None) -> tuple[int, str]:
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        if stdin is not None:
            proc.stdin.write(stdin + "\n")
            proc.stdin.flush()
        line = proc.stdout.readline().strip()
        return psutil.Process(proc.pid).memory_info().rss, line
    finally:
        proc.kill()
        proc.wait()


def rss_floor() -> int:
    """RSS of an idle interpreter that imported what `pingr run` imports (see FLOOR)."""
    return _rss_of(FLOOR)[0]


def rss_without_orm() -> int:
    """RSS of the floor's modules minus SQLAlchemy, SQLModel and pingr (see WITHOUT_ORM)."""
    _, names = _rss_of(WITHOUT_ORM)
    rss, line = _rss_of(IMPORT_EACH, names)
    if line != "ready":
        raise RuntimeError(f"the reference without the ORM imported it anyway: {line}")
    return rss


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
            wait_port(port, timeout=60.0)  # a loaded machine imports slowly
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
    without_orm = rss_without_orm()
    values = [v for _, v in samples]
    half = len(values) // 2
    steady = median(values[half:])
    first_q = median(values[half : half + half // 2])
    last_q = median(values[half + half // 2 :])
    row("reference: idle interpreter with pingr imported", f"{floor / 2**20:.1f} MiB")
    row(
        "  of it SQLAlchemy + SQLModel + pingr's modules",
        f"{(floor - without_orm) / 2**20:.1f} MiB (the rest imported alone:"
        f" {without_orm / 2**20:.1f} MiB)",
    )
    row("pingr peak RSS (kernel VmHWM)", f"{hwm / 2**20:.1f} MiB")
    row(
        "pingr steady RSS (median, second half)",
        f"{steady / 2**20:.1f} MiB  (target <= 80 MB) = {steady / floor:.2f}x the import floor",
    )
    row("growth: 3rd vs 4th quarter medians", f"{(last_q - first_q) / 2**20:+.2f} MiB")
    return {
        "floor": floor,
        "without_orm": without_orm,
        "peak": hwm,
        "steady": steady,
        "growth": last_q - first_q,
        "samples": samples,
    }


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 120)
