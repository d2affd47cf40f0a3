"""The outputs component: monitor events -> what every relay, lamp and siren shows; safe stop."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pingr.models import Result, Target
from pingr.monitor import Event, Snapshot
from pingr.outputs.backend import Backend, open_backend
from pingr.outputs.buttons import ButtonInput
from pingr.outputs.config import (
    HardwareConfig,
    OutputConfig,
    PatternConfig,
    SelectorConfig,
    in_quiet_hours,
    parse_quiet_hours,
)
from pingr.outputs.devices import Output, RgbOutput, TowerOutput, build_outputs

if TYPE_CHECKING:
    from pingr.app import App

log = logging.getLogger(__name__)

#: Liveness and quiet hours have no event of their own: they are re-checked this often.
#: Monitor changes do not wait for it; they arrive as events.
TICK_SECONDS = 1.0


class Situation:
    """What the outputs need from one snapshot, computed once per change."""

    def __init__(self, snap: Snapshot, healthy: bool) -> None:
        self.snap = snap
        self.healthy = healthy
        self.failing = {f.name for f in snap.failing}  # unacknowledged (silenced ones excluded)
        self.acked = set(snap.acknowledged)
        if self.snap.stale:
            self.state = "stale"
        elif not healthy:
            self.state = "unhealthy"
        elif self.failing:
            self.state = "alert"
        elif self.acked:
            self.state = "acknowledged"
        elif snap.degraded or snap.unreachable or getattr(snap, "silenced", ()):
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
        active = {
            "ok": self.state == "ok",
            "stale": self.snap.stale,
            "degraded": bool(self.snap.degraded),
            "healthy": self.healthy,
            "heartbeat": self.healthy,
        }[when]
        return active, active


class OutputManager:
    """The `outputs` component: owns the pin factory, the outputs and the buttons."""

    name = "outputs"

    def __init__(self, app: App) -> None:
        from pingr.api.outputs import router

        self.app = app
        self.config: HardwareConfig = app.config.hardware
        self.routers = [router]
        self.backend: Backend | None = None
        self.outputs: dict[str, Output] = {}
        self.buttons: dict[str, ButtonInput] = {}
        self.healthy = True
        self.silenced: dict[str, str | None] = {}
        self.active: dict[str, bool] = {}
        self.state = "ok"
        self._testing: dict[str, asyncio.TimerHandle] = {}
        self._quiet = {o.name: self._quiet_span(o) for o in self.config.outputs}
        self._last_ok: dict[str, bool] = {}
        self._tick: asyncio.Task[None] | None = None
        self._started_at = 0.0
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    @property
    def configured(self) -> bool:
        return bool(self.config.outputs or self.config.buttons)

    def _quiet_span(self, out: OutputConfig) -> Any:
        text = out.quiet_hours if out.quiet_hours is not None else self.config.quiet_hours
        if not out.is_audible or text is None or text.strip().lower() == "none":
            return None
        return parse_quiet_hours(text)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the pins (everything off), lamp-test, then follow the monitor."""
        if not self.configured:
            return
        loop = asyncio.get_running_loop()
        self.backend = open_backend(self.config.backend, self.config.pwm_pins())
        try:
            self.outputs = build_outputs(self.config.outputs, self.backend.factory)
            for cfg in self.config.buttons:
                self.buttons[cfg.name] = ButtonInput(cfg, self.backend.factory, loop, self._button)
        except Exception:
            await self._close_all()
            raise
        self._started_at = loop.time()
        self._loop, self._loop_thread = loop, threading.get_ident()
        self._running = True
        self.app.monitor.listeners.append(self._on_event)
        self.app.monitor.result_listeners.append(self._on_result)
        self.healthy = self._check_health()
        if self.config.lamp_test.at_start:
            self.lamp_test()
        self.reconcile()
        self._tick = loop.create_task(self._ticker(), name="outputs-tick")
        log.info("%d outputs and %d buttons on %s pins", len(self.outputs), len(self.buttons),
                 self.backend.name)

    async def stop(self) -> None:
        """Every output to its safe state, then release the pins."""
        if not self._running:
            return
        self._running = False
        for listeners, fn in ((self.app.monitor.listeners, self._on_event),
                              (self.app.monitor.result_listeners, self._on_result)):
            if fn in listeners:
                listeners.remove(fn)
        if self._tick is not None:
            self._tick.cancel()
            await asyncio.gather(self._tick, return_exceptions=True)
        for handle in self._testing.values():
            handle.cancel()
        self._testing.clear()
        for out in self.outputs.values():
            try:
                out.safe()
            except Exception:  # one broken output must not keep the others from a safe state
                log.exception("output %s: setting its safe state failed", out.name)
        log.info("outputs in their safe states")
        await self._close_all()

    async def _close_all(self) -> None:
        for button in self.buttons.values():
            button.close()
        for out in self.outputs.values():
            out.close()
        if self.backend is not None:
            self.backend.close()

    # ------------------------------------------------------------------ inputs

    def _on_event(self, event: Event) -> None:
        self._changed()

    def _changed(self) -> None:
        if threading.get_ident() == self._loop_thread:
            self.reconcile()
        elif self._loop is not None:
            # Sync API routes run in a worker thread (e.g. POST /alerts/ack); pins and pattern
            # timers belong to the loop, so the change is handed over rather than applied here.
            try:
                self._loop.call_soon_threadsafe(self.reconcile)
            except RuntimeError:  # the loop is already closed: shutdown set the safe states
                pass

    def _on_result(self, target: Target, result: Result) -> None:
        # Failures below the threshold (amber) change the snapshot without an Event; only a
        # change of success/failure can move a target in or out of "degraded".
        if self._last_ok.get(target.id) != result.success:
            self._last_ok[target.id] = result.success
            self._changed()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            healthy = self._check_health()
            if healthy != self.healthy:
                self.healthy = healthy
                (log.info if healthy else log.error)(
                    "appliance %s", "healthy again" if healthy else "UNHEALTHY: probing stalled")
            self.reconcile()

    def _check_health(self) -> bool:
        """Healthy = the monitor is fresh and the probe loops are alive and finishing probes."""
        if self.app.monitor.stale:
            return False
        scheduler = self.app.scheduler
        if any(task.done() for task in scheduler.tasks.values()):
            return False  # a probe loop died: its target would silently never alert
        intervals = [t.spec.interval_seconds for t in scheduler.targets.values() if t.enabled]
        if intervals:
            loop = asyncio.get_running_loop()
            since = max(scheduler.last_beat, self._started_at)
            if loop.time() - since > self.app.monitor.stale_factor * min(intervals):
                return False
        return True

    def _button(self, action: str, by: str) -> None:
        """A button action, on the loop thread (handed over by ButtonInput)."""
        if not self._running:
            return
        if action == "acknowledge":
            acked = self.app.acknowledge(None, by)  # the API's path: POST /alerts/ack
            log.info("%s pressed: %d open alerts acknowledged", by, len(acked))
        elif action == "lamp_test":
            log.info("%s held: lamp test", by)
            self.lamp_test()

    # ------------------------------------------------------------------ outputs

    def reconcile(self) -> None:
        """Make every output show the current state; outputs whose look is unchanged keep going."""
        if not self._running:
            return
        situation = Situation(self.app.monitor.snapshot(), self.healthy)
        self.state = situation.state
        now = datetime.now().time()  # quiet hours are the owner's local time
        for name, out in self.outputs.items():
            try:
                self._apply(out, situation, now)
            except Exception:
                log.exception("output %s failed", name)

    def _apply(self, out: Output, situation: Situation, now: Any) -> None:
        cfg = out.config
        if isinstance(out, TowerOutput | RgbOutput):
            look = cfg.look(situation.state)
            color = out.parse(look.color)
            self.active[out.name] = situation.state != "ok"
            self.silenced[out.name] = None
            if out.name not in self._testing:
                out.show(color, look.pattern, ("look", color, look.pattern.key()))
            return
        visual, audible = situation.drive(cfg.drive)
        muted = None
        active = visual
        if cfg.is_audible:
            active = audible
            span = self._quiet.get(out.name)
            if visual and not audible:
                muted = "acknowledged"
            elif audible and span is not None and in_quiet_hours(span, now):
                muted, active = "quiet_hours", False
        self.active[out.name], self.silenced[out.name] = visual, muted
        if out.name in self._testing:
            return
        pattern: PatternConfig = cfg.effective_pattern
        out.show(1.0 if active else None, pattern if active else None,
                 ("on", pattern.key()) if active else ("off",))

    def lamp_test(self, names: list[str] | None = None, duration: float | None = None) -> list[str]:
        """Run the lamp test on `names` (default: every output that takes part); returns them.

        A heartbeat never takes part (pausing it would trip the external watchdog), and a
        healthy relay only when named: its test is dropping out, which raises the dead-man alarm.
        """
        if names is None:
            chosen = [o for o in self.outputs.values()
                      if o.config.lamp_test and o.config.when not in ("heartbeat", "healthy")]
        else:
            chosen = []
            for name in names:
                out = self.outputs.get(name)
                if out is None:
                    raise KeyError(name)
                if out.config.when == "heartbeat":
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
        self.reconcile()

    def testing(self, name: str) -> bool:
        return name in self._testing


def create(app: App) -> OutputManager:
    """Component factory: always present, so /outputs and /hardware answer even with no pins."""
    return OutputManager(app)
