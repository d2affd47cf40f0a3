"""Synthetic targets: how a collector's findings become targets of the same alert engine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from pingr.configbase import TargetBase
from pingr.models import Result, Target

if TYPE_CHECKING:
    from pingr.monitor import Monitor

#: Collector targets are fed by their collector, never by the scheduler. The longest interval
#: keeps them out of the monitor's staleness rule, which is about the probe pipeline.
SYNTHETIC_INTERVAL = 86400


class CollectorTarget(TargetBase):
    """The spec of a collector's target (not a user-facing target type)."""

    type: Literal["system", "pi", "container"]
    interval_seconds: int = Field(SYNTHETIC_INTERVAL, ge=1, le=86400)
    # The collector decides when a condition has lasted long enough (`for`, grace), so one
    # failing result is already a fact.
    failure_threshold: int = Field(1, ge=1, le=1000)


def make_target(target_id: str, kind: Literal["system", "pi", "container"],
                tags: list[str] | None = None) -> Target:
    """A synthetic Target; pk=0 means the monitor keeps no raw results for it."""
    spec = CollectorTarget(type=kind, name=target_id[:100], tags=tags or [kind])
    return Target(pk=0, id=target_id, spec=spec, source="collector")


def feed(monitor: Monitor, target_id: str, ts: int, success: bool, error: str | None = None,
         metrics: dict[str, Any] | None = None) -> None:
    """Hand one finding to the monitor as a Result.

    Synthetic targets do not count for staleness.
    """
    monitor.process(Result(target_id, ts, success, error=error, metrics=metrics))
