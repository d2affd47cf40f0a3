"""systemd integration without dependencies: sd_notify datagrams (READY, STOPPING, WATCHDOG)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


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


class SdNotify:
    """Sends sd_notify(3) messages; every call is a no-op when not started by systemd."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.address = notify_address(env)
        self.watchdog = watchdog_seconds(env)
        self._sock: socket.socket | None = None

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
        return True

    def close(self) -> None:
        """Close the socket (a later send opens it again)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
