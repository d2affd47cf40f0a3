"""Tables of notifications, heartbeats, silences and webhooks (created with the core tables)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel

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


def as_dict(row: SQLModel) -> dict[str, Any]:
    """A detached copy of a row's columns (safe to use after its session closed)."""
    return row.model_dump()
