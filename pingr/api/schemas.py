"""Response models of the HTTP API (the Pingu draft's shapes), all timestamps UTC with `Z`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from pingr.models import Alert, ResultRow, Target
from pingr.timeutil import from_ms, rfc3339

#: Aware UTC datetime rendered as RFC 3339 with `Z`.
UtcTime = Annotated[datetime, PlainSerializer(rfc3339, return_type=str)]


def ts(ms: int | None) -> datetime | None:
    return from_ms(ms) if ms is not None else None


class ErrorOut(BaseModel):
    """Every error: one clear message, under both names clients read (the Pingu draft's
    `error`, PiAlert's `detail`)."""

    error: str
    detail: str


class TargetOut(BaseModel):
    id: str
    name: str
    type: str
    host: str | None = None
    url: str | None = None
    port: int | None = None
    interval_seconds: int
    timeout_ms: int
    enabled: bool
    failure_threshold: int
    recovery_threshold: int
    tags: list[str]
    depends_on: str | None = None
    check: str | None = Field(None, description="shared check id (fleet mode)")
    method: str | None = None
    headers: dict[str, str] | None = None
    expect_status: list[int] | None = None
    body_contains: str | None = None
    verify_tls: bool | None = None
    status: str = Field(description="up, down, unreachable, pending or paused")
    consecutive_failures: int
    source: str = Field(description="config (from pingr.yaml), api, or auto (the certificate "
                                    "check of HTTPS targets, follows them)")
    created_at: UtcTime
    updated_at: UtcTime

    @classmethod
    def of(cls, target: Target, status: str, failures: int) -> TargetOut:
        data = target.spec.model_dump()
        return cls(
            id=target.id,
            status=status,
            consecutive_failures=failures,
            source=target.source,
            created_at=from_ms(target.created_at),
            updated_at=from_ms(target.updated_at),
            **data,
        )


class TargetList(BaseModel):
    """GET /targets (the Pingu draft's envelope)."""

    items: list[TargetOut]


class ResultItem(BaseModel):
    """One probe result, as a target's own history lists it."""

    ts: UtcTime
    success: bool
    latency_ms: int | None = None
    status_code: int | None = Field(None, description="HTTP probes only")
    error: str | None = Field(None, description="null for successful probes")

    @classmethod
    def of(cls, row: ResultRow) -> ResultItem:
        return cls(ts=from_ms(row.ts), success=row.success, latency_ms=row.latency_ms,
                   status_code=row.status_code, error=None if row.success else row.error)


class ResultOut(BaseModel):
    """One probe result with its target denormalized (lists across targets)."""

    target_id: str
    target_name: str
    ts: UtcTime
    success: bool
    latency_ms: int | None = None
    status_code: int | None = Field(None, description="HTTP probes only")
    error: str | None = Field(None, description="null for successful probes")

    @classmethod
    def of(cls, row: ResultRow, target: Target) -> ResultOut:
        return cls(target_id=target.id, target_name=target.name,
                   **ResultItem.of(row).model_dump())


class ResultList(BaseModel):
    """GET /results/latest."""

    items: list[ResultOut]


class LatestOut(ResultOut):
    status: str = Field(description="the target's status now: up, down, unreachable, pending")


class LatestList(BaseModel):
    """GET /results/latest-by-target."""

    items: list[LatestOut]


class TargetResults(BaseModel):
    """GET /targets/{target_id}/results."""

    target_id: str
    target_name: str
    items: list[ResultItem]


class SummaryItem(BaseModel):
    target_id: str
    target_name: str
    uptime_percent: float | None = Field(description="null when there were no probes in the window")
    avg_latency_ms: float | None = Field(description="over successful probes")
    total_probes: int


class SummaryList(BaseModel):
    """GET /summary."""

    window: str = Field(description="as given in the request")
    items: list[SummaryItem]


class TargetSummary(BaseModel):
    """GET /summary/{target_id}."""

    window: str = Field(description="as given in the request")
    target_id: str
    target_name: str
    uptime_percent: float | None = Field(description="null when there were no probes in the window")
    avg_latency_ms: float | None = Field(description="over successful probes")
    total_probes: int


class DailyUptimeOut(BaseModel):
    date: str = Field(description="UTC day, YYYY-MM-DD")
    uptime_percent: float | None = Field(description="null when there were no probes that day")
    total_probes: int
    avg_latency_ms: float | None


class HistoryBucketOut(BaseModel):
    ts: UtcTime = Field(description="start of the bucket")
    resolution: str = Field(description="minute or hour")
    total_probes: int
    successes: int
    uptime_percent: float | None
    latency_min_ms: int | None
    latency_avg_ms: float | None = Field(description="over successful probes")
    latency_max_ms: int | None


class HealthOut(BaseModel):
    ok: bool
    db: bool = Field(description="the API could query the database just now")
    db_error: str | None = Field(description="the last database write error, or the error of "
                                 "that query; null when none")
    healthy: bool = Field(description="probes finish on time (the dead-man output and the "
                          "systemd watchdog follow this)")
    degraded: bool = Field(description="true while a problem keeps the appliance from its "
                           "whole job (it runs on, and says so)")
    problems: list[str] = Field(description="what keeps the appliance from its whole job "
                                "(e.g. GPIO outputs that cannot switch); empty when none")
    warnings: list[str] = Field(description="settings that work but should change (e.g. a "
                                "short configured API key); empty when none")
    enabled_targets: int
    last_result_ts: UtcTime | None = Field(description="the newest stored result")
    seconds_since_last_result: int | None = Field(description="whole seconds, computed now")
    stale: bool
    version: str
    uptime_seconds: float
    disk_bytes_written: int | None = Field(
        None, description="bytes pingr sent to storage since it started (/proc/self/io); "
        "null where the kernel does not report it")
    disk_bytes_per_day: int | None = Field(
        None, description="write rate over up to the last 24 h, in bytes per day; "
        "null during the first minute")
    db_size_bytes: int | None = Field(
        None, description="bytes the database and its WAL take on disk")


class AlertOut(BaseModel):
    id: int
    target_id: str
    target_name: str
    state: str = Field(description="open or resolved")
    opened_at: UtcTime
    resolved_at: UtcTime | None
    acknowledged_at: UtcTime | None
    acknowledged_by: str | None
    peak_failures: int
    last_error: str | None = None

    @classmethod
    def of(cls, alert: Alert) -> AlertOut:
        return cls(
            id=alert.id,
            target_id=alert.target_id,
            target_name=alert.target_name,
            state="open" if alert.open else "resolved",
            opened_at=from_ms(alert.opened_at),
            resolved_at=ts(alert.resolved_at),
            acknowledged_at=ts(alert.acknowledged_at),
            acknowledged_by=alert.acknowledged_by,
            peak_failures=alert.peak_failures,
            last_error=alert.last_error,
        )


class AckOut(BaseModel):
    acknowledged: list[AlertOut]
    count: int


class FailingTargetOut(BaseModel):
    name: str
    status: str
    failures: int
    threshold: int


class AlertStatusOut(BaseModel):
    """The polling contract. `timestamp` is when this state began (it changes only with it)."""

    alert: bool
    failing_targets: list[FailingTargetOut]
    failing_count: int
    timestamp: str
    stale: bool
    acknowledged: list[str] | None = None
    unreachable: list[str] | None = None


class KeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    scope: str
    prefix: str
    created_at: UtcTime
    last_used_at: UtcTime | None
    usage_count: int
    enabled: bool


class KeyCreated(KeyOut):
    key: str = Field(description="The key itself. Shown only in this response; store it now.")


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    scope: Literal["read", "operate", "admin"] = "read"
