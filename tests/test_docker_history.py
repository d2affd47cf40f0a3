"""Container timelines, restart loops, live logs and resource history against the real
Docker engine the suite starts (tests/dockerd.py): a container that restarts in a loop, one
that logs continuously, one that turns unhealthy, one that burns CPU."""

from __future__ import annotations

import asyncio
import json
import threading
from contextlib import closing
from typing import Any

from tests.conftest import EventTap, running_app
from tests.dockerd import Engine
from tests.test_docker import TICKER, docker_config, failing, run


def sse(raw: str) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) of every complete SSE message in `raw` (comments skipped)."""
    out = []
    for block in raw.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n")
                      if ": " in line and not line.startswith(":"))
        if "event" in fields:
            out.append((fields["event"], json.loads(fields["data"])))
    return out


def log_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"docker-logs-{name}"]


async def transitions(r, name: str) -> list[dict[str, Any]]:
    resp = await r.client.get(f"/api/v1/containers/{name}/transitions")
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_a_container_restarting_in_a_loop(tmp_path, docker_env: Engine):
    with closing(docker_env.client()) as dc:
        async with running_app(docker_config(
                tmp_path, docker_env, crash_loop={"restarts": 3, "window": "1m"},
                grace="30s")) as r:
            tap = EventTap(r.app)
            run(dc, "flaky", cmd="sleep 0.3; exit 3", restart_policy={"Name": "always"})
            await r.wait_for(lambda: any(k == "container.restart_alert"
                                         for k, _ in tap.drain()), timeout=40)
            alert = tap.first("container.restart_alert")
            assert alert["target"]["name"] == "container:flaky"
            assert alert["new"] == "detected"
            assert alert["data"]["detail"].startswith("crash loop: restarted 3 times in 1m")
            # One restart-loop alert per loop, and the target is down through the normal path.
            assert "container:flaky" in await failing(r)
            assert [k for k, _ in tap.drain()].count("container.restart_alert") == 1
            # The timeline: created, running, then exits with code 3 and restarts.
            timeline = await transitions(r, "flaky")
            kinds = [(t["kind"], t["old"], t["new"]) for t in reversed(timeline)]
            assert kinds[0] == ("state", None, "running") or kinds[0][:2] == ("state", None)
            exits = [t for t in timeline if t["kind"] == "state" and t["exit_code"] == 3]
            assert exits and all(t["new"] in ("exited", "restarting") for t in exits)
            assert any(t["kind"] == "restart_loop" for t in timeline)
            assert all(t["ts"].endswith("Z") for t in timeline)
            changed = [d for k, d in tap.drain() if k == "container.state_changed"]
            assert changed and changed[0]["data"]["container"] == "flaky"
            assert changed[0]["target"]["name"] == "container:flaky"
            # Written in a batch, kept after the container is gone.
            await r.app.timeline.flush()
            dc.containers.get("flaky").remove(force=True)
            await r.wait_for(lambda: any(
                d["new"] == "removed" for k, d in tap.drain() if k == "container.state_changed"))
            after = await transitions(r, "flaky")
            assert after[0]["new"] == "removed" and len(after) > len(timeline)
            assert (await r.client.get("/api/v1/containers/never/transitions")).status_code \
                == 404


async def test_a_container_turning_unhealthy(tmp_path, docker_env: Engine):
    second = 1_000_000_000
    with closing(docker_env.client()) as dc:
        ct = run(dc, "db", cmd="touch /tmp/ok; " + TICKER, labels={"pingr.monitor": "false"},
                 healthcheck={"test": ["CMD-SHELL", "test -f /tmp/ok"], "interval": second,
                              "timeout": second, "retries": 1, "start_period": 0})
        async with running_app(docker_config(tmp_path, docker_env)) as r:
            tap = EventTap(r.app)
            await r.wait_for(lambda: r.app.docker.by_name().get("db") is not None
                             and r.app.docker.by_name()["db"].health == "healthy", timeout=15)
            ct.exec_run(["rm", "/tmp/ok"])

            def went_unhealthy():
                return any(k == "container.health_changed" and d["new"] == "unhealthy"
                           for k, d in tap.drain())

            await r.wait_for(went_unhealthy, timeout=15)
            event = next(d for k, d in tap.drain()
                         if k == "container.health_changed" and d["new"] == "unhealthy")
            assert event["old"] == "healthy" and event["data"]["container"] == "db"
            assert event["target"] is None  # not watched (pingr.monitor=false): told anyway
            ct.exec_run(["touch", "/tmp/ok"])
            await r.wait_for(lambda: any(k == "container.health_changed" and d["old"] ==
                                         "unhealthy" for k, d in tap.drain()), timeout=15)
            health = [(t["old"], t["new"]) for t in await transitions(r, "db")
                      if t["kind"] == "health"]
            assert health[:2] == [("unhealthy", "healthy"), ("healthy", "unhealthy")]
            # The SSE stream takes the new types as filters like the old ones.
            async with r.client.stream("GET", "/api/v1/events?types=container.health_changed,"
                                       "container.state_changed,container.restart_alert,"
                                       "certificate.alert,certificate.recovery") as resp:
                assert resp.status_code == 200
            assert (await r.client.get("/api/v1/events?types=container.nope")).status_code == 400


class SseReader:
    """Reads a streaming SSE response on, across several waits."""

    def __init__(self, resp) -> None:
        self.chunks = resp.aiter_text()
        self.raw = ""

    async def until(self, done, limit: float = 15.0) -> list[tuple[str, dict[str, Any]]]:
        """Every message so far, once `done(messages)` is true."""
        async def consume() -> list[tuple[str, dict[str, Any]]]:
            events = sse(self.raw)
            while not done(events):
                self.raw += await self.chunks.__anext__()
                events = sse(self.raw)
            return events

        return await asyncio.wait_for(consume(), limit)


async def test_live_logs_of_a_container_that_logs_continuously(tmp_path, docker_env: Engine):
    with closing(docker_env.client()) as dc:
        ct = run(dc, "chatty")
        async with running_app(docker_config(tmp_path, docker_env)) as r:
            c = r.client
            await r.wait_for(lambda: "chatty" in r.app.docker.by_name())
            # A client that leaves: the engine's stream is closed and its thread ends.
            async with c.stream("GET", "/api/v1/containers/chatty/logs/stream?tail=2") as resp:
                assert resp.status_code == 200
                assert resp.headers["content-type"].startswith("text/event-stream")
                events = await SseReader(resp).until(lambda ev: len(ev) >= 6)
            lines = [d["line"] for k, d in events if k == "log"]
            numbers = [int(x.split()[1]) for x in lines]
            assert all(x.startswith("line ") for x in lines)
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # in order
            await r.wait_for(lambda: not log_threads("chatty"), timeout=10)

            # A container that stops: the stream says so and ends by itself.
            async with c.stream("GET", "/api/v1/containers/chatty/logs/stream?tail=0") as resp:
                reader = SseReader(resp)
                await reader.until(lambda ev: len(ev) >= 2)
                await asyncio.to_thread(ct.stop, timeout=5)
                events = await reader.until(lambda ev: ev and ev[-1][0] == "end")
            assert events[-1] == ("end", {"reason": "the container stopped"})
            await r.wait_for(lambda: not log_threads("chatty"), timeout=10)

            for bad, status in (("nope/logs/stream", 404), ("chatty/logs/stream", 409),
                                ("chatty/logs/stream?tail=5000", 400)):
                resp = await c.get(f"/api/v1/containers/{bad}")
                assert resp.status_code == status, (bad, resp.text)


async def test_resources_history_and_top(tmp_path, docker_env: Engine):
    with closing(docker_env.client()) as dc:
        run(dc, "web")
        run(dc, "burner", cmd="trap 'exit 0' TERM; while :; do :; done")
        async with running_app(docker_config(tmp_path, docker_env)) as r:
            c = r.client

            async def top() -> list[dict[str, Any]] | None:
                items = (await c.get("/api/v1/resources/top?sort=cpu&limit=5")).json()
                ready = len(items) == 2 and all(i["cpu_percent"] is not None for i in items)
                return items if ready else None

            items = await r.wait_for(top, timeout=30)
            assert [i["name"] for i in items] == ["burner", "web"]
            assert items[0]["cpu_percent"] > 20 > items[1]["cpu_percent"]
            assert all(i["memory_bytes"] > 0 and i["sampled_at"].endswith("Z") for i in items)
            assert items[0]["net_rx_bytes_per_s"] is None  # network_mode none
            mem = (await c.get("/api/v1/resources/top?sort=memory&limit=1")).json()
            assert len(mem) == 1
            assert (await c.get("/api/v1/resources/top?sort=disk")).status_code == 400
            assert (await c.get("/api/v1/resources/top?limit=0")).status_code == 400

            hist = (await c.get("/api/v1/containers/burner/resources/history?range=1h")).json()
            assert hist["container"] == "burner" and hist["resolution"] == "minute"
            assert hist["id"] == r.app.docker.by_name()["burner"].id
            last = hist["points"][-1]
            assert last["cpu_percent"] > 20 and last["cpu_percent_max"] >= last["cpu_percent"]
            assert last["memory_bytes"] > 0 and last["net_rx_bytes_per_s"] is None
            # Kept by name: still there once the container is gone.
            dc.containers.get("burner").remove(force=True)
            await r.wait_for(lambda: "burner" not in r.app.docker.by_name())
            gone = (await c.get("/api/v1/containers/burner/resources/history?range=1h")).json()
            assert gone["id"] is None and gone["points"]
            assert (await c.get("/api/v1/containers/nope/resources/history")).status_code == 404
