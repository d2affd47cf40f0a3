"""Idle cost: `pingr run` with a handful of slow targets, against an idle bare uvicorn app.

`idle`: CPU seconds per minute and wake-ups per second of `pingr run` with three targets at
30-60 s (one TCP to a loopback listener, two ICMP to 127.0.0.x), over windows of at least
60 s after a warm-up, measured in the same windows as a trivial FastAPI app served by uvicorn
the way pingr serves its API (`bench.service.BARE_APP`), and that app with uvicorn's 0.1 s
main-loop poll taken out (what the poll itself costs). Then, if strace is installed, which
timeouts the processes' event loops sleep with (`epoll_wait`), over a shorter traced window:
a fixed 1 s loop shows as ~1,000 ms timeouts at 1/s.

`foreign`: the same idle pingr, alternating windows with and without a neighbour pinging
127.0.0.1 at 100/s (`fping -l -p 10`): what other programs' ICMP costs pingr. Each window is
60 s, a whole multiple of every target's period, so each holds the same probes: with 30 s
windows the 60 s target's probe (and the store's write after it) fell into the same half of
every pair, and the ratio measured that probe (2.36x, every pair alike; 0.94x with 60 s
windows), not the neighbour.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench import procstat
from bench.common import heading, median, row
from bench.service import (
    EchoCounter,
    TcpListener,
    bare_app,
    running,
    start_pingr,
    wait_healthy,
    write_config,
)


def idle_targets(tcp_port: int) -> list[dict]:
    return [
        {"type": "tcp", "name": "listener", "host": "127.0.0.1", "port": tcp_port,
         "interval": "30s"},
        {"type": "icmp", "name": "lo2", "host": "127.0.0.2", "interval": "30s"},
        {"type": "icmp", "name": "lo3", "host": "127.0.0.3", "interval": "60s"},
    ]


def _windows(pids: dict[str, int], seconds: float, count: int) -> dict[str, list]:
    out: dict[str, list] = {name: [] for name in pids}
    for _ in range(count):
        start = {name: procstat.sample(pid) for name, pid in pids.items()}
        time.sleep(seconds)
        for name, pid in pids.items():
            out[name].append(procstat.window(start[name], procstat.sample(pid)))
    return out


_EPOLL = re.compile(r"epoll_p?wait2?\(\d+, .*?, \d+, (-?\d+)")


def epoll_timeouts(pid: int, seconds: float) -> tuple[collections.Counter, int]:
    """Trace the process's epoll_wait calls: timeout (ms, bucketed) -> calls, and the total."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        proc = subprocess.Popen(
            ["strace", "-f", "-qq", "-e", "trace=epoll_wait,epoll_pwait,epoll_pwait2",
             "-o", out.name, "-p", str(pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(seconds)
        proc.terminate()
        proc.wait()
        text = Path(out.name).read_text()
    buckets: collections.Counter = collections.Counter()
    total = 0
    for m in _EPOLL.finditer(text):
        ms = int(m.group(1))
        total += 1
        if ms < 0:
            buckets["forever"] += 1
        elif ms == 0:
            buckets["0 (poll)"] += 1
        elif ms <= 150:
            buckets["1-150 ms"] += 1
        elif ms <= 1100:
            buckets["151-1100 ms"] += 1
        elif ms <= 10_000:
            buckets["1.1-10 s"] += 1
        else:
            buckets["> 10 s"] += 1
    return buckets, total


def main(seconds: float = 60, windows: int = 3, warmup: float = 20, trace: float = 20) -> dict:
    heading(f"Idle: `pingr run` with 3 targets at 30-60 s vs an idle bare uvicorn app, "
            f"{windows} windows of {seconds:.0f} s after {warmup:.0f} s")
    listener = TcpListener()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg, port = write_config(Path(tmp), idle_targets(listener.port))
            with running(start_pingr(cfg)) as pingr, bare_app() as (bare, _), \
                    bare_app("notick") as (notick, _):
                wait_healthy(port, pingr)
                time.sleep(warmup)
                pids = {"pingr": pingr.pid, "bare": bare.pid, "notick": notick.pid}
                res = _windows(pids, seconds, windows)
                traced = {}
                if trace and shutil.which("strace"):
                    for name, pid in pids.items():
                        traced[name] = epoll_timeouts(pid, trace)
                probes_ok = listener.accepted
    finally:
        listener.close()
    cpu = {n: median(w.cpu_per_min for w in ws) for n, ws in res.items()}
    wake = {n: median(w.wakeups_per_s for w in ws) for n, ws in res.items()}
    clocks = {w.clock for ws in res.values() for w in ws}
    row("bare uvicorn app (FastAPI, pingr's settings)",
        f"{cpu['bare']:.3f} CPU s/min, {wake['bare']:.1f} wake-ups/s")
    row("  the same without uvicorn's 0.1 s main-loop poll",
        f"{cpu['notick']:.3f} CPU s/min, {wake['notick']:.1f} wake-ups/s")
    row("pingr run, 3 targets at 30-60 s",
        f"{cpu['pingr']:.3f} CPU s/min, {wake['pingr']:.1f} wake-ups/s  (goal <= 0.03 CPU s/min)")
    row("pingr / bare uvicorn",
        f"{cpu['pingr'] / max(cpu['bare'], 1e-9):.1f}x CPU; pingr - bare = "
        f"{cpu['pingr'] - cpu['bare']:.3f} CPU s/min, "
        f"{wake['pingr'] - wake['bare']:.1f} wake-ups/s")
    row("per window, pingr CPU s/min",
        ", ".join(f"{w.cpu_per_min:.3f}" for w in res["pingr"])
        + f"  (clock: {'/'.join(sorted(clocks))}; TCP accepts seen: {probes_ok})")
    for name, (buckets, total) in traced.items():
        parts = ", ".join(f"{k}: {v / trace:.1f}/s" for k, v in sorted(buckets.items()))
        row(f"epoll_wait timeouts, {name} ({trace:.0f} s strace)",
            f"{total / trace:.1f} calls/s ({parts})")
    return {"cpu_per_min": cpu, "wakeups_per_s": wake, "windows": res, "epoll": traced}


def foreign(seconds: float = 60, pairs: int = 3, warmup: float = 20, rate_ms: int = 10) -> dict:
    heading(f"Foreign ICMP: idle `pingr run` with and without a neighbour pinging 127.0.0.1 "
            f"every {rate_ms} ms, {pairs} alternated pairs of {seconds:.0f} s windows")
    if not shutil.which("fping"):
        row("skipped", "fping is not installed (tests/bootstrap.sh installs it)")
        return {}
    listener = TcpListener()
    quiet, busy, sent = [], [], []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg, port = write_config(Path(tmp), idle_targets(listener.port))
            with running(start_pingr(cfg)) as pingr:
                wait_healthy(port, pingr)
                time.sleep(warmup)  # the first ICMP probe has opened the shared socket
                for _ in range(pairs):
                    a = procstat.sample(pingr.pid)
                    time.sleep(seconds)
                    quiet.append(procstat.window(a, procstat.sample(pingr.pid)))
                    counter = EchoCounter({"127.0.0.1"})
                    neighbour = subprocess.Popen(
                        ["fping", "-l", "-q", "-p", str(rate_ms), "127.0.0.1"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    try:
                        time.sleep(1.0)
                        # Every request (the neighbour pings one address 100 times a second:
                        # not one probe sent again).
                        n0, a = counter.count + counter.repeated, procstat.sample(pingr.pid)
                        time.sleep(seconds)
                        b, n1 = procstat.sample(pingr.pid), counter.count + counter.repeated
                    finally:
                        neighbour.terminate()
                        neighbour.wait()
                        counter.close()
                    busy.append(procstat.window(a, b))
                    sent.append((n1 - n0) / (b.at - a.at))
    finally:
        listener.close()
    q, b = median(w.cpu_per_min for w in quiet), median(w.cpu_per_min for w in busy)
    wq, wb = median(w.wakeups_per_s for w in quiet), median(w.wakeups_per_s for w in busy)
    extra = (b - q) / 60 / max(median(sent), 1e-9)
    row("neighbour's echo requests to 127.0.0.1", f"{median(sent):.0f} /s (median window)")
    row("pingr without the neighbour", f"{q:.3f} CPU s/min, {wq:.1f} wake-ups/s")
    row("pingr with the neighbour", f"{b:.3f} CPU s/min, {wb:.1f} wake-ups/s")
    row("ratio with / without",
        f"{b / max(q, 1e-9):.2f}x  (goal <= 1.1x); {extra * 1e6:.0f} us of pingr CPU per "
        "foreign echo reply")
    row("per window, CPU s/min without | with",
        ", ".join(f"{w.cpu_per_min:.3f}" for w in quiet) + " | "
        + ", ".join(f"{w.cpu_per_min:.3f}" for w in busy))
    return {"quiet": quiet, "busy": busy, "rate": sent}


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["foreign"]:
        foreign()
    else:
        main()
