"""TCP connect probe."""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from pydantic import Field, field_validator

from pingr.configbase import TargetBase, check_host
from pingr.models import Result, Target
from pingr.probes.context import ProbeContext
from pingr.probes.kind import Kind


class TcpTarget(TargetBase):
    """Open a TCP connection to host:port."""

    type: Literal["tcp"]
    host: str
    port: int = Field(ge=1, le=65535)

    _host = field_validator("host")(classmethod(lambda cls, v: check_host(v)))


async def run(target: Target, ctx: ProbeContext) -> Result:
    """Success is a completed TCP handshake within the timeout."""
    spec = target.spec
    ts = ctx.clock_ms()
    start = time.perf_counter()
    try:
        async with asyncio.timeout(spec.timeout_ms / 1000):
            _, writer = await asyncio.open_connection(spec.host, spec.port)
    except TimeoutError:
        return Result(target.id, ts, False, error=f"connect timed out after {spec.timeout_ms} ms")
    except OSError as exc:
        return Result(target.id, ts, False, error=f"connect failed: {exc.strerror or exc}")
    latency = round((time.perf_counter() - start) * 1000)
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return Result(target.id, ts, True, latency_ms=latency)


KIND = Kind(TcpTarget, run)
