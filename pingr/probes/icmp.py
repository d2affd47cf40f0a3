"""ICMP echo probe (icmplib): privileged raw socket when allowed, else the unprivileged kind."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import struct
import time
import weakref

from icmplib import async_ping
from icmplib.exceptions import ICMPLibError

from pingr.models import Result, Target
from pingr.probes.context import ProbeContext

log = logging.getLogger(__name__)


class IcmpUnavailable(RuntimeError):
    """Neither raw nor unprivileged ICMP sockets can be opened."""


def detect_mode() -> bool:
    """Return True for privileged (raw) ICMP, False for unprivileged datagram ICMP.

    Raises IcmpUnavailable naming both fixes when neither works.
    """
    for privileged, kind in ((True, socket.SOCK_RAW), (False, socket.SOCK_DGRAM)):
        try:
            socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP).close()
            return privileged
        except OSError:
            continue
    raise IcmpUnavailable(
        "ICMP probes cannot open a socket. Either give pingr CAP_NET_RAW "
        "(AmbientCapabilities=CAP_NET_RAW in its systemd unit, or "
        "`setcap cap_net_raw+ep` on the Python binary), or allow unprivileged ping for its "
        "group: `sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"` "
        "(systemd/99-pingr-ping.conf does this)."
    )


#: Linux's SO_TIMESTAMPNS (the "old" one: a native struct timespec, also on 32-bit Pis);
#: Python's socket module does not name it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.calcsize("@ll")


class Dispatcher:
    """One IPv4 ICMP socket per event loop shared by every probe, replies matched by sequence.

    Why: icmplib opens a socket per probe, and every raw ICMP socket receives a copy of every
    ICMP packet on the host, so 100 probes in flight cost 100 wake-ups per reply and replies
    queue behind each other (measured: p50 52 ms on loopback for 1,000 targets). Here a reply
    costs one recv, and its arrival time comes from the kernel (SO_TIMESTAMPNS), so a busy
    event loop cannot inflate the measured RTT.
    """

    def __init__(self, privileged: bool) -> None:
        self.privileged = privileged
        kind = socket.SOCK_RAW if privileged else socket.SOCK_DGRAM
        self.sock = socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP)
        self.sock.setblocking(False)
        # Kernel receive timestamps and big buffers are refinements: where a kernel (or an
        # emulator such as qemu-user) lacks an option, replies are timed on arrival instead.
        self._try_option(SO_TIMESTAMPNS, 1)
        # Room for a burst of replies; the forced size needs CAP_NET_ADMIN.
        if not self._try_option(33, 4 << 20):  # SO_RCVBUFFORCE
            self._try_option(socket.SO_RCVBUF, 4 << 20)
        self._try_option(socket.SO_SNDBUF, 1 << 20)
        self.ident = os.getpid() & 0xFFFF
        self.seq = 0
        self.waiting: dict[int, tuple[asyncio.Future[int], int]] = {}
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.sock.fileno(), self._readable)

    def _try_option(self, option: int, value: int) -> bool:
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, option, value)
            return True
        except OSError as exc:
            log.debug("ICMP socket option %d is not available: %s", option, exc)
            return False

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()

    async def ping(self, address: str, timeout: float) -> int:
        """RTT in nanoseconds. Raises OSError (send failed) or TimeoutError (no reply)."""
        seq = self.seq
        while seq in self.waiting:
            seq = (seq + 1) & 0xFFFF
        self.seq = (seq + 1) & 0xFFFF
        payload = b"pingr-echo-16byt"
        header = struct.pack("!BBHHH", 8, 0, 0, self.ident, seq)
        packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), self.ident, seq) + payload
        future: asyncio.Future[int] = self.loop.create_future()
        sent = time.time_ns()  # same clock as the kernel's receive timestamp
        self.waiting[seq] = (future, sent)
        try:
            try:
                self.sock.sendto(packet, (address, 0))
            except BlockingIOError:
                # Send buffer full: the time spent waiting for room is not network time.
                await self.loop.sock_sendto(self.sock, packet, (address, 0))
                self.waiting[seq] = (future, time.time_ns())
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self.waiting.pop(seq, None)

    def _readable(self) -> None:
        while True:
            try:
                data, ancdata, _, _ = self.sock.recvmsg(2048, socket.CMSG_SPACE(_TIMESPEC))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error queued on the socket; the probe times out
                continue
            arrived = time.time_ns()
            for level, kind, value in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("@ll", value[:_TIMESPEC])
                    arrived = sec * 1_000_000_000 + nsec
            icmp = data[(data[0] & 0x0F) * 4:] if self.privileged else data
            if len(icmp) < 8 or icmp[0] != 0:  # not an echo reply (or our own request)
                continue
            ident, seq = struct.unpack("!HH", icmp[4:8])
            # Unprivileged sockets get only their own replies, with the id the kernel chose.
            if self.privileged and ident != self.ident:
                continue
            entry = self.waiting.get(seq)
            if entry is not None and not entry[0].done():
                entry[0].set_result(max(0, arrived - entry[1]))


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


_DISPATCHERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Dispatcher] = (
    weakref.WeakKeyDictionary())


def dispatcher(privileged: bool) -> Dispatcher:
    """The running loop's shared socket (one per loop: tests run many loops)."""
    loop = asyncio.get_running_loop()
    d = _DISPATCHERS.get(loop)
    if d is None or d.privileged != privileged or d.sock.fileno() < 0:
        d = _DISPATCHERS[loop] = Dispatcher(privileged)
    return d


def _ipv4(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address)
    except ValueError:
        return False


async def run(target: Target, ctx: ProbeContext) -> Result:
    """One echo request; success is a reply within the timeout."""
    spec = target.spec
    ts = ctx.clock_ms()
    if ctx.icmp_privileged is None:
        ctx.icmp_privileged = detect_mode()
    if _ipv4(spec.host):
        try:
            rtt = await dispatcher(ctx.icmp_privileged).ping(spec.host, spec.timeout_ms / 1000)
        except TimeoutError:
            return Result(target.id, ts, False, error=f"no echo reply within {spec.timeout_ms} ms")
        except OSError as exc:
            return Result(target.id, ts, False, error=f"send failed: {exc.strerror or exc}")
        return Result(target.id, ts, True, latency_ms=round(rtt / 1_000_000))
    # Host names and IPv6: icmplib, a socket per probe (rare enough not to matter).
    try:
        host = await async_ping(
            spec.host,
            count=1,
            timeout=spec.timeout_ms / 1000,
            privileged=ctx.icmp_privileged,
        )
    except ICMPLibError as exc:
        return Result(target.id, ts, False, error=f"{type(exc).__name__}: {exc}")
    except OSError as exc:
        return Result(target.id, ts, False, error=f"send failed: {exc.strerror or exc}")
    if host.packets_sent == 0:
        return Result(target.id, ts, False,
                      error="send failed: no packet could be sent (no route?)")
    if host.packets_received == 0:
        return Result(target.id, ts, False, error=f"no echo reply within {spec.timeout_ms} ms")
    return Result(target.id, ts, True, latency_ms=max(0, round(host.min_rtt)))
