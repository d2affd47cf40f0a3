"""The acknowledge button: gpiozero callbacks (their own thread) hand actions to the event loop."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pingr.outputs.config import ButtonConfig
from pingr.timeutil import now_ms

log = logging.getLogger(__name__)


class ButtonInput:
    """A Button whose short press and long hold become actions run on the event loop.

    `dispatch(action, by)` is called on the loop thread via `call_soon_threadsafe`, never on
    gpiozero's callback thread: the monitor and the outputs belong to the loop alone.
    """

    def __init__(self, config: ButtonConfig, factory: Any, loop: asyncio.AbstractEventLoop,
                 dispatch: Callable[[str, str], Any]) -> None:
        import gpiozero

        self.config = config
        self.name = config.name
        self.loop = loop
        self.dispatch = dispatch
        self.by = "button" if config.name == "button" else f"button {config.name}"
        self.presses = 0
        self.holds = 0
        self.bounces = 0
        self.last_action: str | None = None
        self.last_action_ms: int | None = None
        self._lock = threading.Lock()
        self._pressed_at: float | None = None
        self._held = False
        # gpiozero's bounce_time debounces on real pins; MockFactory ignores it, so the press
        # length check below is what rejects contact chatter everywhere.
        self.device = gpiozero.Button(config.pin, pull_up=config.pull_up,
                                      bounce_time=config.bounce or None,
                                      hold_time=config.hold_time, pin_factory=factory)
        self.device.when_pressed = self._on_press
        self.device.when_released = self._on_release
        self.device.when_held = self._on_hold

    def _on_press(self) -> None:
        with self._lock:
            self._pressed_at = time.monotonic()
            self._held = False

    def _on_hold(self) -> None:
        with self._lock:
            self._held = True
            self.holds += 1
        self._fire(self.config.hold_action)

    def _on_release(self) -> None:
        with self._lock:
            start, held = self._pressed_at, self._held
            self._pressed_at = None
            if start is None or held:
                return  # the hold already acted; releasing it is not a second action
            if time.monotonic() - start < self.config.bounce:
                self.bounces += 1
                return
            self.presses += 1
        self._fire(self.config.action)

    def _fire(self, action: str) -> None:
        if action == "none":
            return
        self.last_action, self.last_action_ms = action, now_ms()
        try:
            self.loop.call_soon_threadsafe(self.dispatch, action, self.by)
        except RuntimeError:  # the loop closed under us during shutdown: nothing left to do
            log.debug("button %s pressed during shutdown; ignored", self.name)

    @property
    def pressed(self) -> bool:
        return bool(self.device.is_pressed)

    def close(self) -> None:
        self.device.when_pressed = self.device.when_released = self.device.when_held = None
        self.device.close()
