"""Probe loop: every target on its own interval (a timer while idle, a task while probing),
staggered, bounded by one concurrency gate, with hard timeouts; collectors' jobs as tasks."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import deque
from collections.abc import Awaitable, Callable

from pingr.models import Result, Target
from pingr.probes.context import ProbeContext
from pingr.probes.registry import KINDS
from pingr.timeutil import now_ms

log = logging.getLogger(__name__)

#: Added to a target's own timeout before the scheduler cancels a probe that ignores it.
HARD_TIMEOUT_GRACE = 0.5
#: Hard timeouts are grouped into slots this long (one loop timer per slot, not per probe),
#: so they fire up to this much after timeout + grace.
HARD_TIMEOUT_SLOT = 0.05


class _Gate:
    """The concurrency bound: a FIFO of waiting probes, O(1) per acquire and release.

    Why not asyncio.Semaphore: in Python 3.11 its release rescans the waiters that were woken
    but have not run yet, and each waiter removes itself from the middle of a deque; with 900
    probes queued behind 100 that was ~45,000 scans for one round of 1,000 targets.
    A released slot is handed straight to the next waiter.
    """

    def __init__(self, limit: int) -> None:
        self.free = limit
        self.waiters: deque[asyncio.Future[None]] = deque()

    def acquire(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None] | None:
        """None when a slot was free; else a future that completes when one is handed over."""
        if self.free > 0:
            self.free -= 1
            return None
        waiter = loop.create_future()
        self.waiters.append(waiter)
        return waiter

    def release(self) -> None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # a cancelled waiter gave up its place
                waiter.set_result(None)
                return
        self.free += 1


class _Slot:
    """The probes whose hard timeouts fall due in one slot, and the loop timer that enforces them.

    Each guard is [task or None once the probe ended, expired?, this slot]."""

    __slots__ = ("key", "timer", "guards", "live")

    def __init__(self, key: int) -> None:
        self.key = key
        self.timer: asyncio.TimerHandle | None = None
        self.guards: list[list] = []
        self.live = 0


class _Chain:
    """One enabled probed target's schedule: a loop timer while it waits, a task while it probes.

    Why not a task per target that sleeps: a sleeping task holds a Task, its coroutine frame, a
    sleep future and a timer handle (~1.5 KiB); an idle chain holds only this and its timer.
    """

    __slots__ = ("target", "interval", "next_at", "timer", "task")

    def __init__(self, target: Target, next_at: float) -> None:
        self.target = target
        self.interval = float(target.spec.interval_seconds)
        #: loop.time() of the tick the pending (or running) probe belongs to
        self.next_at = next_at
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None


class Scheduler:
    """Runs every enabled probed target's probe on its interval and hands results to `sink`;
    runs collectors' jobs on theirs, under the same concurrency bound and hard timeouts."""

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
        self.max_concurrency = max_concurrency
        self._gate = _Gate(max_concurrency)
        self._bound: asyncio.AbstractEventLoop | None = None
        #: hard-timeout slot number -> its probes that have not ended yet, and its loop timer
        self._slots: dict[int, _Slot] = {}
        self.stagger = stagger_seconds
        self.clock_ms = clock_ms
        #: target id -> its chain, for every enabled probed target
        self._chains: dict[str, _Chain] = {}
        self.targets: dict[str, Target] = {}
        self.jobs: dict[str, asyncio.Task[None]] = {}
        #: loop.time() of the last completed probe round trip; the watchdog reads it.
        self.last_beat: float = 0.0
        self.probes_run = 0
        self.in_flight = 0

    def set(self, target: Target) -> None:
        """Start, restart or stop a target's schedule to match its (new) spec.

        A probe of the old spec still running is cancelled; its result is never delivered."""
        self.remove(target.id)
        if not target.probed:
            return  # a collector's target: its collector's job feeds it
        self.targets[target.id] = target
        if target.enabled:
            loop = asyncio.get_running_loop()
            chain = self._chains[target.id] = _Chain(target, loop.time() + self._offset(target))
            chain.timer = loop.call_at(chain.next_at, self._fire, chain)

    def remove(self, target_id: str) -> None:
        """Stop probing a target: its timer is cancelled, a probe in flight too."""
        self.targets.pop(target_id, None)
        chain = self._chains.pop(target_id, None)
        if chain is not None:
            self._cancel(chain)

    @staticmethod
    def _cancel(chain: _Chain) -> None:
        if chain.timer is not None:
            chain.timer.cancel()
            chain.timer = None
        if chain.task is not None:
            chain.task.cancel()

    def set_job(self, name: str, interval: float, timeout: float,
                run: Callable[[], Awaitable[None]], first_delay: float = 0.0) -> None:
        """Run `run()` every `interval` seconds (first after `first_delay`), bounded by the
        concurrency gate and cancelled after `timeout`; replaces a job of the same name."""
        self.remove_job(name)
        self.jobs[name] = asyncio.get_running_loop().create_task(
            self._job_loop(name, interval, timeout, run, first_delay), name=f"job:{name}")

    def remove_job(self, name: str) -> None:
        task = self.jobs.pop(name, None)
        if task is not None:
            task.cancel()

    def dead_loops(self) -> int:
        """Targets and jobs still wanted whose schedule broke (a bug): a target with neither a
        pending timer nor a running probe, a job whose loop ended."""
        dead = 0
        for chain in self._chains.values():
            timer, task = chain.timer, chain.task
            if (timer is None or timer.cancelled()) and (task is None or task.done()):
                dead += 1
        return dead + sum(task.done() for task in self.jobs.values())

    def intervals(self) -> list[tuple[float, float]]:
        """(interval, timeout) in seconds of every enabled probed target (for liveness)."""
        return [(float(t.spec.interval_seconds), t.spec.timeout_ms / 1000)
                for t in self.targets.values() if t.enabled]

    async def stop(self) -> None:
        """Cancel every timer, probe and job, and wait for the probes and jobs to end.

        The targets stay known (`intervals`), so liveness sees that probing stopped."""
        tasks = [chain.task for chain in self._chains.values() if chain.task is not None]
        tasks += self.jobs.values()
        for chain in self._chains.values():
            self._cancel(chain)
        for task in self.jobs.values():
            task.cancel()
        self._chains.clear()
        self.jobs.clear()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _job_loop(self, name: str, interval: float, timeout: float,
                        run: Callable[[], Awaitable[None]], first_delay: float) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + first_delay
        while True:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self._bounded(run, timeout)
            except TimeoutError:
                log.warning("%s did not finish within %.3gs", name, timeout)
            except asyncio.CancelledError:
                raise
            except Exception:  # a collector bug must not end its loop
                log.exception("%s failed", name)
            next_at += interval
            now = loop.time()
            if next_at <= now:
                next_at = now + interval - ((now - next_at) % interval)

    async def _bounded(self, run: Callable[[], Awaitable[None]], timeout: float) -> None:
        """One job run behind the concurrency gate, with a hard timeout."""
        loop = asyncio.get_running_loop()
        if loop is not self._bound:
            self._bind(loop)
        gate = self._gate
        waiter = gate.acquire(loop)
        if waiter is not None:
            try:
                await waiter
            except asyncio.CancelledError:
                if not waiter.cancelled():
                    gate.release()
                raise
        try:
            async with asyncio.timeout(timeout):
                await run()
        finally:
            gate.release()

    def _offset(self, target: Target) -> float:
        # Deterministic per target so a restart keeps the spread; bounded by the interval.
        spread = min(self.stagger, float(target.spec.interval_seconds))
        return (zlib.crc32(target.id.encode()) % 10_000) / 10_000 * spread

    def _fire(self, chain: _Chain) -> None:
        """A chain's timer: its probe runs in a task of its own until the result is handed on."""
        chain.timer = None
        chain.task = asyncio.get_running_loop().create_task(
            self._probe(chain), name=f"probe:{chain.target.name}")

    async def _probe(self, chain: _Chain) -> None:
        target = chain.target
        result = await self.probe_once(target)
        chains = self._chains
        if chains.get(target.id) is not chain:
            return  # set or removed meanwhile, and the probe swallowed the cancellation
        try:
            self.sink(result)
        except Exception:  # a bug after the probe must not end the target's schedule
            log.exception("handling the result of %s failed", target.name)
        if chains.get(target.id) is chain:  # (the sink may have set or removed it)
            loop = asyncio.get_running_loop()
            interval = chain.interval
            next_at = chain.next_at + interval
            now = loop.time()
            if next_at <= now:
                # Fell behind (machine asleep, overloaded): skip missed ticks instead of bursting.
                next_at = now + interval - ((now - next_at) % interval)
            chain.next_at = next_at
            chain.timer = loop.call_at(next_at, self._fire, chain)
        chain.task = None  # the finished task and its result are not kept while idle

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        # Gate waiters and slot timers belong to one event loop (tests run many).
        self._bound = loop
        self._gate = _Gate(self.max_concurrency)
        self._slots = {}

    def _guard(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task, hard: float) -> list:
        key = int((loop.time() + hard) / HARD_TIMEOUT_SLOT) + 1
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot(key)
            slot.timer = loop.call_at(key * HARD_TIMEOUT_SLOT, self._expire, slot)
        slot.live += 1
        guard = [task, False, slot]
        slot.guards.append(guard)
        return guard

    def _unguard(self, guard: list) -> None:
        """A probe ended: once its slot has nobody left to cancel, the slot's timer goes too.

        Why: nearly every probe ends long before its hard timeout, and a slot timer left to
        fire for nothing was one more wake-up of the process per probe (10/s at 100 targets).
        """
        guard[0] = None
        slot = guard[2]
        slot.live -= 1
        if slot.live == 0 and slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
            if self._slots.get(slot.key) is slot:
                del self._slots[slot.key]

    def _expire(self, slot: _Slot) -> None:
        slot.timer = None
        if self._slots.get(slot.key) is slot:
            del self._slots[slot.key]
        for guard in slot.guards:
            task = guard[0]
            if task is not None:
                guard[1] = True
                task.cancel()

    async def probe_once(self, target: Target) -> Result:
        """Run one probe with the concurrency bound and a hard timeout; never raises."""
        probe = KINDS[target.spec.type].run
        hard = target.spec.timeout_ms / 1000 + HARD_TIMEOUT_GRACE
        loop = asyncio.get_running_loop()
        if loop is not self._bound:
            self._bind(loop)
        gate = self._gate
        waiter = gate.acquire(loop)
        if waiter is not None:
            try:
                await waiter
            except asyncio.CancelledError:
                if not waiter.cancelled():  # the slot was handed over as we were cancelled
                    gate.release()
                raise
        self.in_flight += 1
        task = asyncio.current_task()
        assert task is not None
        guard = self._guard(loop, task, hard)
        try:
            result = await probe(target, self.ctx)
        except asyncio.CancelledError:
            # Ours (the hard timeout) unless someone else cancelled too (stop, remove).
            if not guard[1] or task.uncancel() > 0:
                raise
            result = Result(target.id, self.clock_ms(), False,
                            error=f"probe did not finish within {target.spec.timeout_ms} ms")
        except Exception as exc:  # a probe bug must not kill the target's loop
            log.exception("probe for %s crashed", target.name)
            result = Result(target.id, self.clock_ms(), False, error=f"probe error: {exc}")
        else:
            if guard[1]:  # expired, but the probe swallowed the cancellation and returned
                task.uncancel()
        finally:
            self._unguard(guard)
            self.in_flight -= 1
            gate.release()
        self.probes_run += 1
        self.last_beat = loop.time()
        return result
