"""Heartbeat (push) targets: a job checks in at /ping/{token}; a missed deadline is a failure."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pingr.configbase import Duration, TargetBase
from pingr.models import Result, Target
from pingr.probes.context import ProbeContext
from pingr.probes.kind import Kind


class HeartbeatTarget(TargetBase):
    """A job that checks in at /ping/{token}; silence for period + grace means down.

    `interval` is how often the deadline is checked. Without a `token` pingr generates one
    and keeps it in the database (see GET /api/v1/heartbeats).
    """

    type: Literal["heartbeat"]
    token: str | None = Field(None, min_length=16, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
    # At least a second: shorter periods cannot be checked (and 0.0001 s broke read-back).
    period: Duration = Field(ge=1, le=400 * 86400)
    grace: Duration = Field(60.0, ge=0, le=400 * 86400)
    # One missed deadline is already a fact, not a flaky probe.
    failure_threshold: int = Field(1, ge=1, le=1000)


async def run(target: Target, ctx: ProbeContext) -> Result:
    """The deadline check: a failure once period + grace passed without a ping.

    Heartbeats are checked by the scheduler like any other target (so a missed deadline is a
    failed probe that feeds the same alert engine, and results keep the monitor fresh); the
    check reads in-memory check-in times and does no I/O.
    """
    if ctx.checkins is None:
        return Result(target.id, ctx.clock_ms(), False, error="heartbeat tracking is not running")
    return ctx.checkins.check(target)


KIND = Kind(HeartbeatTarget, run)
