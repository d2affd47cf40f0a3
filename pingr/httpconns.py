"""Bounded HTTP connections: a header timeout (slowloris), a cap on open connections (idle
sockets cannot exhaust file descriptors) and a share of descriptors kept for the probes.

About 1,000 idle sockets used to take every descriptor: the API stopped answering and probes
failed with "Too many open files", so healthy targets went DOWN.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import OrderedDict
from email.utils import formatdate
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

#: What a refused connection is told before it is closed (the API's error body: error + detail).
_BUSY_BODY = (b'{"error": "Too many connections; try again.", '
              b'"detail": "Too many connections; try again."}\n')
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
         b"retry-after: 1\r\nconnection: close\r\ncontent-length: "
         + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY)


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise this process's soft open-file limit towards its hard limit; return the soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d: %s", soft, exc)
    return soft if soft != resource.RLIM_INFINITY else wanted


def connection_plan(configured: int, fd_limit: int) -> tuple[int, int]:
    """(connections allowed, listen backlog) for `fd_limit` descriptors.

    Half the descriptors are for probes, the database, MQTT and notifications. asyncio accepts
    up to `backlog` sockets in one go before any of them is seen (and an older idle one
    closed), so the cap leaves room for two such batches (one accepted, one closing)."""
    backlog = max(8, min(128, fd_limit // 8))
    return max(4, min(configured, fd_limit // 2 - 2 * backlog)), backlog


class Tracker:
    """The open connections of one server, oldest first, and what was closed or refused."""

    def __init__(self, cap: int, header_timeout: float) -> None:
        self.cap = cap
        self.header_timeout = header_timeout
        self.open: OrderedDict[int, BoundedH11] = OrderedDict()
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0

    def admit(self, conn: BoundedH11) -> bool:
        """Make room for `conn`: close the oldest idle connection when at the cap (one that
        never completed a request first, then an idle keep-alive one); False when all are
        busy, and `conn` is to be refused."""
        if len(self.open) >= self.cap:
            victim = (next((c for c in self.open.values() if c.idle and not c.served), None)
                      or next((c for c in self.open.values() if c.idle), None))
            if victim is None:
                self.refused += 1
                log.warning("connection limit (%d) reached and every connection is busy: "
                            "refusing new ones", self.cap)
                return False
            self.evicted += 1
            log.warning("connection limit (%d) reached: closing the oldest idle connections",
                        self.cap)
            victim.drop()
        self.open[id(conn)] = conn
        return True

    def remove(self, conn: BoundedH11) -> None:
        self.open.pop(id(conn), None)


def fresh_date(server_state: Any, config: Any) -> None:
    """Keep the Date header current for the request being read (uvicorn refreshes it from a
    timer that wakes ten times a second; pingr.server stops that timer). Once per second of
    traffic: a comparison per request otherwise."""
    second = int(time.time())
    if second != getattr(server_state, "pingr_date_second", None):
        server_state.pingr_date_second = second
        date = [(b"date", formatdate(second, usegmt=True).encode())]
        server_state.default_headers = date + config.encoded_headers


def protocol_class(tracker: Tracker) -> type[BoundedH11]:
    """uvicorn's `http=` protocol class for one server (uvicorn builds it with keywords it owns,
    so the tracker rides on a subclass)."""
    return type("PingrH11", (BoundedH11,), {"tracker": tracker})


class BoundedH11(H11Protocol):
    """uvicorn's h11 protocol with a header timeout and a place in the Tracker."""

    tracker: Tracker

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._closed = False
        #: True once a response was sent on this connection (a keep-alive client).
        self.served = False

    @property
    def idle(self) -> bool:
        """No request being handled: waiting for (the rest of) a request head."""
        return self.cycle is None or self.cycle.response_complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.tracker.admit(self):
            self._closed = True
            self.connections.discard(self)
            try:
                transport.write(_BUSY)
            finally:
                transport.close()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        fresh_date(self.server_state, self.config)
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE or self.conn.our_state is not h11.IDLE:
            self._disarm()  # a whole request head arrived; the app and keep-alive take over

    def on_response_complete(self) -> None:
        self.served = True
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request head must come in time too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.tracker.remove(self)
        if self._closed and self.cycle is None:
            self.connections.discard(self)
            return
        super().connection_lost(exc)

    def drop(self) -> None:
        """Close this idle connection (to make room, or past the header timeout)."""
        self._disarm()
        self.tracker.remove(self)
        if not self.transport.is_closing():
            self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.tracker.header_timeout, self._timeout)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _timeout(self) -> None:
        self._header_timer = None
        if self.idle:
            self.tracker.timed_out += 1
            self.drop()
