"""Who is told what, and when: cooldown, reminders, recoveries, silences (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pingr.models import Alert, Target
from pingr.monitor import DOWN, UP, TargetState
from pingr.settings import NotifySettings


@dataclass
class Channel:
    """A channel as the notifier uses it."""

    id: int
    name: str
    url: str
    on: list[str]
    targets: list[str]
    tags: list[str]
    source: str = "api"
    enabled: bool = True

    def matches(self, target: Target) -> bool:
        """No filter means every target; otherwise a listed name or one shared tag."""
        if not self.targets and not self.tags:
            return True
        return target.name in self.targets or bool(set(self.tags) & set(target.spec.tags))

    @classmethod
    def of(cls, d: dict[str, Any]) -> Channel:
        return cls(d["id"], d["name"], d["url"], list(d["on"]), list(d["targets"]), list(d["tags"]),
                   d["source"], d["enabled"])


@dataclass
class Track:
    """What one channel was last told about one target (drives cooldown, reminders, recovery)."""

    alert_id: int | None = None
    alert: Alert | None = None
    sent: bool = False  # the alert (or a reminder) went out for alert_id
    closed: bool = True  # recovery sent, or nothing to recover from
    last_sent_ms: int | None = None
    last_down_msg_ms: int | None = None
    muted_logged: bool = False


@dataclass(frozen=True)
class Intent:
    """A message the policy wants sent (or, with `suppressed`, logged as held back)."""

    channel: Channel
    target: Target
    kind: str  # alert, reminder, recovery, certificate.alert, certificate.recovery
    alert: Alert
    suppressed: str | None = None


class Policy:
    """Compares what each channel was told with every target's state.

    Level-driven rather than one message per event: a message held back by the cooldown or a
    silence goes out later if it is still true, and a flapping target produces at most one
    message per cooldown per channel.
    """

    def __init__(self, settings: NotifySettings) -> None:
        self.settings = settings
        self.tracks: dict[tuple[int, str], Track] = {}
        #: (channel, target) told about a certificate's expiry warning and not yet about its
        #: renewal.
        self.warned: set[tuple[int, str]] = set()

    def evaluate(self, states: Iterable[TargetState], channels: dict[int, Channel],
                 silenced: Callable[[Target], bool], now: int) -> list[Intent]:
        """What is due now, in order; `tracks` remember it as sent."""
        s = self.settings
        cooldown_ms, reminder_ms = s.cooldown * 1000, s.reminder_interval * 1000
        states = list(states)
        known = {st.target.id for st in states}
        for key in [k for k in self.tracks if k[1] not in known or k[0] not in channels]:
            del self.tracks[key]
        self.warned = {k for k in self.warned if k[1] in known and k[0] in channels}
        out: list[Intent] = []
        for state in states:
            target = state.target
            if not target.enabled:
                continue
            muted: bool | None = None
            for ch in channels.values():
                if not ch.enabled or not ch.matches(target):
                    continue
                key = (ch.id, target.id)
                tr = self.tracks.get(key)
                if muted is None:
                    muted = silenced(target)
                self._certificate(out, ch, state, muted, now)
                cooled = (tr is None or tr.last_sent_ms is None
                          or now - tr.last_sent_ms >= cooldown_ms)
                alert = state.alert
                if state.status == DOWN and alert is not None:
                    if tr is None or tr.alert_id != alert.id:
                        # A new alert. If the channel still believes the target is down (its
                        # recovery was held back by the cooldown), it need not be told again.
                        still_down = tr is not None and tr.sent and not tr.closed
                        tr = self.tracks[key] = Track(
                            alert_id=alert.id, alert=alert.copy(), sent=still_down, closed=False,
                            last_sent_ms=tr.last_sent_ms if tr else None,
                            last_down_msg_ms=tr.last_down_msg_ms if still_down and tr else None)
                    tr.alert = alert.copy()
                    if muted:
                        if not tr.muted_logged and "alert" in ch.on and not tr.sent:
                            tr.muted_logged = True
                            out.append(Intent(ch, target, "alert", alert.copy(), "silenced"))
                        continue
                    if not tr.sent:
                        if "alert" in ch.on and cooled and not alert.acknowledged:
                            out.append(Intent(ch, target, "alert", alert.copy()))
                            tr.sent, tr.last_sent_ms, tr.last_down_msg_ms = True, now, now
                        continue
                    due = now - (tr.last_down_msg_ms or alert.opened_at) >= reminder_ms
                    if ("reminder" in ch.on and reminder_ms > 0 and due and cooled
                            and not alert.acknowledged):
                        out.append(Intent(ch, target, "reminder", alert.copy()))
                        tr.last_sent_ms = tr.last_down_msg_ms = now
                elif tr is not None and not tr.closed and state.status == UP:
                    if muted or "recovery" not in ch.on or not tr.sent:
                        tr.closed = True
                    elif cooled:
                        base = tr.alert or Alert(0, target.id, target.name, now)
                        resolved = base.copy(resolved_at=base.resolved_at or state.changed_ms)
                        out.append(Intent(ch, target, "recovery", resolved))
                        tr.closed, tr.last_sent_ms = True, now
        return out

    def _certificate(self, out: list[Intent], ch: Channel, state: TargetState, muted: bool,
                     now: int) -> None:
        """A certificate's expiry warning: told once to channels that get alerts (held back
        while silenced), and its end ("renewed") to those that get recoveries.

        The end is told only on a certificate actually read without a warning: after a
        restart nothing is known until the first probe, which must not read as a renewal."""
        target = state.target
        key = (ch.id, target.id)
        if state.warning is not None:
            if key not in self.warned and "alert" in ch.on and not muted:
                self.warned.add(key)
                out.append(Intent(ch, target, "certificate.alert",
                                  Alert(0, target.id, target.name, now,
                                        last_error=state.warning)))
            return
        last = state.last
        if key in self.warned and last is not None and last.metrics \
                and "warning" in last.metrics:
            self.warned.discard(key)
            if "recovery" in ch.on and not muted:
                out.append(Intent(ch, target, "certificate.recovery",
                                  Alert(0, target.id, target.name, now)))
