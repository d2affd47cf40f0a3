"""Outputs and hardware: what every relay, lamp and siren shows, lamp tests, button states."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from pingr.api.auth import require
from pingr.api.deps import AUTH_ERRORS, bad_request, errors, get_app
from pingr.api.schemas import UtcTime, ts
from pingr.outputs.kinds import SelectorConfig
from pingr.outputs.manager import OutputState
from pingr.timeutil import parse_duration

router = APIRouter(tags=["hardware"])
AppDep = Annotated[Any, Depends(get_app)]


class OutputOut(BaseModel):
    name: str
    type: str
    pins: dict[str, int] = Field(description="role (out, or a colour) -> BCM pin")
    active_high: bool
    value: Any = Field(description="the devices' value now: 0/1, a PWM level, a tone in Hz, "
                       "{colour: 0/1} for a tower, [r, g, b] for an RGB LED")
    driven_by: str | dict[str, list[str]] = Field(
        description="alert, ok, stale, degraded, healthy, heartbeat, a selector, or "
        "'state' for towers and RGB LEDs")
    pattern: dict[str, Any] | None
    active: bool = Field(description="its condition holds (for a tower: anything but all-ok)")
    audible: bool
    silenced: bool
    silenced_by: str | None = Field(description="acknowledged or quiet_hours")
    testing: bool = Field(description="a lamp test is running on it")
    safe_state: str


class ButtonOut(BaseModel):
    name: str
    pin: int
    pressed: bool
    action: str
    hold_action: str
    presses: int
    holds: int
    ignored_bounces: int
    last_action: str | None
    last_action_at: UtcTime | None


class HardwareOut(BaseModel):
    configured: bool = Field(description="any outputs or buttons in hardware:")
    backend: str | None = Field(description="pin factory in use: lgpio, rpigpio, mock, …")
    requested_backend: str
    real_pins: bool
    backend_reason: str | None
    board: str | None
    state: str = Field(description="ok, degraded, acknowledged, alert, stale or unhealthy")
    healthy: bool
    problem: str | None = Field(description="why the outputs cannot switch (real pins "
                                "unavailable), or null")
    quiet_hours: str | None
    buttons: list[ButtonOut]


def _out(app: Any, state: OutputState) -> OutputOut:
    out = app.outputs.outputs[state.name]
    cfg = out.config
    driven_by: Any = "state"
    pattern = None
    if not out.shows_states:
        when = cfg.drive
        driven_by = when.model_dump() if isinstance(when, SelectorConfig) else when
        pattern = cfg.effective_pattern.model_dump(mode="json")
    return OutputOut(
        name=state.name, type=state.kind, pins=out.pins(), active_high=bool(cfg.active_high),
        value=state.value, driven_by=driven_by, pattern=pattern, active=state.active,
        audible=state.audible, silenced=state.silenced_by is not None,
        silenced_by=state.silenced_by, testing=state.testing, safe_state=cfg.safe_state,
    )


def _state(app: Any, name: str) -> OutputState:
    return next(s for s in app.outputs.states() if s.name == name)


@router.get("/outputs", response_model=list[OutputOut], dependencies=[require("read")],
            responses=errors(*AUTH_ERRORS))
async def list_outputs(app: AppDep) -> list[OutputOut]:
    """Every configured output, what drives it, what it shows now, and whether it is silenced."""
    return [_out(app, state) for state in app.outputs.states()]


@router.post("/outputs/{name}/test", response_model=OutputOut, dependencies=[require("operate")],
             responses=errors(400, 404, 409, *AUTH_ERRORS))
async def test_output(name: str, app: AppDep, duration: Annotated[str | None, Query(
        description="how long, e.g. 2s (default: hardware.lamp_test.duration; max 60s)")] = None,
        ) -> OutputOut:
    """Run the lamp test on one output; it returns to the current state afterwards.

    Audible outputs chirp, and a `healthy` relay drops out for the duration (its alarm state).
    """
    seconds = None
    if duration is not None:
        try:
            seconds = parse_duration(duration)
        except ValueError as exc:
            raise bad_request(f"duration: {exc}") from None
        if not 0.05 <= seconds <= 60:
            raise bad_request("duration must be between 50ms and 60s")
    if name not in app.outputs.outputs:
        raise HTTPException(404, f"no output named {name!r}")
    try:
        app.lamp_test([name], seconds)
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    return _out(app, _state(app, name))


@router.get("/hardware", response_model=HardwareOut, dependencies=[require("read")],
            responses=errors(*AUTH_ERRORS))
async def hardware(app: AppDep) -> HardwareOut:
    """The GPIO backend in use, the board profile, the appliance state, and the buttons."""
    mgr = app.outputs
    cfg = mgr.config
    backend = mgr.backend
    return HardwareOut(
        configured=mgr.configured,
        backend=backend.name if backend else None,
        requested_backend=cfg.backend,
        real_pins=bool(backend and backend.real),
        backend_reason=backend.reason if backend else None,
        board=cfg.board,
        state=mgr.state,
        healthy=app.monitor.snapshot().healthy,
        problem=mgr.problem,
        quiet_hours=cfg.quiet_hours,
        buttons=[ButtonOut(
            name=b.name, pin=int(b.config.pin), pressed=b.pressed, action=b.config.action,
            hold_action=b.config.hold_action, presses=b.presses, holds=b.holds,
            ignored_bounces=b.bounces, last_action=b.last_action,
            last_action_at=ts(b.last_action_ms)) for b in mgr.buttons.values()],
    )
