"""Exact sliding-window limits: accepted requests per API key, failed authentications per address.

"120 requests per minute" means what a client reads into it: never more than 120 accepted in
any 60-second window. A token bucket does not keep that promise (a full bucket's burst plus
its refill let a fresh key through 239 times in its first minute); a log of the times of the
last `limit` accepted requests does, exactly: a request is accepted when the `limit`-th most
recent acceptance is at least `period` seconds old. The log is a ring of `limit` floats
(8 bytes each) per key or address, so memory is known in advance.
"""

from __future__ import annotations

import math
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

#: Addresses whose failed authentications are being counted (not yet blocked) are kept up to
#: this many; past it the least recently seen partial counts are forgotten. Blocked addresses
#: are never forgotten before their block ends (see FailureWindow).
MAX_ENTRIES = 20_000


@dataclass(slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    #: Whole seconds until the window has room for a full burst of `limit` again.
    reset: int
    #: Whole seconds until one more request would be accepted (0 when this one was).
    retry_after: int


class Ring:
    """The times of the last `size` events, oldest first when read.

    Its storage grows with use, doubling up to `size`: a key allowed 100,000 requests a minute
    that makes ten does not hold 800 KB of empty slots."""

    __slots__ = ("times", "start", "count", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.times = array("d", bytes(8 * min(size, 16)))
        self.start = 0
        self.count = 0

    def expire(self, before: float) -> None:
        """Forget events that happened at or before `before`."""
        cap = len(self.times)
        while self.count and self.times[self.start] <= before:
            self.start = (self.start + 1) % cap
            self.count -= 1

    def add(self, t: float) -> None:
        cap = len(self.times)
        if self.count == cap:
            if cap < self.size:  # grow: the events in order, then room up to twice as many
                ordered = self.times[self.start:] + self.times[:self.start]
                cap = min(self.size, 2 * cap)
                ordered.extend(array("d", bytes(8 * (cap - len(ordered)))))
                self.times, self.start = ordered, 0
            else:  # full: the oldest leaves
                self.start = (self.start + 1) % cap
                self.count -= 1
        self.times[(self.start + self.count) % cap] = t
        self.count += 1

    @property
    def oldest(self) -> float:
        return self.times[self.start]

    @property
    def newest(self) -> float:
        return self.times[(self.start + self.count - 1) % len(self.times)]


def _seconds(delta: float) -> int:
    """Whole seconds to wait for `delta` to pass (rounded up, never negative)."""
    return max(0, math.ceil(delta - 1e-9))


class SlidingWindow:
    """At most `limit` accepted requests per key in any `period`-second window.

    A key's log is dropped once all its entries are older than the period (it would accept a
    full burst anyway), so memory follows the keys active in the last period. Callers pass
    keys from a bounded set (the ids of existing API keys).
    """

    def __init__(self, limit: int, period: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.period = period
        self.clock = clock
        self._logs: OrderedDict[Hashable, Ring] = OrderedDict()
        self._prune_at = 64

    def hit(self, key: Hashable) -> Decision:
        now = self.clock()
        logs = self._logs
        log = logs.get(key)
        if log is None:
            if len(logs) >= self._prune_at:
                self._prune(now)
            log = logs[key] = Ring(self.limit)
        else:
            logs.move_to_end(key)  # most recently used last: _prune looks at the front
        log.expire(now - self.period)
        allowed = log.count < self.limit
        if allowed:
            log.add(now)
        retry = 0 if allowed else _seconds(log.oldest + self.period - now)
        reset = _seconds(log.newest + self.period - now) if log.count else 0
        return Decision(allowed, self.limit, self.limit - log.count, reset, retry)

    def _prune(self, now: float) -> None:
        """Drop the logs of keys idle for a whole period (amortized: when the table doubled)."""
        # Least recently used first: once one is still live, the ones after it are too.
        while self._logs:
            key, log = next(iter(self._logs.items()))
            if log.count and log.newest > now - self.period:
                break
            del self._logs[key]
        self._prune_at = max(64, 2 * len(self._logs))

    def __len__(self) -> int:
        return len(self._logs)


class TokenBucket:
    """`limit` requests per `period`, refilled continuously (the heartbeat endpoints' limits,
    where a burst plus refill is fine and addresses are many: least recently seen forgotten).

    Precision: refill is computed from a float monotonic clock at each request, so a client
    can burst `limit` requests at once and then one every period/limit seconds.
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
    """At most `limit` failed authentications per address in any `period`-second window.

    An address with `limit` failures in the last period is blocked, valid key or not, until
    the oldest of them is `period` old; then it may fail once more, and so on. Requests refused
    while blocked are not evaluated, so they do not count.

    Blocked addresses live in their own table that is never trimmed by size: forgetting one
    would lift its block early. Each entry there cost its address `limit` failed requests in
    the last period, so the table is bounded by the request rate (rate × period / limit).
    Addresses still being counted are kept up to `max_entries`, least recently seen forgotten
    first (an attacker with that many addresses already has that many budgets).
    """

    def __init__(self, limit: int, period: float = 60.0,
                 clock: Callable[[], float] = time.monotonic,
                 max_entries: int = MAX_ENTRIES) -> None:
        self.limit = limit
        self.period = period
        self.clock = clock
        self.max_entries = max_entries
        self._counting: OrderedDict[str, Ring] = OrderedDict()
        self._blocked: OrderedDict[str, Ring] = OrderedDict()

    def blocked_for(self, addr: str) -> int:
        """Whole seconds this address must wait, 0 when it may try."""
        log = self._blocked.get(addr)
        if log is None:
            return 0
        left = log.oldest + self.period - self.clock()
        if left > 0:
            return _seconds(left)
        # The block is over: back to counting, with its history (it may fail once more now).
        del self._blocked[addr]
        self._count(addr, log)
        return 0

    def fail(self, addr: str) -> None:
        """Record one failed authentication from `addr`."""
        now = self.clock()
        self._release(now)
        log = self._counting.pop(addr, None) or self._blocked.pop(addr, None) or Ring(self.limit)
        log.expire(now - self.period)
        log.add(now)
        if log.count >= self.limit:
            self._blocked[addr] = log
        else:
            self._count(addr, log)

    def _count(self, addr: str, log: Ring) -> None:
        self._counting[addr] = log
        while len(self._counting) > self.max_entries:
            self._counting.popitem(last=False)

    def _release(self, now: float) -> None:
        """Drop ended blocks from the front of the blocked table (blocked in time order, so
        its front ends first, give or take the spread of each address's failures)."""
        while self._blocked:
            addr, log = next(iter(self._blocked.items()))
            if log.oldest + self.period > now:
                return
            del self._blocked[addr]
            self._count(addr, log)  # with its history: the window still holds the rest

    @property
    def blocked(self) -> int:
        """How many addresses are blocked right now (or were, until their next request)."""
        return len(self._blocked)

    def __len__(self) -> int:
        return len(self._counting) + len(self._blocked)
