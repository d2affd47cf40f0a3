"""Aggregates the pages show, read from the rollups and kept a little while.

A 30-day uptime of 100 targets sums ~72,000 per-hour rows; a page view must not pay that each
time. Figures are kept for `ttl` seconds; an older figure is served once more while a thread
reads the new one (stale-while-revalidate), so only the very first view waits for the
database. Daily uptime of days gone by never changes: it is read once per UTC day.
All methods may be called from any thread (the pages call them off the event loop).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from pingr.storage.rollup import DAY_MS, HOUR_MS, Totals
from pingr.store import Store

log = logging.getLogger(__name__)

#: The uptime windows every page and the overview API show.
WINDOWS = {"24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400}
#: Sparklines: the last 24 hours, one point per hour (the current hour included).
SPARK_HOURS = 24


def uptime(t: Totals | None) -> float | None:
    """Percentage of successful probes, 3 decimals; None without probes."""
    return round(100.0 * t[1] / t[0], 3) if t and t[0] else None


def avg_latency(t: Totals | None) -> float | None:
    return round(t[3] / t[2], 1) if t and t[2] else None


class _Entry:
    __slots__ = ("value", "at", "refreshing")

    def __init__(self, value: Any, at: float) -> None:
        self.value = value
        self.at = at
        self.refreshing = False


class Stats:
    """Cached reads of the store for the dashboard and the status page."""

    def __init__(self, store: Store, clock_ms: Callable[[], int], ttl: float = 30.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock_ms = clock_ms
        self.ttl = ttl
        self.monotonic = monotonic
        self._entries: dict[Any, _Entry] = {}
        self._lock = threading.Lock()
        #: One reader per figure at a time: two first views do not both read 30 days.
        self._computing: dict[Any, threading.Lock] = {}

    def cached(self, key: Any, compute: Callable[[], Any], ttl: float | None = None) -> Any:
        """The figure under `key`; `ttl` None: the cache's own, inf: never read again."""
        now = self.monotonic()
        ttl = self.ttl if ttl is None else ttl
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                if now - entry.at < ttl or entry.refreshing:
                    return entry.value
                entry.refreshing = True
                threading.Thread(target=self._refresh, args=(key, compute), daemon=True,
                                 name="pingr-web-stats").start()
                return entry.value
            gate = self._computing.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                entry = self._entries.get(key)
            if entry is not None:
                return entry.value
            value = compute()
            with self._lock:
                self._entries[key] = _Entry(value, self.monotonic())
                self._computing.pop(key, None)
            return value

    def _refresh(self, key: Any, compute: Callable[[], Any]) -> None:
        try:
            value = compute()
        except Exception:  # the old figure stays; the next view tries again
            log.exception("reading %s for the dashboard failed", key)
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    entry.refreshing = False
            return
        with self._lock:
            self._entries[key] = _Entry(value, self.monotonic())

    # ------------------------------------------------------------------ figures

    def windows(self) -> dict[str, dict[int, Totals]]:
        """Per window name (24h, 7d, 30d): per target row number, its totals."""
        return self.cached("windows", self._read_windows)

    def _read_windows(self) -> dict[str, dict[int, Totals]]:
        now = self.clock_ms()
        return {name: self.store.window_totals(now - seconds * 1000, None, now)
                for name, seconds in WINDOWS.items()}

    def sparklines(self) -> tuple[int, dict[int, list[tuple[Any, ...]]]]:
        """(start of the first hour, per target row number its hourly buckets)."""
        return self.cached("sparklines", self._read_sparklines)

    def _read_sparklines(self) -> tuple[int, dict[int, list[tuple[Any, ...]]]]:
        now = self.clock_ms()
        start = now - now % HOUR_MS - (SPARK_HOURS - 1) * HOUR_MS
        return start, self.store.history_all(start, now, "hour")

    def daily(self, pks: Iterable[int], days: int) -> dict[int, dict[int, Totals]]:
        """Per target, per UTC day (midnight ms) of the last `days` days (today included)."""
        now = self.clock_ms()
        today = now - now % DAY_MS
        first = today - (days - 1) * DAY_MS
        self._forget_days_but(first, today)
        out = {}
        for pk in pks:
            # Days gone by are final (their results were all in by midnight): read once.
            past = self.cached(("past", pk, first),
                             lambda pk=pk: {d: t for d, t in self.store.daily_uptime(
                                 pk, first).items() if d < today}, ttl=float("inf"))
            current = self.cached(("today", pk, today),
                                lambda pk=pk: self.store.daily_uptime(pk, today))
            out[pk] = {**past, **current}
        return out

    def _forget_days_but(self, first: int, today: int) -> None:
        with self._lock:
            for key in [k for k in self._entries if isinstance(k, tuple) and (
                    k[0] == "past" and k[2] != first or k[0] == "today" and k[2] != today)]:
                del self._entries[key]
