"""Scheduler: own interval per target, slow or hanging targets never delay others."""

from __future__ import annotations

import asyncio
import time
from typing import Literal

import pytest

from pingr.configbase import TargetBase
from pingr.models import Result, Target
from pingr.probes.context import ProbeContext
from pingr.probes.kind import Kind
from pingr.probes.registry import KINDS, parse_spec
from pingr.scheduler import Scheduler


class HangSpec(TargetBase):
    """A kind registered by these tests, as a new probe module would be (one registry line)."""

    type: Literal["hang"]


async def test_slow_target_does_not_delay_fast_one(target_server):
    slow_srv = target_server
    slow_srv.behaviour.delay = 5.0
    from tests.conftest import TargetServer

    fast_srv = TargetServer()
    results: list[tuple[str, float, Result]] = []
    ctx = ProbeContext()
    ctx.client(True)  # built before probing, as App.start does (~0.8 s of loop under qemu-user)
    sched = Scheduler(lambda r: results.append((r.target_id, time.monotonic(), r)), ctx,
                      stagger_seconds=0)
    fast = Target(1, "fast", parse_spec({"name": "fast", "type": "http",
                                                "url": fast_srv.url, "interval_seconds": 1}))
    slow = Target(2, "slow", parse_spec({"name": "slow", "type": "http", "url": slow_srv.url,
                                                "interval_seconds": 1, "timeout_ms": 900}))
    try:
        sched.set(slow)
        sched.set(fast)
        await asyncio.sleep(3.6)
    finally:
        await sched.stop()
        await ctx.aclose()
        fast_srv.close()
    fast_times = [t for tid, t, _ in results if tid == "fast"]
    assert len(fast_times) >= 4
    gaps = [b - a for a, b in zip(fast_times, fast_times[1:], strict=False)]
    assert all(0.8 < g < 1.25 for g in gaps), gaps
    slow_results = [r for tid, _, r in results if tid == "slow"]
    assert slow_results and all(not r.success for r in slow_results)
    assert all(r.error == "timed out after 900 ms" for r in slow_results)


async def test_hard_timeout_bounds_a_probe_that_ignores_its_own():
    async def hang(target, ctx):
        await asyncio.sleep(3600)

    KINDS["hang"] = Kind(HangSpec, hang)
    try:
        results: list[Result] = []
        sched = Scheduler(results.append, ProbeContext(), stagger_seconds=0)
        t = Target(1, "h", HangSpec(type="hang", name="h", interval_seconds=1, timeout_ms=200))
        start = time.monotonic()
        result = await sched.probe_once(t)
        assert time.monotonic() - start < 1.0
        assert not result.success and result.error == "probe did not finish within 200 ms"
    finally:
        del KINDS["hang"]


async def test_crashing_probe_becomes_a_failure_and_the_loop_goes_on():
    calls = 0

    async def boom(target, ctx):
        nonlocal calls
        calls += 1
        raise ValueError("bug in probe")

    KINDS["hang"] = Kind(HangSpec, boom)
    try:
        results: list[Result] = []
        sched = Scheduler(results.append, ProbeContext(), stagger_seconds=0)
        sched.set(Target(1, "b", HangSpec(type="hang", name="b", interval_seconds=1)))
        await asyncio.sleep(1.3)
        await sched.stop()
    finally:
        del KINDS["hang"]
    assert calls == 2 and len(results) == 2
    assert results[0].error == "probe error: bug in probe"


async def test_concurrency_bound():
    running = peak = 0

    async def slow(target, ctx):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.2)
        running -= 1
        return Result(target.id, 0, True, 1)

    KINDS["hang"] = Kind(HangSpec, slow)
    try:
        sched = Scheduler(lambda r: None, ProbeContext(), max_concurrency=3, stagger_seconds=0)
        targets = [Target(i, str(i), HangSpec(type="hang", name=str(i), interval_seconds=5))
                   for i in range(10)]
        await asyncio.gather(*(sched.probe_once(t) for t in targets))
    finally:
        del KINDS["hang"]
    assert peak == 3


async def test_set_and_remove_take_effect_at_once(target_server):
    seen: list[str] = []
    sched = Scheduler(lambda r: seen.append(r.target_id), ProbeContext(), stagger_seconds=0)
    t = Target(1, "a", parse_spec({"name": "a", "type": "tcp", "host": "127.0.0.1",
                                          "port": target_server.port, "interval_seconds": 1}))
    sched.set(t)
    await asyncio.sleep(0.2)
    assert seen == ["a"]
    sched.remove("a")
    await asyncio.sleep(1.2)
    assert seen == ["a"]
    await sched.stop()
    await sched.ctx.aclose()


def _hang_target(pk: int, name: str, **spec: object) -> Target:
    return Target(pk, name, HangSpec(type="hang", name=name, **spec))


async def test_idle_targets_hold_timers_not_tasks():
    async def quick(target, ctx):
        return Result(target.id, 0, True, 1)

    KINDS["hang"] = Kind(HangSpec, quick)
    try:
        seen: list[str] = []
        sched = Scheduler(lambda r: seen.append(r.target_id), ProbeContext(), stagger_seconds=0)
        before = len(asyncio.all_tasks())
        for i in range(50):
            sched.set(_hang_target(i, f"t{i}", interval_seconds=3600))
        await asyncio.sleep(0.2)  # every target probed once, now waiting an hour
        assert sorted(seen) == sorted(f"t{i}" for i in range(50))
        assert len(asyncio.all_tasks()) == before  # no task per waiting target
        assert sched.dead_loops() == 0
        assert len(sched.intervals()) == 50
        await sched.stop()
    finally:
        del KINDS["hang"]


@pytest.mark.parametrize("swallow", [False, True], ids=["cancellable", "swallows-cancel"])
async def test_set_during_a_probe_cancels_it_and_drops_its_result(swallow):
    cancelled: list[int] = []

    async def slow(target, ctx):
        try:
            await asyncio.sleep(0.3)
        except asyncio.CancelledError:
            cancelled.append(target.spec.timeout_ms)
            if not swallow:
                raise
        return Result(target.id, 0, True, latency_ms=target.spec.timeout_ms)

    KINDS["hang"] = Kind(HangSpec, slow)
    try:
        results: list[Result] = []
        sched = Scheduler(results.append, ProbeContext(), stagger_seconds=0)
        sched.set(_hang_target(1, "a", interval_seconds=5, timeout_ms=900))
        await asyncio.sleep(0.1)
        assert sched.in_flight == 1
        sched.set(_hang_target(1, "a", interval_seconds=5, timeout_ms=800))
        await asyncio.sleep(0.5)
        await sched.stop()
    finally:
        del KINDS["hang"]
    assert cancelled == [900]
    assert [r.latency_ms for r in results] == [800]  # the new spec's probe only


async def test_remove_during_a_probe_cancels_it():
    started: list[str] = []

    async def slow(target, ctx):
        started.append(target.id)
        await asyncio.sleep(0.3)
        return Result(target.id, 0, True, 1)

    KINDS["hang"] = Kind(HangSpec, slow)
    try:
        results: list[Result] = []
        sched = Scheduler(results.append, ProbeContext(), stagger_seconds=0)
        sched.set(_hang_target(1, "a", interval_seconds=1))
        await asyncio.sleep(0.1)
        sched.remove("a")
        await asyncio.sleep(1.3)
    finally:
        del KINDS["hang"]
    assert started == ["a"] and results == []
    assert sched.in_flight == 0 and sched.dead_loops() == 0 and sched.intervals() == []


async def test_a_failing_sink_is_logged_and_the_schedule_goes_on(caplog):
    async def quick(target, ctx):
        return Result(target.id, 0, True, 1)

    calls = 0

    def sink(result: Result) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("bug after the probe")

    KINDS["hang"] = Kind(HangSpec, quick)
    try:
        sched = Scheduler(sink, ProbeContext(), stagger_seconds=0)
        sched.set(_hang_target(1, "a", interval_seconds=1))
        await asyncio.sleep(1.3)
        assert sched.dead_loops() == 0
        await sched.stop()
    finally:
        del KINDS["hang"]
    assert calls == 2
    assert "handling the result of a failed" in caplog.text
    assert "bug after the probe" in caplog.text


async def test_a_broken_chain_is_reported_until_the_target_is_set_again():
    async def quick(target, ctx):
        return Result(target.id, 0, True, 1)

    gone = asyncio.get_running_loop().create_future()
    gone.cancel()

    def sink(result: Result) -> None:
        if result.target_id == "broken":
            gone.result()  # raises CancelledError: not an Exception, so the chain breaks

    KINDS["hang"] = Kind(HangSpec, quick)
    try:
        sched = Scheduler(sink, ProbeContext(), stagger_seconds=0)
        sched.set(_hang_target(1, "broken", interval_seconds=1))
        sched.set(_hang_target(2, "fine", interval_seconds=1))
        await asyncio.sleep(0.2)
        assert sched.dead_loops() == 1  # what liveness and the watchdog read
        assert sched.probes_run == 2
        sched.set(_hang_target(2, "fine", interval_seconds=2))
        assert sched.dead_loops() == 1
        sched.remove("broken")
        assert sched.dead_loops() == 0
        await sched.stop()
    finally:
        del KINDS["hang"]


async def test_falling_behind_skips_missed_ticks_and_keeps_the_phase():
    loop = asyncio.get_running_loop()
    starts: list[float] = []

    async def quick(target, ctx):
        starts.append(loop.time())
        return Result(target.id, 0, True, 1)

    def sink(result: Result) -> None:
        if len(starts) == 1:
            time.sleep(1.5)  # the whole loop stalls (an overloaded Pi) past the next tick

    KINDS["hang"] = Kind(HangSpec, quick)
    try:
        sched = Scheduler(sink, ProbeContext(), stagger_seconds=0)
        sched.set(_hang_target(1, "a", interval_seconds=1))
        await asyncio.sleep(3.3)
        await sched.stop()
    finally:
        del KINDS["hang"]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    # The tick at +1 s was missed and is skipped (no burst); +2 s and +3 s keep the grid.
    assert len(gaps) == 2, gaps
    assert 1.95 < gaps[0] < 2.1 and 0.95 < gaps[1] < 1.1, gaps


async def test_stop_cancels_timers_and_waits_for_running_probes():
    started: list[str] = []
    cleaned: list[str] = []

    async def probe(target, ctx):
        started.append(target.id)
        if target.id == "busy":
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                await asyncio.sleep(0.1)  # a cleanup that takes a while
                cleaned.append(target.id)
                raise
        return Result(target.id, 0, True, 1)

    KINDS["hang"] = Kind(HangSpec, probe)
    try:
        sched = Scheduler(lambda r: None, ProbeContext(), stagger_seconds=0)
        sched.set(_hang_target(1, "busy", interval_seconds=1))
        sched.set(_hang_target(2, "quick", interval_seconds=1))
        await asyncio.sleep(0.05)  # busy probing, quick done and waiting for its next tick
        assert sched.in_flight == 1
        await sched.stop()
        assert cleaned == ["busy"]  # stop returned after the probe had ended
        assert sched.in_flight == 0 and sched.dead_loops() == 0
        await asyncio.sleep(1.2)
        assert sorted(started) == ["busy", "quick"]  # no tick after the stop
        assert len(sched.intervals()) == 2  # still known: liveness sees that probing stopped
    finally:
        del KINDS["hang"]


async def test_probes_that_end_leave_no_hard_timeout_timer_behind():
    """A hard-timeout timer left to fire for nothing was one more wake-up per probe."""
    async def probe(target, ctx):
        if target.id == "hangs":
            await asyncio.sleep(3600)
        return Result(target.id, 0, True, 1)

    KINDS["hang"] = Kind(HangSpec, probe)
    try:
        loop = asyncio.get_running_loop()
        sched = Scheduler(lambda r: None, ProbeContext(), stagger_seconds=0)
        quick = [_hang_target(i, f"q{i}", interval_seconds=60) for i in range(20)]
        start = time.monotonic()
        results = await asyncio.gather(
            *(sched.probe_once(t) for t in quick),
            sched.probe_once(_hang_target(99, "hangs", interval_seconds=1, timeout_ms=200)))
        # The quick probes shared slots with the hanging one: it was still cancelled in time.
        assert time.monotonic() - start < 1.0
        assert results[-1].error == "probe did not finish within 200 ms"
        assert all(r.success for r in results[:-1])
        for t in quick:
            sched.set(t)
        await asyncio.sleep(0.1)  # every target probed once, each now waits for its next tick
        pending = [h for h in loop._scheduled if not h.cancelled()]  # asyncio's timer heap
        assert len(pending) == len(quick), pending  # one timer per target, no timeout timers
        await sched.stop()
    finally:
        del KINDS["hang"]
