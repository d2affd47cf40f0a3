"""The database schema: every SQLModel table pingr keeps, and the raw-results layout."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, Index, Text
from sqlmodel import Field, SQLModel

from pingr.models import Alert

# Timestamps are integer epoch milliseconds: 6 bytes a row instead of a 26-byte ISO string,
# which matters for a table that gets one row per probe on an SD card.

#: A raw result's row id is its timestamp shifted left by ID_SHIFT bits plus the target's pk:
#: rows are appended in time order (one B-tree, no per-target index whose scattered leaves
#: would be rewritten on every commit), a time range is a rowid range, and replaying the
#: spool after a crash cannot insert a result twice.
ID_SHIFT = 16
PK_MASK = (1 << ID_SHIFT) - 1


#: Raw results live in one table per UTC day, `results_d<day>` (day = ts // 86,400,000), with
#: a view `results` over all of them. Retention drops whole days: freeing a day costs no page
#: writes, where deleting rows from the front of one big table rewrote every page it emptied
#: (B-tree rebalancing), about as many writes as inserting them had cost.
RESULTS_DDL = """CREATE TABLE IF NOT EXISTS {table} (
    id INTEGER PRIMARY KEY,  -- ts << ID_SHIFT | target_pk
    target_pk INTEGER NOT NULL,
    success BOOLEAN NOT NULL,
    latency_ms INTEGER,
    status_code INTEGER,
    error VARCHAR)"""
RESULTS_COLUMNS = "id, target_pk, success, latency_ms, status_code, error"


class TargetRow(SQLModel, table=True):
    """A monitored target; `spec` is the validated target model as JSON."""

    __tablename__ = "targets"
    pk: int | None = Field(default=None, primary_key=True)
    id: str = Field(index=True, unique=True)
    name: str = Field(index=True, unique=True)
    type: str
    enabled: bool = True
    spec: str = Field(sa_column=Column(Text, nullable=False))
    source: str = "api"
    created_at: int = 0
    updated_at: int = 0


class MetaRow(SQLModel, table=True):
    """Small integers the store keeps about itself (e.g. the last committed spool generation)."""

    __tablename__ = "meta"
    key: str = Field(primary_key=True)
    value: int


class AlertRow(SQLModel, table=True):
    """An alert: opened when a target goes down, resolved when it recovers."""

    __tablename__ = "alerts"
    id: int = Field(primary_key=True)
    target_id: str = Field(index=True)
    target_name: str
    opened_at: int = Field(index=True)
    resolved_at: int | None = None
    acknowledged_at: int | None = None
    acknowledged_by: str | None = None
    peak_failures: int = 0
    last_error: str | None = None

    def to_alert(self) -> Alert:
        return Alert(self.id, self.target_id, self.target_name, self.opened_at, self.resolved_at,
                     self.acknowledged_at, self.acknowledged_by, self.peak_failures,
                     self.last_error)


class ApiKeyRow(SQLModel, table=True):
    """An API key: only its SHA-256 is stored."""

    __tablename__ = "api_keys"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    scope: str
    key_hash: str = Field(unique=True)
    prefix: str
    created_at: int
    last_used_at: int | None = None
    usage_count: int = 0
    enabled: bool = True


class _Rollup(SQLModel):
    """The columns of an aggregate row: one target's results in one bucket."""

    bucket: int = Field(primary_key=True)  # epoch ms of the bucket's start
    target_pk: int = Field(primary_key=True)
    count: int
    successes: int
    lat_count: int
    lat_sum: int
    lat_min: int | None = None
    lat_max: int | None = None


class HourRollup(_Rollup, table=True):
    """Aggregate of one target's results in one hour (kept `storage.hour_retention`)."""

    __tablename__ = "rollup_hour"
    __table_args__ = {"sqlite_with_rowid": False}


class DayRollup(_Rollup, table=True):
    """Aggregate of one target's results in one UTC day, folded from the per-hour rows when
    the size cap (or a short `hour_retention`) removes them within the daily horizon, so the
    status page's daily bars outlive them. A day may be partly here and partly still in
    rollup_hour: readers add both."""

    __tablename__ = "rollup_day"
    __table_args__ = {"sqlite_with_rowid": False}


class MetricSeriesRow(SQLModel, table=True):
    """A host or container metric kept over time (`host:cpu`, `container:web:memory`).

    Its samples live in the rollup tables under `SERIES_BASE + pk` (above every target's pk),
    so they share the targets' per-minute and per-hour aggregates, retention and size cap."""

    __tablename__ = "metric_series"
    pk: int | None = Field(default=None, primary_key=True)
    key: str = Field(index=True, unique=True)
    created_at: int = 0


#: Rollup rows of metric series carry `SERIES_BASE + MetricSeriesRow.pk` as their target_pk.
SERIES_BASE = 1 << ID_SHIFT


class JobExecutionRow(SQLModel, table=True):
    """One run of a heartbeat target's job: /ping/{token}/start, then success, failure or an
    exit code (or nothing: "started but did not finish")."""

    __tablename__ = "job_executions"
    __table_args__ = (Index("ix_job_executions_target", "target_id", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    target_id: str
    started_at: int | None = None
    ended_at: int | None = None
    duration_ms: int | None = None
    #: running, success or failure
    state: str = "running"
    exit_code: int | None = None
    message: str | None = None


class ContainerTransitionRow(SQLModel, table=True):
    """A container's change of state or health, as the Docker collector saw it."""

    __tablename__ = "container_transitions"
    __table_args__ = (Index("ix_container_transitions_name", "name", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    name: str
    container_id: str
    ts: int
    #: state (running, exited, …), health (healthy, unhealthy, …) or restart_loop
    kind: str
    old: str | None = None
    new: str | None = None
    exit_code: int | None = None
    detail: str | None = None


#: Delivery states. `queued` and `retrying` are the persistent queue; the rest is the log.
QUEUED, RETRYING, SENT, FAILED, DROPPED, SUPPRESSED = (
    "queued", "retrying", "sent", "failed", "dropped", "suppressed")
OPEN_STATES = (QUEUED, RETRYING)


class ChannelRow(SQLModel, table=True):
    """A notification channel: an apprise URL (holds secrets; never logged or shown unmasked)."""

    __tablename__ = "notify_channels"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    url: str
    on: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    targets: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    source: str = "api"  # config (pingr.yaml, read-only through the API) or api
    enabled: bool = True
    created_at: int = 0
    updated_at: int = 0


class DeliveryRow(SQLModel, table=True):
    """One message to one channel: the retry queue while open, the delivery log afterwards."""

    __tablename__ = "notify_deliveries"
    __table_args__ = (Index("ix_notify_deliveries_state", "state"),)
    id: int | None = Field(default=None, primary_key=True)
    channel_id: int
    channel_name: str
    kind: str  # alert, recovery, reminder, test
    target_id: str | None = None
    target_name: str | None = None
    alert_id: int | None = None
    title: str
    body: str
    notify_type: str = "info"
    state: str = QUEUED
    attempts: int = 0
    next_attempt_at: int = 0
    last_error: str | None = None
    created_at: int = 0
    updated_at: int = 0


class SilenceRow(SQLModel, table=True):
    """Mutes notifications and audible outputs for matching targets between two instants."""

    __tablename__ = "silences"
    id: int | None = Field(default=None, primary_key=True)
    targets: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    starts_at: int = Field(index=True)
    ends_at: int = Field(index=True)
    comment: str | None = None
    created_by: str | None = None
    created_at: int = 0


class WebhookRow(SQLModel, table=True):
    """An outgoing webhook: events are POSTed as JSON, signed with `secret` (HMAC-SHA256)."""

    __tablename__ = "webhooks"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    url: str
    secret: str
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    enabled: bool = True
    created_at: int = 0
    last_sent_at: int | None = None
    last_status: int | None = None
    last_error: str | None = None


class HeartbeatRow(SQLModel, table=True):
    """A heartbeat target's generated token and last check-ins (survive restarts)."""

    __tablename__ = "heartbeats"
    target_id: str = Field(primary_key=True)
    token: str = Field(index=True, unique=True)
    created_at: int = 0
    last_ping_at: int | None = None
    last_success: bool | None = None
    last_kind: str | None = None
    last_message: str | None = None
    last_start_at: int | None = None


class CollectorSettingRow(SQLModel, table=True):
    """A runtime override of a config section, valid while that section is unchanged.

    `base_hash` is the hash of the config file's section when the override was saved: once the
    file's section is edited, the file wins again (an old override must not hide a new file).
    """

    __tablename__ = "collector_settings"
    key: str = Field(primary_key=True)
    value: str = Field(sa_column=Column(Text, nullable=False))
    base_hash: str
    updated_at: int


def row_dict(row: SQLModel) -> dict[str, Any]:
    """A detached copy of a row's columns (safe to use after its session closed)."""
    return row.model_dump()
