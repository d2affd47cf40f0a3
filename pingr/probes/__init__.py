"""Probe registry: one module per target type, each `async def run(target, ctx) -> Result`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pingr import heartbeat
from pingr.models import Result, Target
from pingr.probes import http, icmp, tcp
from pingr.probes.context import ProbeContext

Probe = Callable[[Target, ProbeContext], Awaitable[Result]]

#: type name -> probe coroutine. A new probe type is one module and one line here.
PROBES: dict[str, Probe] = {"icmp": icmp.run, "http": http.run, "tcp": tcp.run,
                            "heartbeat": heartbeat.run}

__all__ = ["PROBES", "Probe", "ProbeContext"]
