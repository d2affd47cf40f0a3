"""The /alert-status body (PiAlert's polling contract), built from the snapshot and cached."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pingr.monitor import Snapshot
from pingr.timeutil import from_ms


def body(snap: Snapshot) -> dict[str, Any]:
    """The alert-status document for a snapshot."""
    out: dict[str, Any] = {
        "alert": snap.alert,
        "failing_targets": [
            {"name": f.name, "status": f.status, "failures": f.failures,
             "threshold": f.threshold}
            for f in snap.failing
        ],
        "failing_count": len(snap.failing),
        "timestamp": from_ms(snap.ts).isoformat(),
        "stale": snap.stale,
    }
    if snap.acknowledged:
        out["acknowledged"] = list(snap.acknowledged)
    if snap.silenced:
        out["silenced"] = list(snap.silenced)
    if snap.unreachable:
        out["unreachable"] = list(snap.unreachable)
    if snap.warnings:
        # Up, but a certificate expires soon: worth a look, never an alarm (`alert` ignores it).
        out["warnings"] = list(snap.warnings)
    return out


class AlertStatus:
    """Renders the body and its ETag once per snapshot version (pollers share the bytes)."""

    def __init__(self) -> None:
        self._cached: tuple[int, bytes, str] | None = None

    def render(self, snap: Snapshot) -> tuple[bytes, str]:
        """(JSON bytes, ETag) for `snap`."""
        cached = self._cached
        if cached is not None and cached[0] == snap.version:
            return cached[1], cached[2]
        raw = json.dumps(body(snap), separators=(",", ":")).encode()
        etag = '"' + hashlib.blake2b(raw, digest_size=8).hexdigest() + '"'
        self._cached = (snap.version, raw, etag)
        return raw, etag
