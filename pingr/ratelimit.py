"""Token buckets per API key and failed-authentication windows per client address."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

#: Entries kept per limiter. At ~200 bytes each this caps a limiter near 4 MB even when
#: requests arrive from 100,000 distinct addresses; the least recently seen are forgotten.
MAX_ENTRIES = 20_000


@dataclass(slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # seconds until the bucket is full again
    retry_after: int  # seconds until one more request is allowed (0 when allowed)


class TokenBucket:
    """`limit` requests per `period`, refilled continuously.

    Precision: refill is computed from a float monotonic clock at each request, so a client
    can burst `limit` requests at once and then one every period/limit seconds; there is no
    fixed-window edge where it could get twice the limit.
    """

    def __init__(self, limit: int, period: float = 60.0,
                 clock: Callable[[], float] = time.monotonic,
                 max_entries: int = MAX_ENTRIES) -> None:
        self.limit = limit
        self.rate = limit / period
        self.clock = clock
        self.max_entries = max_entries
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def hit(self, key: Hashable) -> Decision:
        now = self.clock()
        tokens, last = self._buckets.pop(key, (float(self.limit), now))
        tokens = min(float(self.limit), tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_entries:
            self._buckets.popitem(last=False)  # a forgotten bucket is a full one: no harm
        retry = 0 if allowed else math.ceil((1.0 - tokens) / self.rate)
        reset = math.ceil((self.limit - tokens) / self.rate)
        return Decision(allowed, self.limit, int(tokens), reset, retry)

    def __len__(self) -> int:
        return len(self._buckets)


class FailureWindow:
    """Counts failed authentications per address in a fixed window and blocks past `limit`.

    The window starts at an address's first failure; once the limit is reached every request
    from that address is refused until the window ends, valid key or not.
    """

    def __init__(self, limit: int, period: float = 60.0,
                 clock: Callable[[], float] = time.monotonic,
                 max_entries: int = MAX_ENTRIES) -> None:
        self.limit = limit
        self.period = period
        self.clock = clock
        self.max_entries = max_entries
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def blocked_for(self, addr: str) -> int:
        """Seconds this address must wait, 0 when it may try."""
        entry = self._windows.get(addr)
        if entry is None:
            return 0
        start, count = entry
        left = start + self.period - self.clock()
        if left <= 0:
            del self._windows[addr]
            return 0
        return math.ceil(left) if count >= self.limit else 0

    def fail(self, addr: str) -> None:
        now = self.clock()
        start, count = self._windows.pop(addr, (now, 0))
        if now - start >= self.period:
            start, count = now, 0
        self._windows[addr] = (start, count + 1)
        while len(self._windows) > self.max_entries:
            self._windows.popitem(last=False)

    def __len__(self) -> int:
        return len(self._windows)
