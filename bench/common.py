"""Shared helpers: process I/O counters, CPU times, free ports, medians, printing."""

from __future__ import annotations

import os
import resource
import socket
import statistics
import time
from collections.abc import Iterable
from pathlib import Path


def proc_io(pid: int | str = "self") -> dict[str, int]:
    """The /proc/<pid>/io counters (wchar: bytes handed to write(); write_bytes: to the disk)."""
    text = Path(f"/proc/{pid}/io").read_text()
    return {k: int(v) for k, v in (line.split(": ") for line in text.splitlines())}


def cpu_self() -> float:
    """User + system CPU seconds of this process."""
    t = os.times()
    return t.user + t.system


def cpu_children() -> float:
    """User + system CPU seconds of waited-for children."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def heading(title: str) -> None:
    print(f"\n== {title}", flush=True)


def row(label: str, value: str) -> None:
    print(f"  {label:<48} {value}", flush=True)
