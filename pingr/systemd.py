"""systemd integration without dependencies: sd_notify datagrams and the heartbeat watchdog."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

#: Added to the heartbeat limit for the first probe round, which starts up to `stagger` late.
START_GRACE_SECONDS = 5.0


def notify_address(env: Mapping[str, str]) -> str | bytes | None:
    """The socket address from $NOTIFY_SOCKET: a path, or an abstract name (leading '@')."""
    raw = env.get("NOTIFY_SOCKET", "")
    if not raw:
        return None
    if raw.startswith("@"):
        # Abstract namespace: systemd writes '@', the kernel wants a leading NUL byte.
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    # vsock and other transports are not used on an appliance; ignore rather than guess.
    log.warning("NOTIFY_SOCKET=%r is not a path or abstract socket; not notifying systemd", raw)
    return None


def watchdog_seconds(env: Mapping[str, str], pid: int | None = None) -> float | None:
    """WatchdogSec= as systemd passes it (WATCHDOG_USEC), if it is meant for this process."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    owner = env.get("WATCHDOG_PID", "")
    # A child that inherited the variables must not ping on its parent's behalf.
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", usec)
        return None
    return value / 1_000_000 if value > 0 else None


class Notifier:
    """Sends sd_notify(3) messages; every call is a no-op when not started by systemd."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.address = notify_address(env)
        self.watchdog = watchdog_seconds(env)
        self._sock: socket.socket | None = None
        #: Every message sent, newest last (a short tail; useful in logs and tests).
        self.sent: list[str] = []

    @property
    def enabled(self) -> bool:
        """True when $NOTIFY_SOCKET names a socket we can send to."""
        return self.address is not None

    def send(self, message: str) -> bool:
        """Send one datagram such as "READY=1"; False when not under systemd or it failed."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), self.address)
        except OSError as exc:
            # systemd going away during shutdown is normal; anything else is worth one line.
            log.debug("sd_notify %r failed: %s", message.split("=", 1)[0], exc)
            return False
        self.sent = [*self.sent[-19:], message]
        return True

    def close(self) -> None:
        """Close the socket (a later send opens it again)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Heartbeat:
    """Pings the systemd watchdog only while the scheduler really produces results.

    A plain timer would keep beating while every probe is stuck; instead the ping depends on
    `scheduler.last_beat` (loop time of the last finished probe) being recent relative to the
    shortest enabled interval, and on the monitor not being stale. When the pings stop, systemd
    kills and restarts pingr after WatchdogSec.
    """

    def __init__(self, app: Any, notifier: Notifier, now: Callable[[], float]) -> None:
        self.app = app
        self.notifier = notifier
        self.now = now
        self.started = now()
        self.healthy = True

    def limit_seconds(self) -> float | None:
        """How old the last probe may be while still healthy; None with no enabled targets."""
        specs = [t.spec for t in self.app.targets.values() if t.enabled]
        if not specs:
            return None
        shortest = min(float(s.interval_seconds) for s in specs)
        longest_timeout = max(s.timeout_ms for s in specs) / 1000
        return self.app.monitor.stale_factor * shortest + longest_timeout

    def check(self) -> tuple[bool, str]:
        """(healthy, why) right now."""
        limit = self.limit_seconds()
        if limit is None:
            return True, "no enabled targets"
        if self.app.monitor.stale:
            return False, "the monitor is stale"
        last = self.app.scheduler.last_beat
        if last:
            age = self.now() - last
            if age > limit:
                return False, f"the last probe finished {age:.0f}s ago (limit {limit:.0f}s)"
            return True, "probes are finishing"
        # No probe finished yet: allow one limit plus the start-up stagger.
        age = self.now() - self.started
        stagger = float(getattr(self.app.config.scheduler, "stagger", 0) or 0)
        if age > limit + stagger + START_GRACE_SECONDS:
            return False, f"no probe has finished in the {age:.0f}s since start"
        return True, "starting"

    def tick(self) -> bool:
        """Called once a second: send WATCHDOG=1 if healthy; True when a ping was sent."""
        healthy, why = self.check()
        if healthy != self.healthy:
            self.healthy = healthy
            if healthy:
                log.info("heartbeat recovered (%s); pinging the systemd watchdog again", why)
            else:
                log.error("heartbeat lost: %s; not pinging the systemd watchdog%s", why,
                          f", systemd restarts pingr within {self.notifier.watchdog:.0f}s"
                          if self.notifier.watchdog else "")
        if not healthy or self.notifier.watchdog is None:
            return False
        return self.notifier.send("WATCHDOG=1")
