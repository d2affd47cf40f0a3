"""How a collector's findings become targets and results of the same alert engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from pydantic import Field

from pingr.configbase import TargetBase
from pingr.models import Result, Target

#: Collector targets are fed by their collector, never probed one by one. The longest interval
#: keeps them out of any interval-based rule.
SYNTHETIC_INTERVAL = 86400


class CollectorTarget(TargetBase):
    """The spec of a collector's target (not a user-facing target kind)."""

    probed: ClassVar[bool] = False
    type: Literal["system", "pi", "container"]
    interval_seconds: int = Field(SYNTHETIC_INTERVAL, ge=1, le=86400)
    # The collector decides when a condition has lasted long enough (`for`, grace), so one
    # failing result is already a fact.
    failure_threshold: int = Field(1, ge=1, le=1000)


def make_target(target_id: str, kind: Literal["system", "pi", "container"],
                tags: list[str] | None = None) -> Target:
    """A collector's target: no row in the targets table (pk 0), no raw history."""
    spec = CollectorTarget(type=kind, name=target_id[:100], tags=tags or [kind])
    return Target(pk=0, id=target_id, spec=spec, source="collector")


@dataclass
class Findings:
    """What one collector run found: the whole set of its targets now, and their results.

    Targets of this source that are not in `targets` any more are gone (a threshold switched
    off, a container removed); the App removes them from the monitor.
    """

    source: str
    targets: dict[str, Target] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)
    #: Only add targets, never remove (a start before the first sample: adopted alerts).
    partial: bool = False

    def add(self, target: Target, result: Result | None = None) -> None:
        self.targets[target.id] = target
        if result is not None:
            self.results.append(result)
