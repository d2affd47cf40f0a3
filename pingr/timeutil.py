"""Durations (`30s`, `5m`, `7d`) and UTC timestamps (RFC 3339 with `Z`)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

#: Seconds per duration unit.
UNITS = _UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
#: A duration as written: number, optional unit.
DURATION = _DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")


def parse_duration(value: str | int | float) -> float:
    """Return seconds for `30s`, `5m`, `7d`, `1.5h`, `250ms` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 7d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"invalid duration {value!r}: use a number with a unit: 30s, 5m, 2h, 7d")
    number, unit = match.groups()
    return float(number) * _UNITS[unit or "s"]


def format_duration(seconds: float) -> str:
    """Inverse of parse_duration for whole units, e.g. 604800 -> '7d'."""
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds * 1000)}ms"


def now_ms() -> int:
    """Current time as integer milliseconds since the epoch (the storage format)."""
    return time.time_ns() // 1_000_000


def to_ms(dt: datetime) -> int:
    """Aware (or naive-as-UTC) datetime to epoch milliseconds."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    """Epoch milliseconds to an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def rfc3339(dt: datetime | None) -> str | None:
    """Format as RFC 3339 UTC with a `Z` suffix and microseconds."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(value: str) -> datetime:
    """Parse an RFC 3339 / ISO 8601 timestamp (naive means UTC) or epoch seconds."""
    text = value.strip()
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError as exc:
        raise ValueError(
            f"invalid timestamp {value!r}: use RFC 3339, e.g. 2025-10-21T21:32:15Z"
        ) from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)
