"""Server-Sent Events: order, keep-alive, slow consumers, disconnect clean-up."""

from __future__ import annotations

import asyncio
import json

import httpx

from tests.conftest import ADMIN_KEY, make_config, running_app
from tests.test_notify import web_target


async def read_events(resp: httpx.Response, want: set[str], out: list, comments: list) -> None:
    event = None
    async for line in resp.aiter_lines():
        if line.startswith(":"):
            comments.append(line)
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event:
            out.append((event, json.loads(line[6:])))
            if want <= {e for e, _ in out}:
                return


async def test_sse_down_up_in_order_with_keepalive(tmp_path, target_server):
    cfg = make_config(tmp_path, targets=[web_target(target_server.url)],
                      events={"keepalive": "200ms"})
    async with running_app(cfg) as run:
        await run.wait_for(lambda: run.app.monitor.snapshot().statuses.get("web") == "up")
        got: list = []
        comments: list = []
        async with httpx.AsyncClient(base_url=run.base, timeout=20,
                                     headers={"x-api-key": ADMIN_KEY}) as c:
            async with c.stream("GET", "/api/v1/events") as resp:
                assert resp.status_code == 200
                assert resp.headers["content-type"].startswith("text/event-stream")
                reader = asyncio.create_task(read_events(resp, {"target.up"}, got, comments))
                await run.wait_for(lambda: run.app.events.subscribers)
                target_server.behaviour.status = 500
                await run.wait_for(lambda: any(e == "target.down" for e, _ in got))
                target_server.behaviour.status = 200
                await asyncio.wait_for(reader, 15)
        flips = [(e, d["target"]["name"]) for e, d in got if e in ("target.down", "target.up")]
        assert flips == [("target.down", "web"), ("target.up", "web")]
        assert any(e == "target.check_result" and d["success"] is False for e, d in got)
        assert ": keep-alive" in comments or ": connected" in comments
        # the client is gone: the broker forgets it
        await run.wait_for(lambda: not run.app.events.subscribers)
        # read scope is required, unknown types are refused
        r = await run.client.get("/api/v1/events?types=nope")
        assert r.status_code == 400
        r = await httpx.AsyncClient(base_url=run.base).get("/api/v1/events")
        assert r.status_code == 401


async def test_slow_consumer_is_disconnected_not_buffered(tmp_path):
    cfg = make_config(tmp_path, targets=[web_target("http://127.0.0.1:9/")],
                      events={"queue_size": 5})
    async with running_app(cfg) as run:
        broker = run.app.events
        sub = broker.subscribe(None)
        for i in range(20):
            broker.publish("heartbeat.pinged", {"n": i})
        assert sub not in broker.subscribers and sub.overflowed
        assert sub.queue.qsize() == 1  # only the end-of-stream marker is kept
        chunks = [chunk async for chunk in broker.stream(sub, lambda: False)]
        assert chunks[-1].startswith(b"event: overflow")


async def test_keepalive_comments_flow_when_idle(tmp_path):
    cfg = make_config(tmp_path, targets=[web_target("http://127.0.0.1:9/", enabled=False)],
                      events={"keepalive": "100ms"})
    async with running_app(cfg) as run:
        async with httpx.AsyncClient(base_url=run.base, timeout=10,
                                     headers={"x-api-key": ADMIN_KEY}) as c:
            async with c.stream("GET", "/api/v1/events") as resp:
                seen = []
                async for line in resp.aiter_lines():
                    if line == ": keep-alive":
                        seen.append(line)
                        if len(seen) == 3:
                            break
        assert len(seen) == 3
