"""The outputs part: what every relay, lamp and siren shows; lamp tests; the safe stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import Any

from pingr.fleet.config import FLEET_TAG
from pingr.monitor import Snapshot
from pingr.outputs.backend import Backend, PinsUnavailable, open_backend
from pingr.outputs.buttons import ButtonInput
from pingr.outputs.config import HardwareConfig
from pingr.outputs.devices import Output, build_outputs
from pingr.outputs.kinds import (
    OutputBase,
    PatternConfig,
    SelectorConfig,
    in_quiet_hours,
    parse_quiet_hours,
)

log = logging.getLogger(__name__)


class Situation:
    """What the outputs need from one snapshot, computed once per change."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.healthy = snap.healthy and not snap.stale
        self.failing = {f.name for f in snap.failing}  # unacknowledged (silenced ones excluded)
        self.acked = set(snap.acknowledged)
        if snap.stale:
            self.state = "stale"
        elif not self.healthy:
            self.state = "unhealthy"
        elif self.failing:
            self.state = "alert"
        elif self.acked:
            self.state = "acknowledged"
        elif snap.degraded or snap.unreachable or snap.silenced:
            # A silenced target is down but muted: no sound, no alarm lamp, yet not green.
            self.state = "degraded"
        else:
            self.state = "ok"

    def drive(self, when: str | SelectorConfig) -> tuple[bool, bool]:
        """(active for a visual output, active for an audible one) under `when`."""
        if isinstance(when, SelectorConfig):
            tags = self.snap.tags
            hit = {n for n in self.failing | self.acked if when.matches(n, tags.get(n, ()))}
            loud = {n for n in self.failing if when.matches(n, tags.get(n, ()))}
            return bool(hit), bool(loud)
        if when == "alert":
            # Visual alarms stay on until recovery; an acknowledgement only silences.
            return bool(self.failing or self.acked), bool(self.failing)
        if when == "fleet_down":
            # Any fleet alert: a site offline, a site's own alerts, a shared check, our uplink.
            tags = self.snap.tags
            loud = {n for n in self.failing if FLEET_TAG in tags.get(n, ())}
            seen = loud | {n for n in self.acked if FLEET_TAG in tags.get(n, ())}
            return bool(seen), bool(loud)
        active = {
            "ok": self.state == "ok",
            "stale": self.snap.stale,
            "degraded": bool(self.snap.degraded),
            "healthy": self.healthy,
            "heartbeat": self.healthy,
        }[when]
        return active, active


@dataclass(frozen=True)
class OutputState:
    """One output as the API, MQTT and the dashboard show it."""

    name: str
    kind: str
    audible: bool
    shows_states: bool
    active: bool  # its condition holds (a tower: anything but all-ok)
    silenced_by: str | None  # acknowledged or quiet_hours
    testing: bool
    value: Any

    @property
    def on(self) -> bool:
        """Sounding or lit right now (a lamp test counts)."""
        return (self.active and self.silenced_by is None) or self.testing


class Outputs:
    """Owns the pin factory, the outputs and the buttons.

    `update(snapshot)` is called by the App's fan-out; a button press is handed to
    `on_button(action, by)` on the loop (the App acknowledges or lamp-tests, like the API);
    `on_state()` is called when what the outputs show changed without a snapshot (a lamp test
    ended, quiet hours began), so MQTT can say so.
    """

    def __init__(self, config: HardwareConfig, *, on_button: Callable[[str, str], None],
                 on_state: Callable[[], None]) -> None:
        self.config = config
        self.on_button = on_button
        self.on_state = on_state
        self.backend: Backend | None = None
        self.outputs: dict[str, Output] = {}
        self.buttons: dict[str, ButtonInput] = {}
        #: Why the configured outputs cannot switch anything (real pins unavailable), or None.
        self.problem: str | None = None
        self.state = "ok"
        self._active: dict[str, bool] = {}
        self._silenced: dict[str, str | None] = {}
        self._testing: dict[str, asyncio.TimerHandle] = {}
        self._quiet = {o.name: self._quiet_span(o) for o in self.config.outputs}
        self._quiet_timer: asyncio.TimerHandle | None = None
        self._snapshot: Snapshot | None = None
        self._running = False

    @property
    def configured(self) -> bool:
        return bool(self.config.outputs or self.config.buttons)

    @property
    def running(self) -> bool:
        """Pins are open and follow the snapshot."""
        return self._running

    def _quiet_span(self, out: OutputBase) -> Any:
        text = out.own_quiet_hours
        text = text if text is not None else self.config.quiet_hours
        if not out.is_audible or text is None or text.strip().lower() == "none":
            return None
        return parse_quiet_hours(text)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, snapshot: Snapshot, lamp_test: bool) -> None:
        """Open the pins (everything off), lamp-test if asked, then show `snapshot`.

        When real pins cannot be opened, `problem` says why (and the error is logged loudly):
        probing and the API go on, and the App reports the appliance degraded.
        """
        if not self.configured:
            return
        loop = asyncio.get_running_loop()
        try:
            self.backend = open_backend(self.config.backend, self.config.pwm_pins())
        except PinsUnavailable as exc:
            self.problem = str(exc)
            log.error("GPIO OUTPUTS DO NOT WORK: %s", exc)
            return
        try:
            self.outputs = build_outputs(self.config.outputs, self.backend.factory)
            for cfg in self.config.buttons:
                self.buttons[cfg.name] = ButtonInput(cfg, self.backend.factory, loop,
                                                     self._button)
        except Exception as exc:  # gpiozero's own errors: a busy line, a missing chip
            self._close_all()
            self.problem = f"cannot open the pins: {exc}"
            log.error("GPIO OUTPUTS DO NOT WORK: %s", self.problem)
            return
        self._running = True
        if lamp_test and self.config.lamp_test.at_start:
            self.lamp_test()
        self.update(snapshot)
        log.info("%d outputs and %d buttons on %s pins", len(self.outputs), len(self.buttons),
                 self.backend.name)

    async def stop(self) -> None:
        """Every output to its safe state, then release the pins."""
        if not self._running:
            self._close_all()
            return
        self._running = False
        if self._quiet_timer is not None:
            self._quiet_timer.cancel()
        for handle in self._testing.values():
            handle.cancel()
        self._testing.clear()
        for out in self.outputs.values():
            try:
                out.safe()
            except Exception:  # one broken output must not keep the others from a safe state
                log.exception("output %s: setting its safe state failed", out.name)
        log.info("outputs in their safe states")
        self._close_all()

    def _close_all(self) -> None:
        for button in self.buttons.values():
            button.close()
        for out in self.outputs.values():
            out.close()
        if self.backend is not None:
            self.backend.close()

    # ------------------------------------------------------------------ inputs

    def _button(self, action: str, by: str) -> None:
        """A button action, on the loop thread (handed over by ButtonInput)."""
        if self._running:
            self.on_button(action, by)

    # ------------------------------------------------------------------ outputs

    def update(self, snapshot: Snapshot) -> None:
        """Make every output show `snapshot`; outputs whose look is unchanged keep going."""
        self._snapshot = snapshot
        if not self._running:
            return
        situation = Situation(snapshot)
        self.state = situation.state
        now = datetime.now()  # quiet hours are the owner's local time
        for name, out in self.outputs.items():
            try:
                self._apply(out, situation, now.time())
            except Exception:
                log.exception("output %s failed", name)
        self._arm_quiet(now)

    def _apply(self, out: Output, situation: Situation, now: dtime) -> None:
        cfg = out.config
        if out.shows_states:
            look = cfg.look(situation.state)
            color = out.parse(look.color)  # type: ignore[attr-defined]
            self._active[out.name] = situation.state != "ok"
            self._silenced[out.name] = None
            if out.name not in self._testing:
                out.show(color, look.pattern, ("look", color, look.pattern.key()))
            return
        visual, audible = situation.drive(cfg.drive)
        muted = None
        active = visual
        if out.audible:
            active = audible
            span = self._quiet.get(out.name)
            if visual and not audible:
                muted = "acknowledged"
            elif audible and span is not None and in_quiet_hours(span, now):
                muted, active = "quiet_hours", False
        self._active[out.name], self._silenced[out.name] = visual, muted
        if out.name in self._testing:
            return
        pattern: PatternConfig = cfg.effective_pattern
        out.show(1.0 if active else None, pattern if active else None,
                 ("on", pattern.key()) if active else ("off",))

    def _arm_quiet(self, now: datetime) -> None:
        """Wake at the next quiet-hours edge (there is no other reason to look at the clock)."""
        if self._quiet_timer is not None:
            self._quiet_timer.cancel()
            self._quiet_timer = None
        edges = [t for span in self._quiet.values() if span is not None for t in span]
        if not edges or not self._running:
            return
        waits = []
        for edge in edges:
            at = now.replace(hour=edge.hour, minute=edge.minute, second=0, microsecond=0)
            if at <= now:
                at += timedelta(days=1)
            waits.append((at - now).total_seconds())
        loop = asyncio.get_running_loop()
        self._quiet_timer = loop.call_later(min(waits) + 0.5, self._quiet_edge)

    def _quiet_edge(self) -> None:
        self._quiet_timer = None
        if self._snapshot is not None:
            self.update(self._snapshot)
            self.on_state()

    def lamp_test(self, names: list[str] | None = None, duration: float | None = None) -> list[str]:
        """Run the lamp test on `names` (default: every output that takes part); returns them.

        A heartbeat never takes part (pausing it would trip the external watchdog), and a
        healthy relay only when named: its test is dropping out, which raises the dead-man alarm.
        """
        if names is None:
            chosen = [o for o in self.outputs.values() if o.config.lamp_test and (
                o.shows_states or o.config.drive not in ("heartbeat", "healthy"))]
        else:
            chosen = []
            for name in names:
                out = self.outputs.get(name)
                if out is None:
                    raise KeyError(name)
                if not out.shows_states and out.config.drive == "heartbeat":
                    raise ValueError(f"{name} is a heartbeat: pausing it would trip the watchdog")
                chosen.append(out)
        seconds = duration if duration is not None else self.config.lamp_test.duration
        loop = asyncio.get_running_loop()
        for out in chosen:
            handle = self._testing.pop(out.name, None)
            if handle is not None:
                handle.cancel()
            out.lamp_test(self.config.lamp_test.chirp)
            self._testing[out.name] = loop.call_later(seconds, self._end_test, out.name)
        if chosen:
            log.info("lamp test for %.3gs: %s", seconds, ", ".join(o.name for o in chosen))
        return [o.name for o in chosen]

    def _end_test(self, name: str) -> None:
        self._testing.pop(name, None)
        out = self.outputs.get(name)
        if out is not None:
            out.look_key = None  # whatever the state is, show it afresh
        if self._snapshot is not None:
            self.update(self._snapshot)
        self.on_state()

    def testing(self, name: str) -> bool:
        return name in self._testing

    def states(self) -> list[OutputState]:
        """What each output shows now."""
        return [OutputState(name, out.kind, out.audible, out.shows_states,
                            self._active.get(name, False), self._silenced.get(name),
                            name in self._testing, out.value)
                for name, out in self.outputs.items()]
