"""ICMP echo probe (icmplib): privileged raw socket when allowed, else the unprivileged kind."""

from __future__ import annotations

import socket

from icmplib import async_ping
from icmplib.exceptions import ICMPLibError

from pingr.models import Result, Target
from pingr.probes.context import ProbeContext


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


async def run(target: Target, ctx: ProbeContext) -> Result:
    """One echo request; success is a reply within the timeout."""
    spec = target.spec
    ts = ctx.clock_ms()
    if ctx.icmp_privileged is None:
        ctx.icmp_privileged = detect_mode()
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
        return Result(target.id, ts, False, error="send failed: no packet could be sent (no route?)")
    if host.packets_received == 0:
        return Result(target.id, ts, False, error=f"no echo reply within {spec.timeout_ms} ms")
    return Result(target.id, ts, True, latency_ms=max(0, round(host.min_rtt)))
