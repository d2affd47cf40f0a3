"""Bytes this process writes to storage (from /proc/self/io), as a total and a daily rate."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

#: One sample kept per this many seconds; 24 h of them is under 300 entries.
SAMPLE_EVERY = 300.0
WINDOW = 86400.0
#: Below this much observed time a daily rate would be mostly start-up noise.
MIN_SPAN = 60.0


def read_proc_io(path: str = "/proc/self/io") -> int | None:
    """Bytes sent to the storage layer (write_bytes minus cancelled_write_bytes), or None.

    This is what reaches the block device, after the page cache merged rewrites of the same
    page; it counts every file the process writes (database, WAL, logs), not sockets.
    """
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    try:
        return int(fields["write_bytes"]) - int(fields.get("cancelled_write_bytes", 0))
    except (KeyError, ValueError):
        return None


class WriteMeter:
    """Samples the process's write counter and reports bytes written per day over the last day."""

    def __init__(self, read: Callable[[], int | None] = read_proc_io,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.read = read
        self.clock = clock
        first = read()
        self.available = first is not None
        self.start = (clock(), first or 0)
        self.samples: deque[tuple[float, int]] = deque([self.start])

    def sample(self) -> int | None:
        """Read the counter now; return the bytes written since start (None if unavailable)."""
        if not self.available:
            return None
        value = self.read()
        if value is None:
            return None
        now = self.clock()
        if now - self.samples[-1][0] >= SAMPLE_EVERY:
            self.samples.append((now, value))
            while len(self.samples) > 2 and now - self.samples[1][0] >= WINDOW:
                self.samples.popleft()
        self._last = (now, value)
        return value - self.start[1]

    def per_day(self) -> int | None:
        """Bytes per day, measured over up to the last 24 h; None before a minute has passed."""
        if self.sample() is None:
            return None
        now, value = self._last
        then, before = self.samples[0]
        if now - then < MIN_SPAN:
            return None
        return round((value - before) * 86400.0 / (now - then))
