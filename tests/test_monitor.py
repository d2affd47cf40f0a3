"""The state machine alone (pingr.monitor) and liveness (pingr.liveness), on a controlled clock:
thresholds, recovery, dependencies, acknowledgements, silences, staleness, restore."""

from __future__ import annotations

from typing import Any

import pytest

from pingr.liveness import Inputs, Liveness
from pingr.models import Alert, Result, ResultRow, Target
from pingr.monitor import DOWN, PAUSED, PENDING, UNREACHABLE, UP, Change, Monitor
from pingr.probes.registry import parse_spec


class Clock:
    """Milliseconds that move only when a test says so."""

    def __init__(self, ms: int = 1_700_000_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms

    def advance(self, seconds: float) -> None:
        self.ms += round(seconds * 1000)


def target(pk: int, name: str, **spec: Any) -> Target:
    data = {"name": name, "type": "tcp", "host": "127.0.0.1", "port": 1, **spec}
    return Target(pk, f"id-{name}", parse_spec(data))


class Harness:
    """A monitor and what its changes asked for, as the App would see them."""

    def __init__(self, *targets: Target, silenced: Any = lambda t: False) -> None:
        self.clock = Clock()
        self.monitor = Monitor(silenced=silenced, clock_ms=self.clock)
        self.saved: list[Alert] = []
        self.events: list[tuple[str, str | None]] = []
        self.keep(self.monitor.restore(targets, [], {}, 1, None))
        self.targets = {t.name: t for t in targets}

    def keep(self, change: Change | None) -> Change | None:
        if change is not None:
            self.saved += change.alerts
            self.events += [(e.type, e.target.name if e.target else None) for e in change.events]
        return change

    def result(self, name: str, ok: bool, seconds: float = 1.0) -> Change | None:
        self.clock.advance(seconds)
        t = self.targets[name]
        return self.keep(self.monitor.process(
            Result(t.id, self.clock(), ok, latency_ms=3 if ok else None,
                   error=None if ok else f"{name} failed")))

    def status(self, name: str) -> str:
        state = self.monitor.state_of(self.targets[name].id)
        assert state is not None
        return state.status


def test_failures_below_the_threshold_are_amber_then_down_with_one_alert():
    h = Harness(target(1, "web", failure_threshold=3))
    assert h.status("web") == PENDING
    first = h.result("web", True)
    assert h.status("web") == UP and first is not None and not first.events  # no news
    amber = h.result("web", False)
    assert amber is not None and amber.situation and not amber.events and not amber.alerts
    assert h.monitor.snapshot().degraded == ("web",) and not h.monitor.snapshot().alert
    quiet = h.result("web", False)
    assert quiet is not None and not quiet.situation  # a counter moved, nothing else
    down = h.result("web", False)
    assert h.status("web") == DOWN
    assert down is not None and down.urgent and [e.type for e in down.events] == ["target.down"]
    [alert] = down.alerts
    assert (alert.id, alert.peak_failures, alert.last_error) == (1, 3, "web failed")
    snap = h.monitor.snapshot()
    assert snap.alert and [f.name for f in snap.failing] == ["web"]
    assert snap.failing[0].failures == 3 and snap.failing[0].threshold == 3
    # Further failures grow the open alert's count: persisted, but not urgent, no event.
    more = h.result("web", False)
    assert more is not None and not more.urgent and not more.events
    assert [a.peak_failures for a in more.alerts] == [4]
    assert h.events == [("target.down", "web")]


def test_recovery_threshold_needs_consecutive_successes():
    h = Harness(target(1, "web", failure_threshold=1, recovery_threshold=2))
    h.result("web", True)
    h.result("web", False)
    assert h.status("web") == DOWN
    h.result("web", True)
    assert h.status("web") == DOWN  # one success is not enough
    h.result("web", False)
    h.result("web", True)
    assert h.status("web") == DOWN  # the count started again
    up = h.result("web", True)
    assert h.status("web") == UP and up is not None and up.urgent
    [resolved] = up.alerts
    assert resolved.resolved_at == h.clock() and resolved.id == 1
    assert h.events == [("target.down", "web"), ("target.up", "web")]


def test_a_child_behind_a_down_parent_is_unreachable_not_an_alert():
    h = Harness(target(1, "router", failure_threshold=1),
                target(2, "nas", failure_threshold=1, depends_on="router"))
    h.result("router", True)
    h.result("nas", True)
    h.result("router", False)
    h.result("nas", False)
    assert (h.status("router"), h.status("nas")) == (DOWN, UNREACHABLE)
    assert [a.target_name for a in h.saved] == ["router"]  # one alert, not two
    snap = h.monitor.snapshot()
    assert [f.name for f in snap.failing] == ["router"] and snap.unreachable == ("nas",)
    # The router is back but the NAS still fails: now it is its own problem.
    h.result("router", True)
    h.result("nas", False)
    assert h.status("nas") == DOWN
    assert h.events[-1] == ("target.down", "nas")


def test_a_child_down_first_becomes_unreachable_when_its_parent_goes_down():
    h = Harness(target(1, "router", failure_threshold=2),
                target(2, "nas", failure_threshold=1, depends_on="router"))
    h.result("router", True)
    h.result("nas", True)
    h.result("nas", False)  # the child reaches its threshold first
    assert h.status("nas") == DOWN
    h.result("router", False)
    change = h.result("router", False)
    assert (h.status("router"), h.status("nas")) == (DOWN, UNREACHABLE)
    assert change is not None
    assert [e.type for e in change.events] == ["target.down", "target.unreachable"]
    closed = change.events[1].alert
    assert closed is not None and closed.target_name == "nas" and closed.resolved_at is not None
    assert [f.name for f in h.monitor.snapshot().failing] == ["router"]


def test_acknowledge_one_all_unknown():
    h = Harness(target(1, "a", failure_threshold=1), target(2, "b", failure_threshold=1))
    for name in ("a", "b"):
        h.result(name, False)
    acked, change = h.monitor.acknowledge(1, "alice")
    assert [a.acknowledged_by for a in acked] == ["alice"] and change.urgent
    assert [e.type for e in change.events] == ["alert.acknowledged"]
    snap = h.monitor.snapshot()
    assert snap.acknowledged == ("a",) and [f.name for f in snap.failing] == ["b"]
    acked, change = h.monitor.acknowledge(None, "button")
    # Both are acknowledged now; only b was news.
    assert [(a.target_name, a.acknowledged_by) for a in acked] == [("a", "alice"), ("b", "button")]
    assert [e.target.name for e in change.events if e.target] == ["b"]
    assert not h.monitor.snapshot().alert
    with pytest.raises(KeyError):
        h.monitor.acknowledge(99, "alice")


def test_a_silenced_target_is_down_but_not_failing():
    muted: set[str] = set()
    h = Harness(target(1, "web", failure_threshold=1), silenced=lambda t: t.name in muted)
    muted.add("web")
    h.result("web", False)
    snap = h.monitor.snapshot()
    assert h.status("web") == DOWN and snap.silenced == ("web",) and not snap.alert
    muted.clear()
    change = h.monitor.refresh()
    assert change.situation and h.monitor.snapshot().alert


def test_staleness_is_a_failing_target_and_an_event():
    h = Harness(target(1, "web"))
    change = h.keep(h.monitor.set_liveness(stale=True, healthy=False))
    assert change is not None and [e.type for e in change.events] == ["monitor.stale"]
    snap = h.monitor.snapshot()
    assert snap.alert and snap.stale and not snap.healthy
    assert snap.failing[0].name == "pingr monitor" and snap.failing[0].status == "stale"
    assert h.monitor.set_liveness(stale=True, healthy=False) is None  # nothing new
    fresh = h.monitor.set_liveness(stale=False, healthy=True)
    assert fresh is not None and [e.type for e in fresh.events] == ["monitor.fresh"]
    assert not h.monitor.snapshot().alert


def test_pausing_resolves_the_open_alert():
    web = target(1, "web", failure_threshold=1)
    h = Harness(web)
    h.result("web", False)
    paused = Target(web.pk, web.id, parse_spec({**web.spec.model_dump(), "enabled": False}))
    change = h.keep(h.monitor.set_target(paused))
    assert h.status("web") == PAUSED
    assert change is not None and change.urgent and change.targets
    assert [e.type for e in change.events] == ["target.paused"]
    assert change.alerts[0].resolved_at is not None
    assert h.monitor.process(Result(web.id, h.clock(), False)) is None  # paused: ignored


def test_restore_keeps_an_open_alert_and_counters_without_a_second_alert():
    clock = Clock()
    web = target(7, "web", failure_threshold=3)
    open_alert = Alert(5, web.id, "web", opened_at=clock() - 60_000, peak_failures=3)
    recent = [ResultRow(7, clock() - i * 1000, False) for i in range(4)]
    monitor = Monitor(clock_ms=clock)
    monitor.restore([web], [open_alert], {7: recent}, 6, clock() - 1000)
    state = monitor.state_of(web.id)
    assert state is not None and state.status == DOWN and state.failures == 4
    assert state.alert is not None and state.alert.id == 5
    clock.advance(1)
    change = monitor.process(Result(web.id, clock(), False))
    assert change is not None and not change.events  # still the same alert
    assert monitor.last_result_ms == clock()
    # An alert whose target is gone is resolved once the collectors had their chance.
    ghost = Monitor(clock_ms=clock)
    ghost.restore([], [Alert(9, "container:old", "container:old", clock())], {}, 10, None)
    assert [a.resolved_at for a in ghost.resolve_orphans().alerts] == [clock()]


def test_liveness_stale_unhealthy_and_when_to_look_again():
    clock = Clock()
    now = [100.0]
    live = Liveness(stale_factor=3, stagger=0, clock_ms=clock, loop_time=lambda: now[0])
    inputs = Inputs([(10.0, 2.0)], last_result_ms=clock(), last_beat=now[0], dead_loops=0)
    assert live.evaluate(inputs).healthy and not live.verdict.stale
    # Next look: when the newest result would be 30 s old (3 × 10 s), not every second.
    assert live.next_check(inputs, 60) == pytest.approx(30.01)
    clock.advance(31)
    now[0] += 31
    verdict = live.evaluate(inputs)
    assert verdict.stale and not verdict.healthy and "no probe result for 31s" in verdict.reason
    # Results arrive but the last probe finished long ago (probes hang after their result).
    fresh = Inputs([(10.0, 2.0)], last_result_ms=clock(), last_beat=now[0] - 33, dead_loops=0)
    verdict = live.evaluate(fresh)
    assert not verdict.stale and not verdict.healthy and "limit 32s" in verdict.reason
    dead = Inputs([(10.0, 2.0)], last_result_ms=clock(), last_beat=now[0], dead_loops=1)
    assert "probe loop" in live.evaluate(dead).reason
    assert live.evaluate(Inputs([], None, 0.0, 0)).healthy  # nothing to watch: fine


# ------------------------------------------------------------------ certificate warnings

def cert_result(t: Target, ts: int, *, ok: bool = True, warning: bool = False,
                expired: bool = False, days: float = 60.0, read: bool = True) -> Result:
    """A TLS probe's result as pingr.probes.tls makes it (metrics only when a certificate
    was read)."""
    metrics = None
    if read:
        metrics = {"days_left": days, "not_after": "2027-01-15T12:00:00Z", "issuer": "CN=CA",
                   "sha256": "ab" * 32, "warning": warning, "expired": expired,
                   "verified": True}
    return Result(t.id, ts, ok, latency_ms=2, error=None if ok else "certificate expired",
                  metrics=metrics)


def test_certificate_warning_is_a_notice_not_an_alarm():
    cert = Target(1, "id-cert", parse_spec({"name": "NAS certificate", "type": "tls",
                                            "host": "127.0.0.1", "failure_threshold": 1}))
    h = Harness(cert)
    clock, m = h.clock, h.monitor
    h.keep(m.process(cert_result(cert, clock())))
    assert m.snapshot().warnings == () and h.events == []
    clock.advance(3600)
    change = h.keep(m.process(cert_result(cert, clock(), warning=True, days=3.5)))
    assert change is not None and change.situation and not change.alerts
    [event] = change.events
    assert event.type == "certificate.alert" and event.target is cert
    assert event.data["message"] == ("certificate expires in 3.5 days "
                                     "(on 2027-01-15T12:00:00Z)")
    assert event.data["days_left"] == 3.5 and event.data["sha256"] == "ab" * 32
    snap = m.snapshot()
    assert snap.warnings == ("NAS certificate",)
    assert not snap.alert and snap.failing == () and snap.statuses["NAS certificate"] == UP
    # Still warning a day later: the text moves, nothing is news.
    clock.advance(86400)
    quiet = h.keep(m.process(cert_result(cert, clock(), warning=True, days=2.5)))
    assert quiet is not None and not quiet.events and not quiet.situation
    assert m.state_of(cert.id).warning.startswith("certificate expires in 2.5 days")
    # A probe that read no certificate (connection refused) keeps what was known.
    clock.advance(60)
    h.keep(m.process(cert_result(cert, clock(), ok=False, read=False)))
    assert h.status("NAS certificate") == DOWN and m.state_of(cert.id).warning is not None
    assert m.snapshot().warnings == ()  # down: it is failing, not "only a warning"
    # Expired: down (the normal alert path) and still no "recovery" of the warning.
    clock.advance(60)
    h.keep(m.process(cert_result(cert, clock(), ok=False, expired=True, days=-0.1)))
    assert m.state_of(cert.id).warning == "certificate expired on 2027-01-15T12:00:00Z"
    assert [t for t, _ in h.events] == ["certificate.alert", "target.down"]
    # Renewed: up, and the warning ends with certificate.recovery.
    clock.advance(60)
    renewed = h.keep(m.process(cert_result(cert, clock(), days=89.0)))
    assert renewed is not None
    assert [e.type for e in renewed.events] == ["target.up", "certificate.recovery"]
    assert renewed.events[1].data["days_left"] == 89.0
    assert m.snapshot().warnings == () and m.state_of(cert.id).warning is None


def test_certificate_warning_survives_a_change_of_the_target_and_other_kinds_ignore_it():
    cert = Target(1, "id-cert", parse_spec({"name": "c", "type": "tls", "host": "127.0.0.1"}))
    web = target(2, "web")
    h = Harness(cert, web)
    h.keep(h.monitor.process(cert_result(cert, h.clock(), warning=True, days=5)))
    assert h.monitor.snapshot().warnings == ("c",)
    renamed = Target(1, "id-cert", parse_spec({"name": "c", "type": "tls", "host": "127.0.0.1",
                                               "warn_days": 30}))
    h.keep(h.monitor.set_target(renamed))
    assert h.monitor.snapshot().warnings == ("c",)
    h.targets["c"] = renamed
    # Results without certificate metrics (every other kind) never touch warnings.
    h.result("web", True)
    h.keep(h.monitor.process(Result(web.id, h.clock(), True, metrics={"answers": ["x"]})))
    assert h.monitor.state_of(web.id).warning is None
    assert [t for t, _ in h.events] == ["certificate.alert"]
