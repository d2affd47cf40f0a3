"""Per-target state machine: thresholds, dependencies, alerts, acknowledgements (no I/O).

Every method that moves the state returns a `Change`: the events to tell (in order), the alert
records to persist, and whether the situation everybody looks at changed. The App persists and
fans the change out; the monitor never calls anybody (see pingr/app.py `on_result`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from pingr.models import Alert, Result, ResultRow, Target
from pingr.timeutil import now_ms

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
    alert: Alert | None = None
    #: A certificate's expiry warning ("certificate expires in 3.5 days (…)") while it is
    #: within warn_days or expired; None when fine or not known yet (no certificate read).
    warning: str | None = None

    @property
    def acknowledged(self) -> bool:
        return self.alert is not None and self.alert.acknowledged


@dataclass(frozen=True)
class Event:
    """A state change worth telling outputs, notifiers and event streams about."""

    type: str  # target.down, target.up, target.unreachable, alert.acknowledged, monitor.stale, …
    ts: int
    target: Target | None = None
    old: str | None = None
    new: str | None = None
    alert: Alert | None = None
    result: Result | None = None
    data: dict[str, object] = field(default_factory=dict)


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
    #: Up, but with a certificate near (or past) its expiry: a notice, not an alarm.
    warnings: tuple[str, ...] = ()
    #: The appliance itself works: probes finish on time (pingr.liveness); drives the dead-man
    #: output and the systemd watchdog.
    healthy: bool = True
    #: What keeps the appliance from its whole job while it goes on (GPIO outputs that cannot
    #: switch, storage that cannot be written), in the user's words: it runs degraded.
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Change:
    """What one step of the state machine changed."""

    #: Events to tell, in the order they happened.
    events: tuple[Event, ...] = ()
    #: Alert records to persist (copies): opened, updated, acknowledged, resolved.
    alerts: tuple[Alert, ...] = ()
    #: The situation changed (statuses, acknowledgements, amber, staleness, silences): outputs,
    #: MQTT and pollers must look again. False when only counters moved.
    situation: bool = False
    #: Targets were added, removed, renamed or re-specified (MQTT rediscovers).
    targets: bool = False
    #: Worth a database commit now: an alert opened, was acknowledged or resolved (a grown
    #: failure count of an open alert rides the next batched commit).
    urgent: bool = False
    #: A target's status changed, perhaps only from pending to up (which nobody shows but
    #: the status itself: no fan-out, but the fleet's state carries statuses).
    statuses: bool = False

    def __bool__(self) -> bool:
        return bool(self.events or self.alerts or self.situation or self.targets
                    or self.statuses)


#: What most results change: nothing but counters (shared, so a steady result allocates none).
NO_CHANGE = Change()


class _Step:
    """Collects what one public call changes, then turns it into a Change."""

    __slots__ = ("events", "alerts", "situation", "targets", "urgent", "statuses")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.alerts: list[Alert] = []
        self.situation = False
        self.targets = False
        self.urgent = False
        self.statuses = False

    def flip(self, alert: Alert) -> None:
        """An alert opened, was acknowledged or resolved: persist it at once."""
        self.alerts.append(alert)
        self.urgent = True

    def done(self) -> Change:
        if not (self.events or self.alerts or self.situation or self.targets
                or self.statuses):
            return NO_CHANGE
        return Change(tuple(self.events), tuple(self.alerts), self.situation, self.targets,
                      self.urgent, self.statuses)


def certificate_warning(metrics: dict[str, object]) -> str | None:
    """The expiry warning of a TLS result's metrics, or None when the certificate is fine."""
    if metrics.get("expired"):
        return f"certificate expired on {metrics.get('not_after')}"
    if metrics.get("warning"):
        days = metrics.get("days_left")
        left = f"{days:.1f} days" if isinstance(days, int | float) else "a few days"
        return f"certificate expires in {left} (on {metrics.get('not_after')})"
    return None


class Monitor:
    """Turns results into state changes. All methods run on the event loop thread."""

    def __init__(self, *, silenced: Callable[[Target], bool] = lambda target: False,
                 held: Callable[[Target], str | None] = lambda target: None,
                 clock_ms: Callable[[], int] = now_ms) -> None:
        #: Is this target muted by a silence right now? (pingr.silence.Silences.is_silenced)
        self.silenced = silenced
        #: Why this target's failure is for something outside the monitor to decide right now,
        #: or None (pingr.fleet: a shared check waits for its quorum; this node's own uplink is
        #: down). Asked when a target reaches its threshold: such a target is unreachable, like
        #: a child behind a parent that is down: visible, but no alert of its own.
        self.held = held
        self.clock_ms = clock_ms
        self._states: dict[str, TargetState] = {}
        self._by_name: dict[str, str] = {}
        #: Wall time (ms) of the newest result of a probed target: what staleness measures.
        self.last_result_ms: int | None = None
        self._stale = False
        self._healthy = True
        self._problems: tuple[str, ...] = ()
        self._version = 0
        self._changed_ms = clock_ms()
        self._snapshot: Snapshot | None = None
        self._next_alert_id = 1
        self._unclaimed: dict[str, Alert] = {}

    # ------------------------------------------------------------------ reading

    def state_of(self, target_id: str) -> TargetState | None:
        return self._states.get(target_id)

    def states(self) -> Iterator[TargetState]:
        """Every target's state (read only: change targets through the methods below)."""
        return iter(list(self._states.values()))

    def target_named(self, name: str) -> Target | None:
        state = self._states.get(self._by_name.get(name, ""))
        return state.target if state else None

    @property
    def stale(self) -> bool:
        return self._stale

    # ------------------------------------------------------------------ setup

    def restore(self, targets: Iterable[Target], open_alerts: Iterable[Alert],
                recents: dict[int, list[ResultRow]], next_alert_id: int,
                newest_result_ms: int | None) -> Change:
        """Restore open alerts and consecutive counters from storage (no double alerts).

        `recents` holds each target's newest results up to the first change of state.
        """
        step = _Step()
        self._next_alert_id = next_alert_id
        by_target = {a.target_id: a for a in open_alerts}
        for target in targets:
            state = self._add(target)
            alert = by_target.pop(target.id, None)
            if not target.enabled:
                if alert is not None:
                    self._resolve(step, alert, self.clock_ms())
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
                state.alert = alert
                state.status = DOWN
                state.changed_ms = alert.opened_at
            elif state.failures >= target.spec.failure_threshold:
                # Was unreachable (behind a parent) or never alerted: count again from here.
                state.status = UNREACHABLE if self._parent_down(state) else PENDING
        # Alerts of targets not known yet: collectors add their targets after this and adopt
        # them; resolve_orphans() closes what nobody claimed.
        self._unclaimed = by_target
        if newest_result_ms is not None:
            self.last_result_ms = newest_result_ms
        step.situation = step.targets = True
        self._touch()
        return step.done()

    def resolve_orphans(self) -> Change:
        """Resolve open alerts whose target no longer exists (deleted while we were stopped)."""
        step = _Step()
        for alert in self._unclaimed.values():
            self._resolve(step, alert, self.clock_ms())
        self._unclaimed.clear()
        return step.done()

    def _add(self, target: Target) -> TargetState:
        state = TargetState(target, changed_ms=self.clock_ms())
        if not target.enabled:
            state.status = PAUSED
        self._states[target.id] = state
        self._by_name[target.name] = target.id
        return state

    def set_target(self, target: Target) -> Change:
        """Add or replace a target (API change, config reload, a collector's new finding);
        counters restart on change, an open alert is kept."""
        step = _Step()
        step.targets = step.situation = True
        old = self._states.get(target.id)
        if old is not None:
            self._by_name.pop(old.target.name, None)
        state = self._add(target)
        adopted = self._unclaimed.pop(target.id, None)
        if adopted is not None and old is None and target.enabled:
            state.alert, state.status = adopted, DOWN  # restored: no second alert
        if old is not None and target.enabled:
            state.warning = old.warning  # the certificate is the same until probed again
        if old is not None and old.alert is not None:
            if target.enabled:
                state.alert, state.status = old.alert, old.status
                state.failures, state.last = old.failures, old.last
            else:
                self._resolve(step, old.alert, self.clock_ms())
        if not target.enabled and old is not None and old.status != PAUSED:
            step.events.append(Event("target.paused", self.clock_ms(), target, old.status, PAUSED))
        self._touch()
        return step.done()

    def remove(self, target_id: str) -> Change:
        step = _Step()
        state = self._states.pop(target_id, None)
        if state is None:
            return step.done()
        self._by_name.pop(state.target.name, None)
        if state.alert is not None:
            self._resolve(step, state.alert, self.clock_ms())
        step.events.append(Event("target.deleted", self.clock_ms(), state.target, state.status,
                                 None))
        step.targets = step.situation = True
        self._touch()
        return step.done()

    # ------------------------------------------------------------------ results

    def process(self, result: Result) -> Change | None:
        """Move the state machine by one probe result; None for an unknown or paused target."""
        state = self._states.get(result.target_id)
        if state is None or not state.target.enabled:
            return None
        target = state.target
        if target.probed:
            # Staleness means "probes stopped arriving": a collector's findings (system, Pi,
            # containers) must not hide a stalled scheduler.
            self.last_result_ms = result.ts
        state.last = result
        old = state.status
        if (result.success and old == UP and not state.failures
                and (not result.metrics or "warning" not in result.metrics)):
            state.successes += 1
            return NO_CHANGE  # the common case: still fine, nothing to build (a certificate
            # read, which may begin or end a warning, takes the long way)
        step = _Step()
        spec = target.spec
        if result.success:
            state.successes += 1
            was_failing = state.failures > 0
            state.failures = 0
            if old == PENDING or (old in (DOWN, UNREACHABLE)
                                  and state.successes >= spec.recovery_threshold):
                self._change(step, state, UP, result)
            elif was_failing and old == UP:
                step.situation = True  # amber -> green
                self._touch()
        else:
            state.failures += 1
            state.successes = 0
            if state.failures >= spec.failure_threshold and old not in (DOWN, UNREACHABLE):
                self._change(step, state, UNREACHABLE if self._explained(state) else DOWN,
                             result)
            elif old == UNREACHABLE and not self._explained(state):
                self._change(step, state, DOWN, result)
            else:
                if state.failures == 1 and old == UP:
                    step.situation = True  # green -> amber
                alert = state.alert
                if alert is not None and state.failures > alert.peak_failures:
                    alert.peak_failures = state.failures
                    alert.last_error = result.error
                    step.alerts.append(alert.copy())
                self._touch()  # the failure count is part of what pollers read
        self._certificate(step, state, result)
        return step.done()

    def _certificate(self, step: _Step, state: TargetState, result: Result) -> None:
        """A certificate's expiry warning (pingr.probes.tls metrics) begins or ends:
        `certificate.alert` / `certificate.recovery`, as Maintenant names them. A result that
        read no certificate (connection refused) leaves what was known as it was."""
        metrics = result.metrics
        if not metrics or "warning" not in metrics:
            return
        text = certificate_warning(metrics)
        was, state.warning = state.warning, text
        if (was is None) == (text is None):
            return  # unchanged (the days left in the text move every day: no news)
        data = {k: metrics.get(k) for k in ("days_left", "not_after", "issuer", "sha256")}
        if text is not None:
            data["message"] = text
            log.warning("%s: %s", state.target.name, text)
        else:
            log.info("%s: certificate renewed (valid until %s)", state.target.name,
                     metrics.get("not_after"))
        step.events.append(Event("certificate.alert" if text else "certificate.recovery",
                                 self.clock_ms(), state.target, data=data))
        step.situation = True
        self._touch()

    def _parent_down(self, state: TargetState) -> bool:
        parent_name = state.target.spec.depends_on
        if not parent_name:
            return False
        parent = self._states.get(self._by_name.get(parent_name, ""))
        return parent is not None and parent.status in (DOWN, UNREACHABLE)

    def _explained(self, state: TargetState) -> str | None:
        """Why a failing target is unreachable rather than down, or None."""
        if self._parent_down(state):
            return f"its parent {state.target.spec.depends_on} is down"
        return self.held(state.target)

    def _change(self, step: _Step, state: TargetState, new: str, result: Result | None) -> None:
        old, ts = state.status, self.clock_ms()
        state.status, state.changed_ms = new, ts
        step.statuses = True
        target = state.target
        alert = None
        if new == DOWN and state.alert is None:
            alert = state.alert = Alert(
                id=self._next_alert_id, target_id=target.id, target_name=target.name,
                opened_at=ts, peak_failures=state.failures,
                last_error=result.error if result else None)
            self._next_alert_id += 1
            step.flip(alert.copy())
            log.warning("%s is DOWN after %d failures: %s", target.name, state.failures,
                        result.error if result else "")
        elif new == UP and state.alert is not None:
            alert = self._resolve(step, state.alert, ts)
            state.alert = None
            log.info("%s is UP again", target.name)
        elif new == UNREACHABLE:
            if state.alert is not None:  # it went down first: its parent explains it now
                alert = self._resolve(step, state.alert, ts)
                state.alert = None
            log.info("%s is unreachable (%s)", target.name,
                     self._explained(state) or "its parent is down")
        self._touch()
        if old == PENDING and new == UP:
            return  # a first success is no news, and nothing anybody shows changes but its status
        step.situation = True
        step.events.append(Event(f"target.{new}", ts, target, old, new,
                                 alert.copy() if alert else None, result))
        if new in (DOWN, UNREACHABLE):
            self._children_unreachable(step, state)

    def _children_unreachable(self, step: _Step, parent: TargetState) -> None:
        """Children already down when their parent goes down become unreachable.

        Parent and children are probed independently: in one round a child may reach its
        threshold before the parent does. It failed for the parent's reason, so its alert
        closes and the parent's is the only one ("one alert, not twenty"), in either order.
        Grandchildren follow through the child's own change.
        """
        name = parent.target.name
        for child in list(self._states.values()):
            if (child.target.spec.depends_on == name and child.target.enabled
                    and child.status == DOWN):
                self._change(step, child, UNREACHABLE, child.last)

    def _resolve(self, step: _Step, alert: Alert, ts: int) -> Alert:
        resolved = alert.copy(resolved_at=ts)
        step.flip(resolved)
        return resolved

    def reconsider(self) -> Change:
        """What `held` answers changed (pingr.fleet: this node's uplink went down): a target
        that is down and now held becomes unreachable, and its alert closes.

        The other way needs no call: a held target that is not held any more goes down at
        its next failure, as a child does once its parent is back.
        """
        step = _Step()
        for state in list(self._states.values()):
            if state.target.enabled and state.status == DOWN and self._explained(state):
                self._change(step, state, UNREACHABLE, state.last)
        return step.done()

    # ------------------------------------------------------------------ acknowledgements

    def acknowledge(self, alert_id: int | None, by: str) -> tuple[list[Alert], Change]:
        """Acknowledge one open alert (or every open one when alert_id is None).

        Returns the alerts now acknowledged and the change. Raises KeyError when no open alert
        has that id (the caller tells "unknown" from "already resolved").
        """
        step = _Step()
        ts = self.clock_ms()
        if alert_id is not None:
            state = next((s for s in self._states.values()
                          if s.alert is not None and s.alert.id == alert_id), None)
            if state is None:
                raise KeyError(alert_id)
            states = [state]
        else:
            states = [s for s in self._states.values() if s.alert is not None]
        done = []
        for state in states:
            alert = state.alert
            assert alert is not None
            if not alert.acknowledged:
                alert.acknowledged_at, alert.acknowledged_by = ts, by
                step.flip(alert.copy())
                log.info("alert %d (%s) acknowledged by %s", alert.id, state.target.name, by)
                step.situation = True
                step.events.append(Event("alert.acknowledged", ts, state.target, state.status,
                                         state.status, alert.copy()))
            done.append(alert.copy())
        if step.situation:
            self._touch()
        return done, step.done()

    # ------------------------------------------------------------------ liveness, silences

    def set_problems(self, problems: tuple[str, ...]) -> Change | None:
        """Take what keeps the appliance from its whole job (the App collects it)."""
        if problems == self._problems:
            return None
        for problem in problems:
            if problem not in self._problems:
                log.error("pingr runs DEGRADED: %s", problem)
        if not problems:
            log.info("pingr is no longer degraded")
        self._problems = problems
        self._touch()
        return Change(situation=True)

    def set_liveness(self, stale: bool, healthy: bool) -> Change | None:
        """Take the appliance's liveness (pingr.liveness computes it once a second)."""
        if stale == self._stale and healthy == self._healthy:
            return None
        events = []
        if stale != self._stale:
            (log.error if stale else log.info)(
                "monitor is %s", "STALE: no probe results are arriving" if stale else "fresh again")
            events.append(Event("monitor.stale" if stale else "monitor.fresh", self.clock_ms()))
        self._stale, self._healthy = stale, healthy
        self._touch()
        return Change(tuple(events), situation=True)

    def refresh(self, event: Event | None = None) -> Change:
        """Something outside the monitor changed what the snapshot shows (a silence began or
        ended); `event` says what."""
        self._touch()
        return Change((event,) if event else (), situation=True)

    # ------------------------------------------------------------------ snapshot

    def _touch(self) -> None:
        self._version += 1
        self._changed_ms = self.clock_ms()
        self._snapshot = None

    def snapshot(self) -> Snapshot:
        """The current state, rebuilt only after something changed."""
        if self._snapshot is not None:
            return self._snapshot
        failing, degraded, acked, unreachable, silenced, warnings = [], [], [], [], [], []
        statuses: dict[str, str] = {}
        tags: dict[str, tuple[str, ...]] = {}
        # One pass over every target (thousands with a large fleet): plain attribute reads.
        for state in self._states.values():
            target = state.target
            spec = target.spec
            name, status = spec.name, state.status
            statuses[name] = status
            tags[name] = tuple(spec.tags)
            if not spec.enabled:
                continue
            if status == DOWN:
                if self.silenced(target):
                    silenced.append(name)
                elif state.acknowledged:
                    acked.append(name)
                else:
                    failing.append(
                        FailingTarget(name, DOWN, state.failures, spec.failure_threshold))
            elif status == UNREACHABLE:
                unreachable.append(name)
            elif state.failures > 0:
                degraded.append(name)
            if state.warning is not None and status not in (DOWN, UNREACHABLE):
                warnings.append(name)
        if self._stale:
            # A frozen monitor must never look like "all OK": it is itself a failing target.
            failing.insert(0, FailingTarget("pingr monitor", "stale", 0, 0))
        self._snapshot = Snapshot(
            version=self._version,
            ts=self._changed_ms,
            alert=bool(failing),
            failing=tuple(failing),
            stale=self._stale,
            degraded=tuple(degraded),
            acknowledged=tuple(acked),
            unreachable=tuple(unreachable),
            statuses=statuses,
            tags=tags,
            silenced=tuple(silenced),
            warnings=tuple(warnings),
            healthy=self._healthy,
            problems=self._problems,
        )
        return self._snapshot
