"""Scheduler: own interval per target, slow or hanging targets never delay others."""

from __future__ import annotations

import asyncio
import time
from typing import Literal

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
