"""The /alert-status body (PiAlert's polling contract), built from the snapshot, and its ETag.

`timestamp` is when the body was generated (the document says so), so the bytes differ on
every request; what stays cheap is everything else: the JSON around the timestamp is rendered
once per snapshot and the timestamp spliced in. The ETag is a weak validator over the
situation (the alert flag, which targets fail with which status and threshold, who is
acknowledged, silenced or unreachable, staleness): a poller keeps getting 304 while a down
target's `failures` count grows, and a new body as soon as anything it acts on changes.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pingr.monitor import Snapshot

_COMPACT = (",", ":")


_second: tuple[int, str] = (-1, "")


def timestamp(seconds: float) -> str:
    """ISO 8601 UTC as PiAlert writes it: `2025-10-21T21:14:18.317325+00:00`."""
    global _second
    whole = int(seconds // 1)
    micros = round((seconds - whole) * 1_000_000)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    if _second[0] != whole:  # the date and time of day change once a second, not per poll
        _second = (whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{micros:06d}+00:00"


def _head(snap: Snapshot) -> dict[str, Any]:
    return {
        "alert": snap.alert,
        "failing_targets": [
            {"name": f.name, "status": f.status, "failures": f.failures,
             "threshold": f.threshold}
            for f in snap.failing
        ],
        "failing_count": len(snap.failing),
    }


def _tail(snap: Snapshot) -> dict[str, Any]:
    out: dict[str, Any] = {"stale": snap.stale}
    if snap.acknowledged:
        out["acknowledged"] = list(snap.acknowledged)
    if snap.silenced:
        out["silenced"] = list(snap.silenced)
    if snap.unreachable:
        out["unreachable"] = list(snap.unreachable)
    if snap.problems:
        # The appliance runs degraded (e.g. its relays cannot switch): said, never hidden.
        out["degraded"] = list(snap.problems)
    if snap.warnings:
        # Up, but a certificate expires soon: worth a look, never an alarm (`alert` ignores it).
        out["warnings"] = list(snap.warnings)
    return out


def body(snap: Snapshot, generated: float | None = None) -> dict[str, Any]:
    """The alert-status document for a snapshot, generated at `generated` (default now)."""
    when = time.time() if generated is None else generated
    return {**_head(snap), "timestamp": timestamp(when), **_tail(snap)}


def situation(snap: Snapshot) -> tuple[Any, ...]:
    """What a poller acts on: everything in the body but the counters and the timestamp."""
    return (snap.alert, tuple((f.name, f.status, f.threshold) for f in snap.failing),
            snap.stale, snap.acknowledged, snap.silenced, snap.unreachable, snap.problems,
            snap.warnings)


def etag(snap: Snapshot) -> str:
    """A weak validator (RFC 9110 8.8.1) over the situation."""
    raw = json.dumps(situation(snap), separators=_COMPACT).encode()
    return 'W/"' + hashlib.blake2b(raw, digest_size=8).hexdigest() + '"'


_TAG = re.compile(r'(W/)?"([\x21\x23-\x7e\x80-\xff]*)"')


def none_match(header: str | None, tag: str) -> bool:
    """Does `If-None-Match: header` match the current `tag` (RFC 9110 13.1.2)?

    Weak comparison (the `W/` prefixes are ignored on both sides), a comma-separated list of
    entity tags, or `*` (there always is a current representation). A field that does not
    parse is ignored, as if absent: the client gets the full answer.
    """
    if header is None:
        return False
    text = header.strip()
    if text == "*":
        return True
    mine = _TAG.fullmatch(tag)
    assert mine is not None
    pos, found = 0, False
    while pos < len(text):
        if text[pos] in " \t,":
            pos += 1
            continue
        m = _TAG.match(text, pos)
        if m is None:
            return False  # not a list of entity tags: ignore the whole field
        found = found or m.group(2) == mine.group(2)
        pos = m.end()
        if pos < len(text) and text[pos] not in " \t,":
            return False
    return found


class AlertStatus:
    """Renders the body around its timestamp and the ETag once per snapshot version."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._cached: tuple[int, bytes, bytes, str] | None = None

    def _parts(self, snap: Snapshot) -> tuple[int, bytes, bytes, str]:
        cached = self._cached
        if cached is None or cached[0] != snap.version:
            head = json.dumps(_head(snap), separators=_COMPACT)
            tail = json.dumps(_tail(snap), separators=_COMPACT)
            cached = (snap.version, (head[:-1] + ',"timestamp":"').encode(),
                      ('",' + tail[1:]).encode(), etag(snap))
            self._cached = cached
        return cached

    def etag(self, snap: Snapshot) -> str:
        """The weak ETag of `snap`'s situation (computed once per snapshot version)."""
        return self._parts(snap)[3]

    def render(self, snap: Snapshot) -> tuple[bytes, str]:
        """(JSON bytes generated now, weak ETag) for `snap`."""
        _, head, tail, tag = self._parts(snap)
        return head + timestamp(self.clock()).encode() + tail, tag


def alert_status_response(app: Any, if_none_match: str | None) -> tuple[int, bytes, str]:
    """(status, body, etag) for /alert-status, from memory only; 304 when If-None-Match
    matches the weak ETag of the current situation (RFC 9110: weak comparison, lists, *)."""
    snap = app.monitor.snapshot()
    tag = app.alert_status.etag(snap)
    if none_match(if_none_match, tag):
        return 304, b"", tag
    body, tag = app.alert_status.render(snap)
    return 200, body, tag
