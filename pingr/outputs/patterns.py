"""Patterns as (level, hold) steps, played on the event loop so a hung loop stops them too."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator

from pingr.outputs.kinds import PatternConfig

log = logging.getLogger(__name__)

#: PWM steps per second for a pulse: smooth to the eye, cheap for the loop.
PULSE_FPS = 25

Step = tuple[float, float | None]  # (level 0..1, seconds to hold it; None = until changed)


def steps(pattern: PatternConfig) -> Iterator[Step]:
    """The levels a pattern goes through; infinite for blink, pulse and repeating beeps."""
    if pattern.type == "steady":
        yield 1.0, None
    elif pattern.type == "blink":
        while True:
            yield 1.0, pattern.on
            yield 0.0, pattern.off
    elif pattern.type == "beep":
        burst = pattern.count * (pattern.on + pattern.off)
        while True:
            for i in range(pattern.count):
                yield 1.0, pattern.on
                last = i == pattern.count - 1
                if last and pattern.repeat is None:
                    yield 0.0, None  # one burst, then silence until the state changes
                    return
                # The pause after a burst's last beep stretches to the next burst.
                yield 0.0, pattern.off + ((pattern.repeat or 0) - burst if last else 0)
    else:  # pulse
        while True:
            for ramp, rising in ((pattern.fade_in, True), (pattern.fade_out, False)):
                n = max(1, round(ramp * PULSE_FPS))
                for i in range(n):
                    x = (i + 1) / n
                    yield (x if rising else 1 - x), ramp / n


def once(level: float, seconds: float) -> Iterator[Step]:
    """On for `seconds`, then off: a lamp-test chirp."""
    yield level, seconds
    yield 0.0, None


class Player:
    """Plays steps into `write(level)`; the first level is written before play() returns.

    Writing the first level synchronously is what keeps a pin within a millisecond of the
    monitor's state change: the rest follows on loop timers, scheduled from absolute
    deadlines so a blink does not drift.
    """

    def __init__(self, write: Callable[[float], None], name: str) -> None:
        self.write = write
        self.name = name
        self.task: asyncio.Task[None] | None = None

    def play(self, sequence: Iterator[Step]) -> None:
        self.cancel()
        level, hold = next(sequence)
        self.write(level)
        if hold is not None:
            loop = asyncio.get_running_loop()
            self.task = loop.create_task(self._run(sequence, loop.time() + hold),
                                         name=f"pattern:{self.name}")

    async def _run(self, sequence: Iterator[Step], deadline: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            for level, hold in sequence:
                await asyncio.sleep(max(0.0, deadline - loop.time()))
                self.write(level)
                if hold is None:
                    return
                deadline += hold
                if deadline < loop.time():  # the loop stalled: resynchronise, do not burst
                    deadline = loop.time()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pattern on %s failed", self.name)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None
