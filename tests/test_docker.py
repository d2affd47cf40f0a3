"""Docker collector and container API against a real dockerd started by tests/dockerd.py."""

from __future__ import annotations

import time
from contextlib import closing
from typing import Any

import pytest

from tests.conftest import make_config, running_app
from tests.dockerd import IMAGE, TEST_LABEL, Engine

# sh is PID 1 in the container: without a trap it would ignore SIGTERM and every stop would
# wait for the kill timeout.
TICKER = "trap 'exit 0' TERM; i=0; while :; do echo line $i; i=$((i+1)); sleep 0.2; done"


def run(engine_client: Any, name: str, cmd: str = TICKER, **kw: Any) -> Any:
    labels = {TEST_LABEL: "1", "pingr.monitor": "true", **kw.pop("labels", {})}
    return engine_client.containers.run(IMAGE, ["sh", "-c", cmd], name=name, detach=True,
                                        network_mode="none", labels=labels, **kw)


def docker_config(tmp_path, engine: Engine, **docker: Any) -> Any:
    return make_config(tmp_path, docker={"enabled": True, "socket": engine.socket,
                                         "grace": "1s", "resync": "2s", **docker})


async def failing(run_) -> dict[str, str]:
    status = (await run_.client.get("/api/v1/alert-status")).json()
    return {f["name"]: f["status"] for f in status["failing_targets"]}


def collector(run_) -> Any:
    return run_.app.docker


async def test_list_inspect_stats_logs(tmp_path, docker_env: Engine):
    with closing(docker_env.client()) as dc:
        run(dc, "web", labels={"com.docker.compose.project": "home",
                               "com.docker.compose.service": "web"})
        dc.containers.run(IMAGE, ["sh", "-c", "echo done"], name="oneshot", detach=True,
                          network_mode="none", labels={TEST_LABEL: "1"})
        cfg = docker_config(tmp_path, docker_env, containers=["ghost"])
        async with running_app(cfg) as r:
            c = r.client
            await r.wait_for(lambda: _state(c, "oneshot", "exited"))
            listing = (await c.get("/api/v1/containers")).json()
            web = next(x for x in listing if x["name"] == "web")
            assert web["state"] == "running" and web["image"] == IMAGE
            assert web["compose_project"] == "home" and web["compose_service"] == "web"
            assert web["status"].startswith("Up") and web["restart_count"] == 0
            assert web["monitored"] is True and web["created"].endswith("Z")
            oneshot = next(x for x in listing if x["name"] == "oneshot")
            assert oneshot["monitored"] is False and oneshot["status"].startswith("Exited (0)")

            detail = (await c.get(f"/api/v1/containers/{web['short_id']}")).json()
            assert detail["name"] == "web"
            assert detail["cpu_percent"] is not None and detail["cpu_percent"] >= 0
            assert detail["memory"]["usage_bytes"] > 0 and detail["memory"]["limit_bytes"] > 0
            assert detail["network"] is None  # network_mode none: no interfaces to count
            assert (await c.get("/api/v1/containers/web")).json()["id"] == web["id"]

            logs = await c.get("/api/v1/containers/web/logs?lines=3")
            assert logs.status_code == 200
            lines = logs.text.splitlines()
            assert len(lines) == 3 and all(x.startswith("line ") for x in lines)
            assert (await c.get("/api/v1/containers/web/logs?since=1h")).text.startswith("line 0")
            future = await c.get("/api/v1/containers/web/logs?since=2999-01-01T00:00:00Z")
            assert future.status_code == 200 and future.text == ""
            for bad in ("lines=0", "lines=100000", "since=yesterday"):
                resp = await c.get(f"/api/v1/containers/web/logs?{bad}")
                assert resp.status_code == 400, bad
                assert resp.json()["detail"].startswith(bad.split("=")[0]), resp.json()
            assert (await c.get("/api/v1/containers/nope")).status_code == 404
            assert (await c.get("/api/v1/containers/nope/logs")).status_code == 404

            system = (await c.get("/api/v1/system")).json()
            assert system["containers"] == {"running": 1, "stopped": 1, "unhealthy": 0}
            # Watched: the labelled container is up; a configured one that does not exist fails.
            assert r.app.monitor.snapshot().statuses["container:web"] == "up"
            assert "container:oneshot" not in r.app.monitor.snapshot().statuses
            assert (await failing(r)) == {"container:ghost": "down"}


async def _state(c, name: str, state: str) -> bool:
    listing = (await c.get("/api/v1/containers")).json()
    return any(x["name"] == name and x["state"] == state for x in listing)


async def test_actions_events_and_grace(tmp_path, docker_env: Engine):
    with closing(docker_env.client()) as dc:
        ct = run(dc, "app")
        async with running_app(docker_config(tmp_path, docker_env)) as r:
            c = r.client
            await r.wait_for(lambda: r.app.monitor.snapshot().statuses.get("container:app") == "up")
            # Only admin keys may act on containers.
            _, ro_key = await r.app.key_admin.manage("create", name="ro", scope="read")
            denied = await c.post("/api/v1/containers/app/stop", headers={"x-api-key": ro_key})
            assert denied.status_code == 403
            assert (await c.post("/api/v1/containers/app/explode")).status_code in (400, 404)

            # A restart is over within the grace period: no alert.
            resp = await c.post("/api/v1/containers/app/restart?timeout=5")
            assert resp.status_code == 200 and resp.json()["state"] == "running"
            stopped = await c.post("/api/v1/containers/app/stop?timeout=5")
            assert stopped.status_code == 200 and stopped.json()["state"] == "exited"
            await r.wait_for(lambda: _is_failing(r, "container:app"), timeout=10)
            alerts = (await c.get("/api/v1/alerts")).json()
            assert [a["target_name"] for a in alerts] == ["container:app"]
            assert "exited" in alerts[0]["last_error"]
            started = await c.post("/api/v1/containers/app/start")
            assert started.status_code == 200 and started.json()["state"] == "running"
            await r.wait_for(lambda: _not_failing(r, "container:app"), timeout=10)
            assert (await c.get(f"/api/v1/alerts/{alerts[0]['id']}")).json()["resolved_at"]

            # Changes made outside pingr arrive through the event stream within about a second.
            began = time.monotonic()
            ct.stop(timeout=5)
            await r.wait_for(lambda: _state(c, "app", "exited"), timeout=5, step=0.02)
            seen_after = time.monotonic() - began
            assert seen_after < 3.0, seen_after


async def _is_failing(r, name: str) -> bool:
    return name in await failing(r)


async def _not_failing(r, name: str) -> bool:
    return name not in await failing(r)


async def test_healthcheck_going_unhealthy(tmp_path, docker_env: Engine):
    second = 1_000_000_000
    with closing(docker_env.client()) as dc:
        ct = run(dc, "db", cmd="touch /tmp/ok; " + TICKER,
                 healthcheck={"test": ["CMD-SHELL", "test -f /tmp/ok"], "interval": second,
                              "timeout": second, "retries": 1, "start_period": 0})
        async with running_app(docker_config(tmp_path, docker_env)) as r:
            c = r.client
            await r.wait_for(lambda: _health(c, "db", "healthy"), timeout=15)
            assert "container:db" not in await failing(r)
            ct.exec_run(["rm", "/tmp/ok"])
            await r.wait_for(lambda: _is_failing(r, "container:db"), timeout=15)
            listing = (await c.get("/api/v1/containers")).json()
            db = next(x for x in listing if x["name"] == "db")
            assert db["health"] == "unhealthy" and db["status"].endswith("(unhealthy)")
            assert (await c.get("/api/v1/system")).json()["containers"]["unhealthy"] == 1
            alert = (await c.get("/api/v1/alerts?state=open")).json()[0]
            assert alert["target_name"] == "container:db" and "unhealthy" in alert["last_error"]
            ct.exec_run(["touch", "/tmp/ok"])
            await r.wait_for(lambda: _not_failing(r, "container:db"), timeout=15)


async def _health(c, name: str, health: str) -> bool:
    listing = (await c.get("/api/v1/containers")).json()
    return any(x["name"] == name and x["health"] == health for x in listing)


async def test_crash_loop_detected(tmp_path, docker_env: Engine):
    with closing(docker_env.client()) as dc:
        async with running_app(docker_config(
                tmp_path, docker_env, crash_loop={"restarts": 3, "window": "1m"},
                grace="30s")) as r:
            # grace 30s: only the crash-loop rule can make this fail within the test.
            run(dc, "flaky", cmd="sleep 0.2; exit 3", restart_policy={"Name": "always"})
            await r.wait_for(lambda: _is_failing(r, "container:flaky"), timeout=30)
            alert = (await r.client.get("/api/v1/alerts?state=open")).json()[0]
            assert alert["target_name"] == "container:flaky"
            assert "crash loop" in alert["last_error"]
            listing = (await r.client.get("/api/v1/containers")).json()
            assert next(x for x in listing if x["name"] == "flaky")["restart_count"] >= 3


async def test_daemon_stopping_and_coming_back(tmp_path, docker_env: Engine):
    with closing(docker_env.client()) as dc:
        run(dc, "svc", restart_policy={"Name": "always"})
    cfg = docker_config(tmp_path, docker_env, grace="30s")
    async with running_app(cfg) as r:
        c = r.client
        col = collector(r)
        col.reconnect_max = 1.0  # keep the test short; production backs off to 5 s
        await r.wait_for(lambda: r.app.monitor.snapshot().statuses.get("container:svc") == "up")

        docker_env.stop()
        await r.wait_for(lambda: not col.available, timeout=20)
        resp = await c.get("/api/v1/containers")
        assert resp.status_code == 503 and "Docker unavailable" in resp.json()["detail"]
        system = await c.get("/api/v1/system")
        assert system.status_code == 200
        assert system.json()["containers"] == {"running": None, "stopped": None,
                                               "unhealthy": None}
        assert (await c.get("/api/v1/health")).status_code == 200  # everything else runs on

        docker_env.start()
        await r.wait_for(lambda: col.available, timeout=30)
        await r.wait_for(lambda: _state(c, "svc", "running"), timeout=30)
        assert r.app.monitor.snapshot().statuses["container:svc"] == "up"
        # The event stream is followed again after the reconnect.
        with closing(docker_env.client()) as dc:
            dc.containers.get("svc").pause()
            await r.wait_for(lambda: _state(c, "svc", "paused"), timeout=5)
            dc.containers.get("svc").unpause()


async def test_auto_is_off_without_a_socket(tmp_path):
    cfg = make_config(tmp_path, docker={"enabled": "auto",
                                        "socket": f"unix://{tmp_path}/no-such.sock"})
    async with running_app(cfg) as r:
        assert r.app.docker is None
        resp = await r.client.get("/api/v1/containers")
        assert resp.status_code == 503 and "off" in resp.json()["detail"]


@pytest.mark.parametrize("bad", [{"monitor": "some"}, {"crash_loop": {"restarts": 0}},
                                 {"grace": "soon"}])
def test_docker_config_errors_are_located(tmp_path, bad):
    from pingr.config import ConfigError

    with pytest.raises(ConfigError) as err:
        make_config(tmp_path, docker=bad)
    assert "docker." in str(err.value)
