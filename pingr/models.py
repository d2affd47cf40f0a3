"""Result, Target and the persisted tables (SQLModel)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from pingr.config import TargetBase, TargetConfig

_TARGET_ADAPTER: TypeAdapter[Any] = TypeAdapter(TargetConfig)


def parse_target_spec(data: dict[str, Any]) -> TargetBase:
    """Validate a target dict (from YAML, the API or the database) into its typed model."""
    return _TARGET_ADAPTER.validate_python(data)


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
    """A target as the scheduler and monitor see it: the stored identity plus its spec."""

    pk: int
    id: str
    spec: TargetBase
    source: str = "api"
    created_at: int = 0
    updated_at: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def enabled(self) -> bool:
        return self.spec.enabled


# --------------------------------------------------------------------------- tables
# Timestamps are integer epoch milliseconds: 6 bytes a row instead of a 26-byte ISO string,
# which matters for a table that gets one row per probe on an SD card.


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


@dataclass(slots=True)
class ResultRow:
    """A raw result as read back (from the database or the not yet committed buffer)."""

    target_pk: int
    ts: int
    success: bool
    latency_ms: int | None = None
    status_code: int | None = None
    error: str | None = None


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
