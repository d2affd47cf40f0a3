"""Repeated log records are written once per interval with a count, never one (or one traceback)
per event: a flood of failing accepts or connections must not fill an SD card with logs."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

#: Records with the same logger, level and message template are one "kind" for this long.
INTERVAL = 60.0
#: Kinds remembered at most (the oldest are forgotten: a forgotten kind just logs again).
MAX_KINDS = 256


class RepeatFilter(logging.Filter):
    """A logging filter: the first record of a kind passes (with its traceback); the next ones
    within `interval` are counted, not written; the first one after it passes without a
    traceback, saying how many were held back."""

    def __init__(self, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        #: kind -> (when it was last written, how many were held back since)
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        with self._lock:
            last = self._seen.get(kind)
            if last is not None and now - last[0] < self.interval:
                self._seen[kind] = (last[0], last[1] + 1)
                self.suppressed += 1
                return False
            held = last[1] if last is not None else 0
            self._seen.pop(kind, None)
            self._seen[kind] = (now, 0)
            while len(self._seen) > MAX_KINDS:
                self._seen.pop(next(iter(self._seen)))
        if held:
            # The same thing again: the count says how often, one traceback was enough.
            record.msg = f"{record.msg} (repeated {held} more times in the last " \
                         f"{self.interval:.0f}s)"
            record.exc_info = None
            record.exc_text = None
            record.stack_info = None
        return True


#: Loggers whose records can come once per connection or per accept: uvicorn's ("Invalid HTTP
#: request received", "Exception in ASGI application") and asyncio's (accept() failing with
#: "Too many open files", "socket.send() raised exception"), and the connection cap's own.
FLOOD_LOGGERS = ("uvicorn", "uvicorn.error", "asyncio", "pingr.httpconns")


def install(interval: float = INTERVAL, names: tuple[str, ...] = FLOOD_LOGGERS) -> RepeatFilter:
    """Attach one RepeatFilter to each named logger (idempotent) and return it."""
    for name in names:
        logger = logging.getLogger(name)
        for f in logger.filters:
            if isinstance(f, RepeatFilter):
                return f
    shared = RepeatFilter(interval)
    for name in names:
        logging.getLogger(name).addFilter(shared)
    return shared
