"""PiAlert's rate limits, exactly: "120 requests/minute per API key" and "10 failed
authentication attempts per minute per IP address" mean never more than that many in any
60-second window; Retry-After is the whole seconds until the next request is accepted and
X-RateLimit-Reset until a full burst is possible again. Blocks are never evicted early."""

from __future__ import annotations

import asyncio
import bisect
import random
import time

import httpx

from pingr.ratelimit import MAX_ENTRIES, FailureWindow, SlidingWindow, TokenBucket
from tests.conftest import ADMIN_KEY, make_config, running_app

SEED_DOC = "/work/shared/seeds/004_c3114b2c4cae8c6e.txt"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def max_in_window(times: list[float], period: float = 60.0) -> int:
    """The most events in any half-open window [t, t + period)."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + period) - i for i, t in enumerate(times)),
               default=0)


def test_the_document_states_the_limits():
    text = open(SEED_DOC, encoding="utf-8").read()
    assert "120 requests per minute per API key" in text
    assert "10 failed authentication attempts per minute per IP address" in text


def test_a_fresh_key_gets_120_in_its_first_minute_not_239():
    # One request every 0.25 s for two minutes: the old token bucket let 239 through in the
    # first 60 s (a full bucket plus its refill).
    clock = Clock()
    bucket = TokenBucket(120, 60.0, clock)
    window = SlidingWindow(120, 60.0, clock)
    start = clock.t
    old, new = [], []
    for i in range(480):
        clock.t = start + i * 0.25
        if bucket.hit("k").allowed:
            old.append(clock.t)
        if window.hit("k").allowed:
            new.append(clock.t)
    first_minute = [t for t in old if t < start + 60]
    assert len(first_minute) == 239  # what the issue measured
    assert max_in_window(new) == 120
    assert len([t for t in new if t < start + 60]) == 120
    assert len(new) == 240  # and no stricter than promised: 120 per minute, every minute


def test_never_more_than_n_in_any_window_and_never_refused_with_room():
    rng = random.Random(16)
    for limit in (1, 3, 10, 120):
        clock = Clock()
        window = SlidingWindow(limit, 60.0, clock)
        accepted: list[float] = []
        for _ in range(3000):
            # Bursts and pauses: many requests within milliseconds, then gaps up to 40 s.
            clock.t += rng.choice((0.0, 0.001, 0.05, 0.5, 3.0, rng.uniform(0, 40)))
            d = window.hit("key")
            recent = [t for t in accepted if t > clock.t - 60.0]
            if d.allowed:
                accepted.append(clock.t)
                assert d.retry_after == 0 and d.remaining == limit - len(recent) - 1
            else:
                assert len(recent) == limit  # refused only when the window is full
                assert d.remaining == 0
        assert max_in_window(accepted) <= limit
        assert accepted  # it does accept


def test_retry_after_and_reset_are_exact_whole_seconds():
    clock = Clock()
    window = SlidingWindow(120, 60.0, clock)
    start = clock.t
    for i in range(120):  # 120 requests over the first 29.75 s
        clock.t = start + i * 0.25
        d = window.hit("k")
        assert d.allowed and d.remaining == 119 - i
    assert d.reset == 60  # a full burst again once the newest is a minute old
    clock.t = start + 30.2
    refused = window.hit("k")
    # The next request is accepted when the first one (at 0.0) is 60 s old: 29.8 s away.
    assert not refused.allowed and refused.retry_after == 30
    assert refused.reset == 60  # the newest (29.75) leaves the window 59.55 s from now
    clock.t = start + 30.2 + refused.retry_after - 1
    assert not window.hit("k").allowed  # one second less is too early
    clock.t = start + 30.2 + refused.retry_after
    assert window.hit("k").allowed
    # After X-RateLimit-Reset seconds, a whole burst of 120 is accepted at once.
    clock.t = start + 100.0
    reset = window.hit("k").reset  # accepted: start+0.25 ... are gone; this one is newest
    clock.t += reset
    assert all(window.hit("k").allowed for _ in range(120))
    assert not window.hit("k").allowed


def test_key_logs_are_dropped_once_idle():
    clock = Clock()
    window = SlidingWindow(5, 60.0, clock)
    sizes = []
    for i in range(5000):
        window.hit(i)
        clock.t += 0.1
        sizes.append(len(window))
    # Keys seen in the last 60 s (601) are kept; idle ones are dropped when the table has
    # doubled since the last look (amortized), so it never holds more than twice the live ones.
    assert max(sizes) <= 2 * 601 and min(sizes[-1000:]) >= 601


def test_failed_auth_exact_per_address():
    rng = random.Random(7)
    clock = Clock()
    fails = FailureWindow(10, 60.0, clock)
    evaluated: list[float] = []  # failures the limiter let through (answered 401)
    for _ in range(2000):
        clock.t += rng.choice((0.0, 0.01, 0.5, 2.0, rng.uniform(0, 30)))
        wait = fails.blocked_for("203.0.113.5")
        recent = [t for t in evaluated if t > clock.t - 60.0]
        if wait:
            assert len(recent) == 10
            assert wait - 1 < recent[0] + 60.0 - clock.t <= wait  # whole seconds, rounded up
        else:
            assert len(recent) < 10
            fails.fail("203.0.113.5")
            evaluated.append(clock.t)
    assert max_in_window(evaluated) == 10


def test_ten_quick_failures_block_for_sixty_seconds():
    clock = Clock()
    fails = FailureWindow(10, 60.0, clock)
    for _ in range(10):
        assert fails.blocked_for("198.51.100.1") == 0
        fails.fail("198.51.100.1")
        clock.t += 0.001
    assert fails.blocked_for("198.51.100.1") == 60  # the document's "Try again in 60 seconds."
    clock.t += 59.0
    assert fails.blocked_for("198.51.100.1") == 1
    clock.t += 1.0
    assert fails.blocked_for("198.51.100.1") == 0


def test_20001_other_addresses_cannot_lift_a_block():
    """Issue 15's block escape: past 20,000 entries the least recently used were evicted, and
    a blocked entry was one of them."""
    clock = Clock()
    fails = FailureWindow(10, 60.0, clock)
    for _ in range(10):
        fails.fail("192.0.2.66")
    blocked = fails.blocked_for("192.0.2.66")
    assert blocked == 60
    # 20,001 other addresses fail once each ...
    for i in range(MAX_ENTRIES + 1):
        fails.fail(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")
        clock.t += 0.001
    assert fails.blocked_for("192.0.2.66") == blocked - 20  # 20.001 s later, still blocked
    # ... and 20,001 more get blocked themselves: still no escape.
    for i in range(MAX_ENTRIES + 1):
        addr = f"10.200.{i >> 8}.{i & 255}-{i}"
        for _ in range(10):
            fails.fail(addr)
    assert fails.blocked == MAX_ENTRIES + 2
    assert fails.blocked_for("192.0.2.66") == blocked - 20
    assert len(fails._counting) <= MAX_ENTRIES  # those merely counted stay capped
    clock.t += 40.0
    assert fails.blocked_for("192.0.2.66") == 0  # released on time, not before
    # Ended blocks are released as new failures arrive: the blocked table drains.
    clock.t += 60.0
    fails.fail("192.0.2.67")
    assert fails.blocked == 0


async def _timed(client: httpx.AsyncClient, path: str, **kw) -> tuple[float, httpx.Response]:
    t = time.monotonic()
    return t, await client.get(path, **kw)


async def test_both_429s_over_a_real_minute(tmp_path):
    """A key polling 4 times a second and a brute-forcer twice a second, for 62 s of real
    time: count what pingr accepted in every 60 s window, and check every 429's text and
    Retry-After against when the next request really got through."""
    async with running_app(make_config(tmp_path)) as run:
        key = (await run.client.post("/api/v1/keys",
                                     json={"name": "poller", "scope": "read"})).json()["key"]
        stop = time.monotonic() + 62.0

        async def poller() -> list[tuple[float, httpx.Response]]:
            out = []
            async with httpx.AsyncClient(base_url=run.base, headers={"x-api-key": key}) as c:
                i = 0
                while time.monotonic() < stop:
                    out.append(await _timed(c, ("/api/v1/alert-status", "/api/v1/targets")[i % 2]))
                    i += 1
                    await asyncio.sleep(0.25)
            return out

        async def guesser(addr: str, pause: float,
                          at_once: int = 0) -> list[tuple[float, httpx.Response]]:
            out = []
            transport = httpx.AsyncHTTPTransport(local_address=addr)
            async with httpx.AsyncClient(base_url=run.base, transport=transport) as c:
                while time.monotonic() < stop:
                    out.append(await _timed(c, "/api/v1/alert-status",
                                            headers={"x-api-key": "wrong-key"}))
                    if len(out) > at_once:
                        await asyncio.sleep(pause)
            return out

        polls, guesses, burst = await asyncio.gather(
            poller(), guesser("127.0.0.7", 0.5), guesser("127.0.0.8", 0.05, at_once=11))

    # The key: 120 accepted in the first minute, never more in any 60 s window.
    ok = [t for t, r in polls if r.status_code == 200]
    assert {r.status_code for _, r in polls} == {200, 429}
    assert max_in_window(ok, 59.9) == 120  # 0.1 s for the request's own way to the server
    assert len([t for t in ok if t < polls[0][0] + 59.9]) == 120
    remaining = [int(r.headers["x-ratelimit-remaining"]) for _, r in polls[:120]]
    assert remaining == list(range(119, -1, -1))
    assert all(r.headers["x-ratelimit-limit"] == "120" for _, r in polls)
    for i, (t, r) in enumerate(polls):
        if r.status_code != 429:
            continue
        n = int(r.headers["retry-after"])
        assert r.json() == {"error": f"Rate limit exceeded. Try again in {n} seconds.",
                            "detail": f"Rate limit exceeded. Try again in {n} seconds."}
        assert 1 <= n <= int(r.headers["x-ratelimit-reset"]) <= 60
        after = [u for u, s in polls[i + 1:] if s.status_code == 200]
        if after:  # the next acceptance came when Retry-After said, within a poll's spacing
            assert n - 1 - 0.3 <= after[0] - t <= n + 0.6, (n, after[0] - t)

    # The guesser: at most 10 failed attempts evaluated (401) in any 60 s window.
    failed = [t for t, r in guesses if r.status_code == 401]
    assert max_in_window(failed, 59.9) == 10
    for i, (t, r) in enumerate(guesses):
        if r.status_code == 429:
            n = int(r.headers["retry-after"])
            text = f"Too many failed authentication attempts. Try again in {n} seconds."
            assert r.json() == {"error": text, "detail": text}
            after = [u for u, s in guesses[i + 1:] if s.status_code == 401]
            if after:
                assert n - 1 - 0.3 <= after[0] - t <= n + 0.9, (n, after[0] - t)
    # Ten at once, then the eleventh: the document's own example, 60 seconds.
    codes = [r.status_code for _, r in burst]
    assert codes[:10] == [401] * 10 and codes[10] == 429
    assert burst[10][1].headers["retry-after"] == "60"
    assert max_in_window([t for t, r in burst if r.status_code == 401], 59.9) == 10


async def test_the_admin_key_is_limited_like_any_other(tmp_path):
    cfg = make_config(tmp_path, auth={"api_key": ADMIN_KEY, "rate_limit_per_minute": 3})
    async with running_app(cfg) as run:
        codes = [(await run.client.get("/api/v1/alert-status")).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
