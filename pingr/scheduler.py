"""Probe loop: one task per target on its own interval, staggered, bounded, hard timeouts."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable

from pingr.models import Result, Target
from pingr.probes import PROBES, ProbeContext
from pingr.timeutil import now_ms

log = logging.getLogger(__name__)

#: Added to a target's own timeout before the scheduler cancels a probe that ignores it.
HARD_TIMEOUT_GRACE = 0.5


class Scheduler:
    """Runs every enabled target's probe on its interval and hands results to `sink`."""

    def __init__(
        self,
        sink: Callable[[Result], None],
        ctx: ProbeContext,
        *,
        max_concurrency: int = 100,
        stagger_seconds: float = 10.0,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.sink = sink
        self.ctx = ctx
        self.semaphore = asyncio.Semaphore(max_concurrency)
        self.stagger = stagger_seconds
        self.clock_ms = clock_ms
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.targets: dict[str, Target] = {}
        #: loop.time() of the last completed probe round trip; the watchdog reads it.
        self.last_beat: float = 0.0
        self.probes_run = 0
        self.in_flight = 0

    def set(self, target: Target) -> None:
        """Start, restart or stop a target's loop to match its (new) spec."""
        self.remove(target.id)
        self.targets[target.id] = target
        if target.enabled:
            self.tasks[target.id] = asyncio.get_running_loop().create_task(
                self._loop(target), name=f"probe:{target.name}"
            )

    def remove(self, target_id: str) -> None:
        self.targets.pop(target_id, None)
        task = self.tasks.pop(target_id, None)
        if task is not None:
            task.cancel()

    async def stop(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        self.tasks.clear()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _offset(self, target: Target) -> float:
        # Deterministic per target so a restart keeps the spread; bounded by the interval.
        spread = min(self.stagger, float(target.spec.interval_seconds))
        return (zlib.crc32(target.id.encode()) % 10_000) / 10_000 * spread

    async def _loop(self, target: Target) -> None:
        loop = asyncio.get_running_loop()
        interval = float(target.spec.interval_seconds)
        next_at = loop.time() + self._offset(target)
        while True:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            result = await self.probe_once(target)
            self.sink(result)
            next_at += interval
            now = loop.time()
            if next_at <= now:
                # Fell behind (machine asleep, overloaded): skip missed ticks instead of bursting.
                next_at = now + interval - ((now - next_at) % interval)

    async def probe_once(self, target: Target) -> Result:
        """Run one probe with the concurrency bound and a hard timeout; never raises."""
        probe = PROBES[target.spec.type]
        hard = target.spec.timeout_ms / 1000 + HARD_TIMEOUT_GRACE
        async with self.semaphore:
            self.in_flight += 1
            try:
                async with asyncio.timeout(hard):
                    result = await probe(target, self.ctx)
            except TimeoutError:
                result = Result(target.id, self.clock_ms(), False,
                                error=f"probe did not finish within {target.spec.timeout_ms} ms")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a probe bug must not kill the target's loop
                log.exception("probe for %s crashed", target.name)
                result = Result(target.id, self.clock_ms(), False, error=f"probe error: {exc}")
            finally:
                self.in_flight -= 1
        self.probes_run += 1
        self.last_beat = asyncio.get_running_loop().time()
        return result
