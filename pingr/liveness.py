"""Is pingr alive? One answer, computed in one place, read by every part that cares.

The dead-man output, the systemd watchdog, `/health` and alert-status's `stale` all read the
same `Verdict`, so they can never disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

#: Added to the limit for the first probe round, which starts up to `stagger` late.
START_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class Verdict:
    """Liveness at one moment."""

    #: No probe result arrived for stale_factor × the shortest interval: the monitor is frozen
    #: (alert-status raises the alarm, /health answers 503).
    stale: bool
    #: Probes really finish on time and every probe loop is alive: the dead-man output stays
    #: energised and systemd's watchdog is pinged. Never healthy while stale.
    healthy: bool
    reason: str


@dataclass(frozen=True)
class Inputs:
    """What liveness is computed from (read from the scheduler and the monitor)."""

    #: (interval seconds, timeout seconds) of every enabled probed target.
    targets: Iterable[tuple[float, float]]
    #: Wall-clock ms of the newest probed result (None: none yet), and of probing's start.
    last_result_ms: int | None
    #: Loop time of the last probe that finished (0: none yet).
    last_beat: float
    #: Probe loops that ended although their target is enabled (a bug: that target would
    #: silently never alert).
    dead_loops: int


class Liveness:
    """Computes the Verdict; `evaluate` is called once a second and after each fresh result."""

    def __init__(self, *, stale_factor: float, stagger: float,
                 clock_ms: Callable[[], int], loop_time: Callable[[], float]) -> None:
        self.stale_factor = stale_factor
        self.stagger = stagger
        self.clock_ms = clock_ms
        self.loop_time = loop_time
        self.started_ms = clock_ms()
        self.started_at = loop_time()
        self.verdict = Verdict(False, True, "starting")

    def probing_started(self) -> None:
        """Count from now: a slow start-up (building the API, starting the parts on a Pi Zero
        or under emulation) is not a frozen monitor and must not raise the alarm."""
        self.started_ms = self.clock_ms()
        self.started_at = self.loop_time()

    def evaluate(self, inputs: Inputs) -> Verdict:
        """The verdict now (also kept in `self.verdict`)."""
        self.verdict = self._verdict(inputs)
        return self.verdict

    def _verdict(self, inputs: Inputs) -> Verdict:
        targets = list(inputs.targets)
        if not targets:
            return Verdict(False, True, "no enabled targets")
        shortest = min(interval for interval, _ in targets)
        since = max(inputs.last_result_ms or 0, self.started_ms)
        silent = (self.clock_ms() - since) / 1000
        if silent > self.stale_factor * shortest:
            return Verdict(True, False, f"no probe result for {silent:.0f}s "
                                        f"(limit {self.stale_factor * shortest:.0f}s)")
        if inputs.dead_loops:
            return Verdict(False, False, f"{inputs.dead_loops} probe loop(s) ended unexpectedly")
        # A probe may legitimately take its whole timeout after its interval came round.
        limit = self.stale_factor * shortest + max(timeout for _, timeout in targets)
        now = self.loop_time()
        if inputs.last_beat:
            age = now - inputs.last_beat
            if age > limit:
                return Verdict(False, False,
                               f"the last probe finished {age:.0f}s ago (limit {limit:.0f}s)")
            return Verdict(False, True, "probes are finishing")
        age = now - self.started_at
        if age > limit + self.stagger + START_GRACE_SECONDS:
            return Verdict(False, False, f"no probe has finished in the {age:.0f}s since start")
        return Verdict(False, True, "starting")

    def next_check(self, inputs: Inputs, max_wait: float) -> float:
        """Seconds until the verdict can change with no new result: the next deadline (it is
        checked then, not polled), at most `max_wait`."""
        targets = list(inputs.targets)
        if not targets:
            return max_wait
        shortest = min(interval for interval, _ in targets)
        since = max(inputs.last_result_ms or 0, self.started_ms)
        waits = [(since - self.clock_ms()) / 1000 + self.stale_factor * shortest]
        limit = self.stale_factor * shortest + max(timeout for _, timeout in targets)
        if inputs.last_beat:
            waits.append(inputs.last_beat + limit - self.loop_time())
        else:
            waits.append(self.started_at + limit + self.stagger + START_GRACE_SECONDS
                         - self.loop_time())
        future = [w for w in waits if w > 0]
        return max(0.05, min([max_wait, *(w + 0.01 for w in future)]))
