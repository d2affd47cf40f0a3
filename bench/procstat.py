"""What another process costs, read from /proc: CPU (ns and ticks), wake-ups, RSS.

Two CPU clocks, because each misses something:

- `sched_ns`: the sum over the process's live threads of `/proc/<pid>/task/<tid>/schedstat`'s
  first field (time on a CPU, in nanoseconds). Exact, so it can resolve an idle process's few
  milliseconds a minute, but a thread that exited takes its time with it.
- `ticks`: `/proc/<pid>/stat` utime + stime, which keeps exited threads' time (simplemonitor
  starts a thread pool per round) but counts in 10 ms clock ticks.

`Window.cpu` uses `sched_ns` when the same threads were alive at both ends of the window and
falls back to the ticks otherwise (and says so in `Window.clock`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

TICK = 1 / os.sysconf("SC_CLK_TCK")


def _threads(pid: int) -> list[str]:
    try:
        return sorted(os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        return []


def _status(path: str) -> dict[str, str]:
    out = {}
    for line in Path(path).read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


@dataclass
class Sample:
    at: float  # time.monotonic()
    tids: tuple[str, ...]
    sched_ns: int
    ticks: int
    voluntary: int  # context switches where a thread blocked (i.e. went to sleep): wake-ups
    involuntary: int
    rss: int  # bytes


def sample(pid: int) -> Sample:
    tids = _threads(pid)
    sched = vol = invol = 0
    live = []
    for tid in tids:
        try:
            sched += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
            st = _status(f"/proc/{pid}/task/{tid}/status")
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread exited while we read
        vol += int(st["voluntary_ctxt_switches"])
        invol += int(st["nonvoluntary_ctxt_switches"])
        live.append(tid)
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    rss = int(_status(f"/proc/{pid}/status")["VmRSS"].split()[0]) * 1024
    return Sample(time.monotonic(), tuple(live), sched, ticks, vol, invol, rss)


@dataclass
class Window:
    seconds: float
    cpu: float  # CPU seconds over the window
    clock: str  # "schedstat" (ns, live threads) or "ticks" (10 ms, threads that exited too)
    wakeups: int  # voluntary context switches of the live threads

    @property
    def cpu_per_min(self) -> float:
        return self.cpu / self.seconds * 60

    @property
    def share(self) -> float:
        """Share of one core."""
        return self.cpu / self.seconds

    @property
    def wakeups_per_s(self) -> float:
        return self.wakeups / self.seconds


def window(a: Sample, b: Sample) -> Window:
    seconds = b.at - a.at
    if a.tids == b.tids:
        return Window(seconds, (b.sched_ns - a.sched_ns) / 1e9, "schedstat",
                      b.voluntary - a.voluntary)
    return Window(seconds, (b.ticks - a.ticks) * TICK, "ticks", b.voluntary - a.voluntary)


def ticks_window(a: Sample, b: Sample) -> Window:
    """The same window on the tick clock, whatever the threads did."""
    return Window(b.at - a.at, (b.ticks - a.ticks) * TICK, "ticks", b.voluntary - a.voluntary)
