"""The records every part shares: Result, Target, Alert (plain dataclasses, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from pingr.configbase import TargetBase


@dataclass(slots=True)
class Result:
    """One probe outcome. `ts` is epoch milliseconds (UTC); latency is whole milliseconds."""

    target_id: str
    ts: int
    success: bool
    latency_ms: int | None = None
    status_code: int | None = None
    error: str | None = None
    metrics: dict[str, Any] | None = None


@dataclass(slots=True)
class Target:
    """A target as the scheduler and monitor see it: the stored identity plus its spec.

    `pk` is its row in the targets table (0 for a collector's target, which has none).
    """

    pk: int
    id: str
    spec: TargetBase
    source: str = "api"
    created_at: int = 0
    updated_at: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    #: Copied from the spec once (read on every result: plain attributes, not properties).
    name: str = field(init=False)
    enabled: bool = field(init=False)
    #: Probed by the scheduler and kept in raw history (not a collector's finding).
    probed: bool = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.spec.name
        self.enabled = self.spec.enabled
        self.probed = self.spec.probed


@dataclass(slots=True)
class Alert:
    """An alert: opened when a target goes down, resolved when it recovers (times in ms)."""

    id: int
    target_id: str
    target_name: str
    opened_at: int
    resolved_at: int | None = None
    acknowledged_at: int | None = None
    acknowledged_by: str | None = None
    peak_failures: int = 0
    last_error: str | None = None

    @property
    def open(self) -> bool:
        return self.resolved_at is None

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_at is not None

    def copy(self, **changes: Any) -> Alert:
        return replace(self, **changes)


@dataclass(slots=True)
class ResultRow:
    """A raw result as read back (from the database or the not yet committed buffer)."""

    target_pk: int
    ts: int
    success: bool
    latency_ms: int | None = None
    status_code: int | None = None
    error: str | None = None
