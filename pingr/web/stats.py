"""Aggregates the pages show, read from the rollups with as little reading (and memory) as
their windows allow.

A 30-day uptime of 100 targets is ~72,000 per-hour rows; a 90-day status page ~216,000. Days
that ended more than a day ago never change, so they are read once per UTC day, in one scan
for every target, into a small ledger (four numbers per target and day), and the page cache
that scan filled is handed back. Everything else (the last 24 hours, yesterday and today, the
partial first day of a window) is a few thousand recent rows, re-read at most every `ttl`
seconds: an older figure is served once more while the new one is read after the page
(stale-while-revalidate), so only the first view after start waits for the database.

Every read runs on one worker thread (`executor`), the one that renders the pages: pages never
run on the event loop, and never more than one at a time (a Pi Zero has other work to do).
"""

from __future__ import annotations

import logging
import threading
import time
from array import array
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import Any

from pingr.storage.rollup import DAY_MS, HOUR_MS, Totals, combine
from pingr.store import Store
from pingr.web.render import give_back_memory

log = logging.getLogger(__name__)

#: The uptime windows every page and the overview API show.
WINDOWS = {"24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400}
#: Sparklines: the last 24 hours, one point per hour (the current hour included).
SPARK_HOURS = 24
#: Numbers kept per target and day (or hour): count, successes, lat_count, lat_sum.
WIDTH = 4
#: Days read per query when the ledger is filled.
LEDGER_CHUNK = 10


def uptime(t: Totals | tuple[int, ...] | None) -> float | None:
    """Percentage of successful probes, 3 decimals; None without probes."""
    return round(100.0 * t[1] / t[0], 3) if t and t[0] else None


def avg_latency(t: Totals | tuple[int, ...] | None) -> float | None:
    return round(t[3] / t[2], 1) if t and t[2] else None


def _totals(values: Iterable[int]) -> Totals:
    c, ok, n, s = values
    return (c, ok, n, s, None, None)


class _Entry:
    __slots__ = ("value", "at", "refreshing")

    def __init__(self, value: Any, at: float) -> None:
        self.value = value
        self.at = at
        self.refreshing = False


class Stats:
    """Cached reads of the store for the dashboard, the status page and their API."""

    def __init__(self, store: Store, clock_ms: Callable[[], int], executor: Executor, *,
                 ledger_days: int = 30, ttl: float = 30.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock_ms = clock_ms
        self.executor = executor
        self.ledger_days = ledger_days
        self.ttl = ttl
        self.monotonic = monotonic
        self._entries: dict[Any, _Entry] = {}
        self._lock = threading.Lock()

    def cached(self, key: Any, compute: Callable[[], Any], ttl: float | None = None) -> Any:
        """The figure under `key`, read now if there is none; when it is older than `ttl`
        (default: the cache's; inf: never re-read) it is served once more and re-read after."""
        now = self.monotonic()
        ttl = self.ttl if ttl is None else ttl
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and (now - entry.at < ttl or entry.refreshing):
                return entry.value
            if entry is not None:
                entry.refreshing = True
        if entry is not None:
            self.executor.submit(self._refresh, key, compute)
            return entry.value
        value = compute()
        with self._lock:
            self._entries[key] = _Entry(value, self.monotonic())
        return value

    def _refresh(self, key: Any, compute: Callable[[], Any]) -> None:
        try:
            value = compute()
        except Exception:  # the old figure stays; a later view tries again
            log.exception("reading %s for the dashboard failed", key)
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    entry.refreshing = False
            return
        with self._lock:
            self._entries[key] = _Entry(value, self.monotonic())

    def _drop_days_before(self, today: int) -> None:
        with self._lock:
            for key in [k for k in self._entries if isinstance(k, tuple) and k[1] != today]:
                del self._entries[key]

    # ------------------------------------------------------------------ days

    def _ledger(self, today: int) -> tuple[int, dict[int, array]]:
        """(first day, per target row number its days up to the day before yesterday)."""

        def read() -> tuple[int, dict[int, array]]:
            first = today - (self.ledger_days - 1) * DAY_MS
            ledger: dict[int, array] = {}
            # A few days per query: what a query returns is held at once, then dropped.
            for lo in range(first, today - DAY_MS, LEDGER_CHUNK * DAY_MS):
                hi = min(lo + LEDGER_CHUNK * DAY_MS, today - DAY_MS)
                for pk, days in self.store.daily_all(lo, hi, lean=True).items():
                    values = ledger.get(pk)
                    if values is None:
                        values = ledger[pk] = array("q", bytes(8 * WIDTH * self.ledger_days))
                    for day, t in days.items():
                        i = (day - first) // DAY_MS * WIDTH
                        values[i:i + WIDTH] = array("q", t[:WIDTH])
            give_back_memory()
            return first, ledger

        self._drop_days_before(today)
        return self.cached(("ledger", today), read, ttl=float("inf"))

    def _recent(self, today: int) -> dict[int, dict[int, Totals]]:
        """Yesterday and today, per target (re-read every `ttl`)."""
        return self.cached(("recent", today),
                           lambda: self.store.daily_all(today - DAY_MS, lean=True))

    def daily(self, pks: Iterable[int], days: int) -> dict[int, dict[int, Totals]]:
        """Per target, per UTC day (midnight ms) of the last `days` days, today included."""
        now = self.clock_ms()
        today = now - now % DAY_MS
        first, ledger = self._ledger(today)
        recent = self._recent(today)
        start = today - (days - 1) * DAY_MS
        out: dict[int, dict[int, Totals]] = {}
        for pk in pks:
            per_day: dict[int, Totals] = {}
            values = ledger.get(pk)
            for day in range(max(start, first), today - DAY_MS, DAY_MS):
                i = (day - first) // DAY_MS * WIDTH
                if values is not None and values[i]:
                    per_day[day] = _totals(values[i:i + WIDTH])
            per_day.update(recent.get(pk, {}))
            out[pk] = per_day
        return out

    # ------------------------------------------------------------------ windows

    def windows(self) -> dict[str, dict[int, Totals]]:
        """Per window name (24h, 7d, 30d): per target row number, its totals."""
        return self.cached("windows", self._read_windows)

    def _read_windows(self) -> dict[str, dict[int, Totals]]:
        now = self.clock_ms()
        today = now - now % DAY_MS
        first, ledger = self._ledger(today)
        recent = self.store.daily_all(today - DAY_MS, lean=True)
        out = {"24h": self.store.window_totals(now - WINDOWS["24h"] * 1000, None, now,
                                               lean=True)}
        for name in ("7d", "30d"):
            since = now - WINDOWS[name] * 1000
            next_day = since - since % DAY_MS + DAY_MS
            # The first day counts from the hour after `since` (as GET /summary, whose
            # per-minute rows of that day are gone by now).
            first_hour = -(-since // HOUR_MS) * HOUR_MS
            parts: list[dict[int, Totals]] = [{
                pk: combine([{0: (b[1], b[2], b[3], b[4], None, None)} for b in rows])[0]
                for pk, rows in self.store.history_all(first_hour, next_day - 1, "hour",
                                                         lean=True).items()
            }]
            lo = (next_day - first) // DAY_MS * WIDTH
            hi = (today - DAY_MS - first) // DAY_MS * WIDTH
            for pk, values in ledger.items():
                sums = [sum(values[lo + j:hi:WIDTH]) for j in range(WIDTH)]
                if sums[0]:
                    parts.append({pk: _totals(sums)})
            for pk, days in recent.items():  # yesterday and today
                parts += [{pk: t} for day, t in days.items() if day >= next_day]
            out[name] = combine(parts)
        return out

    # ------------------------------------------------------------------ sparklines

    def sparklines(self) -> tuple[int, dict[int, array]]:
        """(start of the first hour, per target row number its hours: WIDTH numbers each)."""
        return self.cached("sparklines", self._read_sparklines)

    def _read_sparklines(self) -> tuple[int, dict[int, array]]:
        now = self.clock_ms()
        start = now - now % HOUR_MS - (SPARK_HOURS - 1) * HOUR_MS
        out: dict[int, array] = {}
        for pk, rows in self.store.history_all(start, now, "hour", lean=True).items():
            values = out[pk] = array("q", bytes(8 * WIDTH * SPARK_HOURS))
            for b in rows:
                i = (b[0] - start) // HOUR_MS * WIDTH
                values[i:i + WIDTH] = array("q", b[1:1 + WIDTH])
        return start, out


def buckets(start: int, values: array | None, size: int, n: int) -> list[tuple | None]:
    """Chart buckets (start, count, successes, lat_count, lat_sum, None, None) from a row of
    `n` periods of WIDTH numbers; None where nothing was probed."""
    out: list[tuple | None] = []
    for i in range(n):
        if values is None or not values[i * WIDTH]:
            out.append(None)
            continue
        c, ok, ln, ls = values[i * WIDTH:(i + 1) * WIDTH]
        out.append((start + i * size, c, ok, ln, ls, None, None))
    return out
