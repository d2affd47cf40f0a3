"""ICMP echo probe (icmplib): privileged raw socket when allowed, else the unprivileged kind."""

from __future__ import annotations

import array
import asyncio
import logging
import os
import socket
import struct
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Literal

from icmplib import async_ping
from icmplib.exceptions import ICMPLibError
from pydantic import field_validator

from pingr.configbase import TargetBase, check_host
from pingr.models import Result, Target
from pingr.probes.context import ProbeContext
from pingr.probes.kind import Kind

log = logging.getLogger(__name__)


class IcmpTarget(TargetBase):
    """Ping a host (ICMP echo)."""

    type: Literal["icmp"]
    host: str

    _host = field_validator("host")(classmethod(lambda cls, v: check_host(v)))


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
#: Raw ICMP sockets only: a bitmask of ICMP types the kernel drops before queueing them to us
#: (linux/icmp.h). Without it every echo request we send on loopback comes back to our own
#: socket as well: two recvs per probe instead of one.
SOL_RAW, ICMP_FILTER = 255, 1
_ECHO_REPLY_ONLY = struct.pack("I", ~(1 << 0) & 0xFFFFFFFF)

_PAYLOAD = b"pingr-echo-16byt"
_HEADER = struct.Struct("!BBHHH")
_IDSEQ = struct.Struct("!HH")
_STAMP = struct.Struct("@ll")
#: One's-complement sum of the echo request's constant words (type/code and the payload):
#: a packet's checksum is then this plus its id and sequence, folded.
_BASE_SUM = (8 << 8) + sum(struct.unpack(f"!{len(_PAYLOAD) // 2}H", _PAYLOAD))
#: A send that took longer than this (from the send timestamp to `sendto` returning) may have
#: left late: the thread lost the GIL to the store's writer, or the CPU to another process,
#: right after the timestamp was taken. Its RTT would include that stall, so the request is
#: sent again under a new sequence number and timed afresh (at most `_SEND_TRIES` times).
_STALL_NS = 1_000_000
_SEND_TRIES = 3

#: Linux's SO_ATTACH_FILTER (asm-generic/socket.h; the same on arm and x86); Python's socket
#: module does not name it.
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
#: sock_filter {u16 code; u8 jt, jf; u32 k} and sock_fprog {unsigned short len; pointer}.
_BPF_INSN = struct.Struct("=HBBI")
_BPF_PROG = struct.Struct("@HP")


def _echo_reply_filter(ident: int) -> bytes:
    """Classic BPF for a raw IPv4 ICMP socket: keep only echo replies carrying `ident`.

    On a raw socket the packet starts at the IP header, whose length varies (options), so the
    ICMP header is addressed through X = 4 * (IHL) (`ldxb 4*([0]&0xf)`, the MSH idiom):

        ldxb 4*([0]&0xf)    X = IP header length
        ldb  [x+0]          A = ICMP type
        jeq  #0, L1, drop   echo reply?
    L1: ldh  [x+4]          A = identifier
        jeq  #ident, keep, drop
    keep: ret #-1           the whole packet
    drop: ret #0            nothing: the kernel never queues it, so we never wake for it
    """
    ld_msh_x = 0x01 | 0x10 | 0xA0  # BPF_LDX | BPF_B | BPF_MSH
    ldb_ind = 0x00 | 0x10 | 0x40  # BPF_LD | BPF_B | BPF_IND
    ldh_ind = 0x00 | 0x08 | 0x40  # BPF_LD | BPF_H | BPF_IND
    jeq_k = 0x05 | 0x10 | 0x00  # BPF_JMP | BPF_JEQ | BPF_K
    ret_k = 0x06  # BPF_RET | BPF_K
    program = [
        (ld_msh_x, 0, 0, 0),
        (ldb_ind, 0, 0, 0),
        (jeq_k, 0, 3, 0),  # type 0: go on; else to drop
        (ldh_ind, 0, 0, 4),
        (jeq_k, 0, 1, ident & 0xFFFF),
        (ret_k, 0, 0, 0xFFFFFFFF),
        (ret_k, 0, 0, 0),
    ]
    return b"".join(_BPF_INSN.pack(*insn) for insn in program)


class Dispatcher:
    """One IPv4 ICMP socket per event loop shared by every probe, replies matched by sequence.

    Why: icmplib opens a socket per probe, and every raw ICMP socket receives a copy of every
    ICMP packet on the host, so 100 probes in flight cost 100 wake-ups per reply and replies
    queue behind each other (measured: p50 52 ms on loopback for 1,000 targets). Here a reply
    costs one recv, and its arrival time comes from the kernel (SO_TIMESTAMPNS), so a busy
    event loop cannot inflate the measured RTT.

    The send side has no kernel timestamp (that needs SO_TIMESTAMPING and one more syscall per
    probe to read it back), so the send time is taken just before `sendto` and checked just
    after it: a send that stalled in between is repeated (see `_STALL_NS`).

    Per probe the Python cost is kept to a packet build, a send, a recv and one future:
    `ping` is a plain function returning that future (no coroutine frame), and timeouts are
    not one timer per probe but deadline queues (one per timeout value, so each is in order)
    drained by a single loop timer.
    """

    def __init__(self, privileged: bool, clock: Callable[[], int] = time.time_ns) -> None:
        self.privileged = privileged
        #: Send timestamps; the kernel's receive timestamps are on the same clock (realtime).
        self.clock = clock
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
        #: Whether the kernel filters foreign echo replies out (raw sockets; see below).
        self.filtered = False
        if privileged:
            self._try_option(ICMP_FILTER, _ECHO_REPLY_ONLY, SOL_RAW)
            self.filtered = self._attach_filter()
        self.seq = 0
        #: sequence -> entry: [future, send time in ns, sequence]
        self.waiting: dict[int, list] = {}
        #: timeout in seconds -> (deadline, entry) in send order
        self._deadlines: dict[float, deque[tuple[float, list]]] = {}
        #: Sends that stalled (see `_STALL_NS`); each but a last try is repeated.
        self.resent = 0
        #: Packets read from the socket (each recvmsg that returned data): one per reply to
        #: our own probes, and nothing for other programs' pings (see `_attach_filter`).
        self.reads = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.sock.fileno(), self._readable)

    def _try_option(self, option: int, value: int | bytes, level: int = socket.SOL_SOCKET) -> bool:
        try:
            self.sock.setsockopt(level, option, value)
            return True
        except OSError as exc:
            log.debug("ICMP socket option %d is not available: %s", option, exc)
            return False

    def _attach_filter(self) -> bool:
        """Attach `_echo_reply_filter` to the raw socket (SO_ATTACH_FILTER).

        Why: a raw ICMP socket gets a copy of every ICMP packet the host receives. ICMP_FILTER
        drops other types, but every echo reply to another program's ping (a neighbour pinging
        at 100/s, or a second pingr) still woke the loop for a recv and a Python-side check:
        ~130-280 us of CPU each, 3-6x what one of our own probes costs. With the filter the
        kernel drops them before they are queued. Unprivileged (datagram) ICMP sockets need
        none: the kernel hands them only replies to their own id.
        Where the kernel refuses (or an emulator does not translate the option), `_readable`
        still checks the identifier; the filter only saves the wake-ups.
        """
        code = array.array("B", _echo_reply_filter(self.ident))
        address, _ = code.buffer_info()  # kept alive until setsockopt has copied it
        return self._try_option(SO_ATTACH_FILTER,
                                _BPF_PROG.pack(len(code) // _BPF_INSN.size, address))

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        if self._timer is not None:
            self._timer.cancel()

    def ping(self, address: str, timeout: float) -> asyncio.Future[int]:
        """Send one echo request; the future gives the RTT in nanoseconds.

        Raises OSError (send failed) at once; the future raises TimeoutError (no reply).
        """
        future = self.loop.create_future()
        entry = [future, 0, 0]
        for _ in range(_SEND_TRIES):
            if not self._send(address, entry):
                break
        deadline = self.loop.time() + timeout
        queue = self._deadlines.get(timeout)
        if queue is None:
            queue = self._deadlines[timeout] = deque()
        queue.append((deadline, entry))
        if deadline < self._timer_at:
            self._arm(deadline)
        return future

    def _send(self, address: str, entry: list) -> bool:
        """Send an echo request for `entry` under a fresh sequence number; True if it stalled."""
        waiting = self.waiting
        if waiting.get(entry[2]) is entry:  # a stalled earlier try: its reply is ignored
            del waiting[entry[2]]
        seq = self.seq
        while seq in waiting:
            seq = (seq + 1) & 0xFFFF
        self.seq = (seq + 1) & 0xFFFF
        total = _BASE_SUM + self.ident + seq
        total = (total >> 16) + (total & 0xFFFF)
        total += total >> 16
        packet = _HEADER.pack(8, 0, ~total & 0xFFFF, self.ident, seq) + _PAYLOAD
        entry[2] = seq
        waiting[seq] = entry
        clock = self.clock
        entry[1] = sent = clock()
        try:
            self.sock.sendto(packet, (address, 0))
        except BlockingIOError:
            # Send buffer full: the time spent waiting for room is not network time.
            self.loop.create_task(self._send_later(packet, address, entry))
            return False
        except OSError:
            del waiting[seq]
            raise
        if clock() - sent > _STALL_NS:
            self.resent += 1
            return True
        return False

    async def _send_later(self, packet: bytes, address: str, entry: list) -> None:
        try:
            await self.loop.sock_sendto(self.sock, packet, (address, 0))
        except OSError as exc:
            if not entry[0].done():
                entry[0].set_exception(exc)
            return
        entry[1] = self.clock()

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._expire)

    def _expire(self) -> None:
        """Fail every probe past its deadline; drop answered ones; re-arm for the next."""
        self._timer, self._timer_at = None, float("inf")
        now = self.loop.time()
        waiting = self.waiting
        nxt = float("inf")
        for timeout, queue in list(self._deadlines.items()):
            while queue:
                deadline, entry = queue[0]
                future = entry[0]
                if not future.done():
                    if deadline > now:
                        nxt = min(nxt, deadline)
                        break
                    future.set_exception(TimeoutError())
                queue.popleft()
                if waiting.get(entry[2]) is entry:
                    del waiting[entry[2]]
            if not queue:
                del self._deadlines[timeout]
        if nxt != float("inf"):
            self._arm(nxt)

    def _readable(self) -> None:
        sock, waiting, privileged = self.sock, self.waiting, self.privileged
        space = socket.CMSG_SPACE(_TIMESPEC)
        while True:
            try:
                data, ancdata, _, _ = sock.recvmsg(2048, space)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error queued on the socket; the probe times out
                continue
            self.reads += 1
            if ancdata:
                level, kind, value = ancdata[0]
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = _STAMP.unpack_from(value)
                    arrived = sec * 1_000_000_000 + nsec
                else:
                    arrived = self.clock()
            else:
                arrived = self.clock()
            icmp = data[(data[0] & 0x0F) * 4:] if privileged else data
            if len(icmp) < 8 or icmp[0] != 0:  # not an echo reply (or our own request)
                continue
            ident, seq = _IDSEQ.unpack_from(icmp, 4)
            # Unprivileged sockets get only their own replies, with the id the kernel chose.
            if privileged and ident != self.ident:
                continue
            entry = waiting.pop(seq, None)
            if entry is not None and not entry[0].done():
                entry[0].set_result(max(0, arrived - entry[1]))
            if not waiting:
                # No reply of ours is due: skip the recv that would only fail (EAGAIN), one
                # syscall and one exception per probe. Anything else queued makes the socket
                # readable again, and the loop calls back (level-triggered).
                return


_DISPATCHERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Dispatcher] = (
    weakref.WeakKeyDictionary())
_last: Dispatcher | None = None


def dispatcher(privileged: bool) -> Dispatcher:
    """The running loop's shared socket (one per loop: tests run many loops)."""
    global _last
    loop = asyncio.get_running_loop()
    d = _last
    if d is not None and d.loop is loop and d.privileged == privileged and d.sock.fileno() >= 0:
        return d
    d = _DISPATCHERS.get(loop)
    if d is None or d.privileged != privileged or d.sock.fileno() < 0:
        d = _DISPATCHERS[loop] = Dispatcher(privileged)
    _last = d
    return d


_IPV4: dict[str, bool] = {}


def _ipv4(host: str) -> bool:
    known = _IPV4.get(host)
    if known is None:
        try:  # the strict dotted quad ipaddress accepts, in C (~1 µs instead of ~20)
            socket.inet_pton(socket.AF_INET, host)
            known = True
        except OSError:
            known = False
        if len(_IPV4) >= 100_000:  # hosts come from the config: bounded in practice
            _IPV4.clear()
        _IPV4[host] = known
    return known


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


def prepare(ctx: ProbeContext, targets: list[Target]) -> None:
    """Find out once which ICMP socket works; IcmpUnavailable names both fixes if none does."""
    if targets and ctx.icmp_privileged is None:
        ctx.icmp_privileged = detect_mode()


KIND = Kind(IcmpTarget, run, prepare)
