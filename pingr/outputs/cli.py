"""`pingr gpio test [NAME]`: exercise each output in turn, to check the wiring by eye and ear."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

from pingr.outputs.backend import PinsUnavailable, open_backend
from pingr.outputs.config import HardwareConfig
from pingr.outputs.devices import Output, build_outputs


def _describe(out: Output) -> str:
    cfg = out.config
    pins = ", ".join(f"{role} BCM {pin}" if role != "out" else f"BCM {pin}"
                     for role, pin in out.pins().items())
    polarity = "" if cfg.active_high else ", active-low"
    return f"{cfg.name} ({out.kind}, {pins}{polarity})"


async def gpio_test(hw: HardwareConfig, name: str | None, duration: float | None,
                    say: Callable[[str], Any] = print,
                    warn: Callable[[str], Any] = lambda m: print(m, file=sys.stderr),
                    mock: bool = False) -> int:
    """Run each output's lamp test (or the named one's) one after another; 0 when all ran.

    `mock` runs them on gpiozero's simulated pins (to check a config off the Pi); otherwise
    real pins or a clear error, never a silent simulation."""
    if not hw.outputs:
        warn("pingr: no outputs under hardware.outputs in this config")
        return 1
    chosen = [o for o in hw.outputs if name is None or o.name == name]
    if not chosen:
        warn(f"pingr: no output named {name!r}; outputs: {', '.join(o.name for o in hw.outputs)}")
        return 1
    seconds = duration if duration is not None else hw.lamp_test.duration
    try:
        backend = open_backend("mock" if mock else hw.backend, hw.pwm_pins())
    except PinsUnavailable as exc:
        warn(f"pingr: {exc}\n(`pingr gpio test --mock` runs the test on simulated pins)")
        return 1
    say(f"backend: {backend.name} ({backend.reason})")
    try:
        outputs = build_outputs(chosen, backend.factory)
    except Exception as exc:  # gpiozero's own errors, OSError, RuntimeError for a busy line
        backend.close()
        warn(f"pingr: cannot open the pins: {exc}\n"
            "Is the pingr service running and holding them? Stop it first, or test through it: "
            "POST /api/v1/outputs/NAME/test")
        return 1
    try:
        for out in outputs.values():
            cfg = out.config
            drive = None if out.shows_states else cfg.drive
            if drive == "heartbeat":
                action = f"toggling as a heartbeat for {seconds:g}s"
                out.show(1.0, cfg.effective_pattern, ("test",))
            else:
                if drive == "healthy":
                    action = f"dropping out for {seconds:g}s (its alarm state)"
                elif out.audible:
                    action = f"chirping for {min(hw.lamp_test.chirp, seconds):g}s"
                else:
                    action = f"on for {seconds:g}s"
                out.lamp_test(hw.lamp_test.chirp)
            say(f"{_describe(out)}: {action}; value {out.value}")
            await asyncio.sleep(seconds)
            out.safe()
            say(f"{cfg.name}: back to its safe state ({cfg.safe_state}); value {out.value}")
    finally:
        for out in outputs.values():
            out.close()
        backend.close()
    return 0
