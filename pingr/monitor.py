"""Per-target state machine: thresholds, dependencies, alerts, acknowledgements, staleness."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pingr.models import AlertRow, Result, Target
from pingr.store import Store
from pingr.timeutil import from_ms, now_ms

log = logging.getLogger(__name__)

UP, DOWN, UNREACHABLE, PENDING, PAUSED = "up", "down", "unreachable", "pending", "paused"


@dataclass
class TargetState:
    """What the monitor knows about one target right now (memory, not SQL)."""

    target: Target
    status: str = PENDING
    failures: int = 0
    successes: int = 0
    last: Result | None = None
    changed_ms: int = 0
    alert: dict[str, Any] | None = None

    @property
    def acknowledged(self) -> bool:
        return bool(self.alert and self.alert.get("acknowledged_at"))


@dataclass(frozen=True)
class Event:
    """A state change worth telling outputs, notifiers and event streams about."""

    type: str  # target.down, target.up, target.unreachable, alert.acknowledged, monitor.stale, …
    ts: int
    target: Target | None = None
    old: str | None = None
    new: str | None = None
    alert: dict[str, Any] | None = None
    result: Result | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FailingTarget:
    name: str
    status: str
    failures: int
    threshold: int


@dataclass(frozen=True)
class Snapshot:
    """The "what is wrong now" view every reader shares (API, outputs, MQTT)."""

    version: int
    ts: int
    alert: bool
    failing: tuple[FailingTarget, ...]
    stale: bool
    degraded: tuple[str, ...]  # failing below threshold
    acknowledged: tuple[str, ...]  # down but acknowledged
    unreachable: tuple[str, ...]
    statuses: dict[str, str]
    tags: dict[str, tuple[str, ...]]
    silenced: tuple[str, ...] = ()  # down but muted by a silence: not failing, no sound


Listener = Callable[[Event], None]


class Monitor:
    """Turns results into state changes. All methods run on the event loop thread."""

    def __init__(self, store: Store, *, stale_factor: float = 3.0,
                 clock_ms: Callable[[], int] = now_ms):
        self.store = store
        self.stale_factor = stale_factor
        self.clock_ms = clock_ms
        self.states: dict[str, TargetState] = {}
        self.by_name: dict[str, str] = {}
        self.listeners: list[Listener] = []
        self.result_listeners: list[Callable[[Target, Result], None]] = []
        #: Set by the silences component: is this target muted right now?
        self.silenced: Callable[[Target], bool] = lambda target: False
        self.started_ms = clock_ms()
        self.last_result_ms: int | None = None
        self.stale = False
        self._version = 0
        self._changed_ms = self.started_ms
        self._snapshot: Snapshot | None = None
        self._status_body: tuple[int, bytes, str] | None = None
        self._next_alert_id = 1
        self._unclaimed: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ setup

    def load(self, targets: list[Target]) -> None:
        """Restore open alerts and consecutive counters from the database (no double alerts)."""
        self._next_alert_id = self.store.max_alert_id() + 1
        open_alerts = {a.target_id: a for a in self.store.open_alerts()}
        newest = self.store.newest_result_ts()
        recents = self.store.recent_by_target([t.pk for t in targets if t.enabled])
        for target in targets:
            state = self._add(target)
            alert = open_alerts.pop(target.id, None)
            if not target.enabled:
                if alert is not None:
                    self._resolve(alert.model_dump(), self.clock_ms())
                continue
            recent = recents.get(target.pk, [])
            for row in recent:
                if row.success != recent[0].success:
                    break
                if row.success:
                    state.successes += 1
                else:
                    state.failures += 1
            if recent:
                r = recent[0]
                state.last = Result(target.id, r.ts, r.success, r.latency_ms, r.status_code,
                                    r.error)
                state.changed_ms = r.ts
                # Up unless it has never succeeded; trailing failures below the threshold
                # keep their count (amber), as they were before the restart.
                state.status = UP if any(row.success for row in recent) else PENDING
            if alert is not None:
                state.alert = alert.model_dump()
                state.status = DOWN
                state.changed_ms = alert.opened_at
            elif state.failures >= target.spec.failure_threshold:
                # Was unreachable (behind a parent) or never alerted: count again from here.
                state.status = UNREACHABLE if self._parent_down(state) else PENDING
        # Alerts of targets not loaded yet: components (collectors) register their synthetic
        # targets after this and adopt them; resolve_orphans() closes what nobody claimed.
        self._unclaimed = {tid: a.model_dump() for tid, a in open_alerts.items()}
        if newest is not None:
            self.last_result_ms = newest
        self._touch()

    def resolve_orphans(self) -> None:
        """Resolve open alerts whose target no longer exists (deleted while we were stopped)."""
        for alert in self._unclaimed.values():
            self._resolve(alert, self.clock_ms())
        self._unclaimed.clear()

    def _add(self, target: Target) -> TargetState:
        state = TargetState(target, changed_ms=self.clock_ms())
        if not target.enabled:
            state.status = PAUSED
        self.states[target.id] = state
        self.by_name[target.name] = target.id
        return state

    def set_target(self, target: Target) -> None:
        """Add or replace a target (API change or config reload); counters restart on change."""
        old = self.states.get(target.id)
        if old is not None:
            self.by_name.pop(old.target.name, None)
        state = self._add(target)
        adopted = self._unclaimed.pop(target.id, None)
        if adopted is not None and old is None and target.enabled:
            state.alert, state.status = adopted, DOWN  # restored: no second alert
        if old is not None and old.alert is not None:
            if target.enabled:
                state.alert, state.status = old.alert, old.status
                state.failures, state.last = old.failures, old.last
            else:
                self._resolve(old.alert, self.clock_ms())
        if not target.enabled and old is not None and old.status != PAUSED:
            self._emit(Event("target.paused", self.clock_ms(), target, old.status, PAUSED))
        self._touch()

    def remove(self, target_id: str) -> None:
        state = self.states.pop(target_id, None)
        if state is None:
            return
        self.by_name.pop(state.target.name, None)
        if state.alert is not None:
            self._resolve(state.alert, self.clock_ms())
        self._emit(Event("target.deleted", self.clock_ms(), state.target, state.status, None))
        self._touch()

    # ------------------------------------------------------------------ results

    def process(self, result: Result) -> None:
        """Account one probe result: buffer it for storage and move the state machine."""
        state = self.states.get(result.target_id)
        if state is None or not state.target.enabled:
            return
        target = state.target
        if target.pk > 0:
            self.store.add_result(result, target.pk)
            # Staleness means "probes stopped arriving": synthetic targets (collectors, pk 0)
            # keep no raw history and must not hide a stalled scheduler either.
            self.last_result_ms = result.ts
            if self.stale:
                self.check_stale()  # fresh again with this result, not at the next check
        state.last = result
        old = state.status
        spec = target.spec
        if result.success:
            state.successes += 1
            was_failing = state.failures > 0
            state.failures = 0
            if old == PENDING or (old in (DOWN, UNREACHABLE)
                                  and state.successes >= spec.recovery_threshold):
                self._change(state, UP, result)
            elif was_failing and old == UP:
                self._touch()  # amber -> green
        else:
            state.failures += 1
            state.successes = 0
            if state.failures >= spec.failure_threshold and old not in (DOWN, UNREACHABLE):
                self._change(state, UNREACHABLE if self._parent_down(state) else DOWN, result)
            elif old == UNREACHABLE and not self._parent_down(state):
                self._change(state, DOWN, result)
            else:
                if state.alert is not None and state.failures > state.alert["peak_failures"]:
                    state.alert["peak_failures"] = state.failures
                    state.alert["last_error"] = result.error
                    self.store.put_alert(state.alert)
                self._touch()
        for listener in self.result_listeners:
            listener(target, result)

    def _parent_down(self, state: TargetState) -> bool:
        parent_name = state.target.spec.depends_on
        if not parent_name:
            return False
        parent = self.states.get(self.by_name.get(parent_name, ""))
        return parent is not None and parent.status in (DOWN, UNREACHABLE)

    def _change(self, state: TargetState, new: str, result: Result | None) -> None:
        old, ts = state.status, self.clock_ms()
        state.status, state.changed_ms = new, ts
        target = state.target
        alert = None
        if new == DOWN and state.alert is None:
            alert = state.alert = {
                "id": self._next_alert_id,
                "target_id": target.id,
                "target_name": target.name,
                "opened_at": ts,
                "resolved_at": None,
                "acknowledged_at": None,
                "acknowledged_by": None,
                "peak_failures": state.failures,
                "last_error": result.error if result else None,
            }
            self._next_alert_id += 1
            self.store.put_alert(alert)
            log.warning("%s is DOWN after %d failures: %s", target.name, state.failures,
                        result.error if result else "")
        elif new == UP and state.alert is not None:
            alert = self._resolve(state.alert, ts)
            state.alert = None
            log.info("%s is UP again", target.name)
        elif new == UNREACHABLE:
            if state.alert is not None:  # it went down first: its parent explains it now
                alert = self._resolve(state.alert, ts)
                state.alert = None
            log.info("%s is unreachable (its parent %s is down)", target.name,
                     target.spec.depends_on)
        if old == PENDING and new == UP:
            self._touch()
            return
        self._touch()
        self._emit(Event(f"target.{new}", ts, target, old, new, alert, result))
        if new in (DOWN, UNREACHABLE):
            self._children_unreachable(state)

    def _children_unreachable(self, parent: TargetState) -> None:
        """Children already down when their parent goes down become unreachable.

        Parent and children are probed independently: in one round a child may reach its
        threshold before the parent does. It failed for the parent's reason, so its alert
        closes and the parent's is the only one ("one alert, not twenty"), in either order.
        Grandchildren follow through the child's own change.
        """
        name = parent.target.name
        for child in list(self.states.values()):
            if (child.target.spec.depends_on == name and child.target.enabled
                    and child.status == DOWN):
                self._change(child, UNREACHABLE, child.last)

    def _resolve(self, alert: dict[str, Any], ts: int) -> dict[str, Any]:
        alert = dict(alert)
        alert["resolved_at"] = ts
        self.store.put_alert(alert)
        return alert

    # ------------------------------------------------------------------ acknowledgements

    def acknowledge(self, alert_id: int | None, by: str) -> list[dict[str, Any]]:
        """Acknowledge one open alert (or every open one when alert_id is None).

        Returns the alerts that are now acknowledged. Raises KeyError for an unknown id and
        ValueError for an alert that is already resolved.
        """
        ts = self.clock_ms()
        if alert_id is not None:
            state = next((s for s in self.states.values()
                          if s.alert and s.alert["id"] == alert_id), None)
            if state is None:
                row = self.store.alert(alert_id)
                if row is None:
                    raise KeyError(alert_id)
                raise ValueError(f"alert {alert_id} is already resolved")
            states = [state]
        else:
            states = [s for s in self.states.values() if s.alert is not None]
        done = []
        for state in states:
            assert state.alert is not None
            if not state.alert["acknowledged_at"]:
                state.alert["acknowledged_at"] = ts
                state.alert["acknowledged_by"] = by
                self.store.put_alert(state.alert)
                log.info("alert %d (%s) acknowledged by %s", state.alert["id"],
                         state.target.name, by)
                self._touch()
                self._emit(Event("alert.acknowledged", ts, state.target, state.status, state.status,
                                 dict(state.alert)))
            done.append(dict(state.alert))
        return done

    # ------------------------------------------------------------------ staleness

    def probing_started(self) -> None:
        """Staleness counts from now: no result is overdue before the scheduler runs (a slow
        start-up, building the API and starting components on a Pi Zero or under emulation,
        is not a frozen monitor and must not raise the alarm)."""
        self.started_ms = self.clock_ms()

    def check_stale(self) -> bool:
        """Stale when no result arrived for stale_factor × the shortest enabled interval."""
        intervals = [s.target.spec.interval_seconds for s in self.states.values()
                     if s.target.enabled and s.target.pk > 0]
        stale = False
        if intervals:
            since = self.last_result_ms if self.last_result_ms is not None else self.started_ms
            since = max(since, self.started_ms)
            stale = self.clock_ms() - since > self.stale_factor * min(intervals) * 1000
        if stale != self.stale:
            self.stale = stale
            (log.error if stale else log.info)(
                "monitor is %s", "STALE: no probe results are arriving" if stale else "fresh again"
            )
            self._touch()
            self._emit(Event("monitor.stale" if stale else "monitor.fresh", self.clock_ms()))
        return stale

    # ------------------------------------------------------------------ snapshot

    def _touch(self) -> None:
        self._version += 1
        self._changed_ms = self.clock_ms()
        self._snapshot = None

    def refresh(self) -> None:
        """Rebuild the snapshot on next read.

        For when something outside the monitor, e.g. a silence, changed.
        """
        self._touch()

    def emit(self, event: Event) -> None:
        """Tell every listener about an event that did not come from a result.

        E.g. heartbeats, silences.
        """
        self._emit(event)

    def _emit(self, event: Event) -> None:
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:  # a broken output must never stop the monitor
                log.exception("listener %r failed on %s", listener, event.type)

    def snapshot(self) -> Snapshot:
        """The current state, rebuilt only after something changed."""
        if self._snapshot is not None:
            return self._snapshot
        failing, degraded, acked, unreachable, silenced = [], [], [], [], []
        statuses: dict[str, str] = {}
        tags: dict[str, tuple[str, ...]] = {}
        for state in self.states.values():
            target = state.target
            statuses[target.name] = state.status
            tags[target.name] = tuple(target.spec.tags)
            if not target.enabled:
                continue
            if state.status == DOWN:
                if self.silenced(target):
                    silenced.append(target.name)
                elif state.acknowledged:
                    acked.append(target.name)
                else:
                    failing.append(
                        FailingTarget(target.name, DOWN, state.failures,
                                      target.spec.failure_threshold)
                    )
            elif state.status == UNREACHABLE:
                unreachable.append(target.name)
            elif state.failures > 0:
                degraded.append(target.name)
        if self.stale:
            # A frozen monitor must never look like "all OK": it is itself a failing target.
            failing.insert(0, FailingTarget("pingr monitor", "stale", 0, 0))
        self._snapshot = Snapshot(
            version=self._version,
            ts=self._changed_ms,
            alert=bool(failing),
            failing=tuple(failing),
            stale=self.stale,
            degraded=tuple(degraded),
            acknowledged=tuple(acked),
            unreachable=tuple(unreachable),
            statuses=statuses,
            tags=tags,
            silenced=tuple(silenced),
        )
        return self._snapshot

    def alert_status(self) -> tuple[bytes, str]:
        """The /alert-status body and its ETag, cached until the state changes."""
        snap = self.snapshot()
        if self._status_body is not None and self._status_body[0] == snap.version:
            return self._status_body[1], self._status_body[2]
        body: dict[str, Any] = {
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
            body["acknowledged"] = list(snap.acknowledged)
        if snap.silenced:
            body["silenced"] = list(snap.silenced)
        if snap.unreachable:
            body["unreachable"] = list(snap.unreachable)
        raw = json.dumps(body, separators=(",", ":")).encode()
        etag = '"' + hashlib.blake2b(raw, digest_size=8).hexdigest() + '"'
        self._status_body = (snap.version, raw, etag)
        return raw, etag

    def state_of(self, target_id: str) -> TargetState | None:
        return self.states.get(target_id)


def alert_dict(row: AlertRow | dict[str, Any]) -> dict[str, Any]:
    """An alert row as a plain dict."""
    return row if isinstance(row, dict) else row.model_dump()
