"""Job executions of heartbeat targets: real jobs (shell scripts with curl) that start and
finish, fail with an exit code, and start and die."""

from __future__ import annotations

import asyncio
import shutil

import httpx
import pytest

from tests.conftest import make_config, running_app

TOKEN = "nightly-job-token-0123456789"

needs_curl = pytest.mark.skipif(shutil.which("curl") is None,
                                reason="curl is not installed (tests/bootstrap.sh installs it)")


def job_target(**extra):
    return {"name": "nightly", "type": "heartbeat", "token": TOKEN, "period": "1h",
            "grace": "2s", "interval": "1s", **extra}


async def job(base: str, script: str) -> int:
    """Run a job as cron would: a shell script that reports to pingr with curl."""
    ping = f"{base}/ping/{TOKEN}"
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", script.replace("$PING", ping), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    return await proc.wait()


async def executions(r) -> list[dict]:
    target = r.app.monitor.target_named("nightly")
    resp = await r.client.get(f"/api/v1/heartbeats/{target.id}/executions")
    assert resp.status_code == 200, resp.text
    return resp.json()


@needs_curl
async def test_jobs_that_finish_fail_and_die(tmp_path):
    cfg = make_config(tmp_path, targets=[job_target()], push={"per_token_per_minute": 1000})
    async with running_app(cfg) as r:
        status = lambda: r.app.monitor.snapshot().statuses["nightly"]  # noqa: E731
        # Starts, works for a while, succeeds: one execution with its duration.
        assert await job(r.base, "curl -fsS $PING/start && sleep 0.4 && curl -fsS $PING") == 0
        [ok] = await executions(r)
        assert ok["state"] == "success" and ok["exit_code"] is None
        assert 400 <= ok["duration_ms"] < 5000
        assert ok["started_at"] < ok["ended_at"] and ok["message"] is None
        assert status() == "up"

        # Ends with its exit status (and its output as the message).
        code = await job(r.base, "curl -fsS $PING/start; sleep 0.1; "
                                 "echo 'disk full' | curl -fsS --data-binary @- $PING/3")
        assert code == 0
        failed = (await executions(r))[0]
        assert (failed["state"], failed["exit_code"], failed["message"]) == (
            "failure", 3, "disk full")
        assert failed["duration_ms"] >= 100
        assert status() == "down"
        assert await job(r.base, "curl -fsS $PING") == 0  # a success alone: a run of its own
        alone = (await executions(r))[0]
        assert alone["state"] == "success" and alone["started_at"] is None
        assert alone["duration_ms"] is None and status() == "up"

        # Starts and dies (killed before it could report): after its 2 s grace it is a
        # failure, "started but did not finish", and the target is down.
        assert await job(r.base, "curl -fsS $PING/start && kill -9 $$") != 0
        running = (await executions(r))[0]
        assert running["state"] == "running" and running["ended_at"] is None
        await r.wait_for(lambda: status() == "down", timeout=10)
        died = (await executions(r))[0]
        assert died["id"] == running["id"]
        assert (died["state"], died["message"]) == ("failure", "started but did not finish")
        assert 2000 <= died["duration_ms"] < 8000
        alert = (await r.client.get("/api/v1/alerts?state=open")).json()[0]
        assert alert["target_name"] == "nightly"
        assert alert["last_error"] == "started but did not finish within 2s"
        # The next run that succeeds recovers it.
        assert await job(r.base, "curl -fsS $PING/start && curl -fsS $PING/0") == 0
        assert status() == "up"
        assert [e["state"] for e in await executions(r)] == [
            "success", "failure", "success", "failure", "success"]

        # Started twice: the first run is over, unfinished.
        pub = httpx.AsyncClient(base_url=r.base, timeout=10)
        await pub.get(f"/ping/{TOKEN}/start")
        await pub.get(f"/ping/{TOKEN}/start")
        first, second = (await executions(r))[1], (await executions(r))[0]
        assert (first["state"], first["message"]) == ("failure",
                                                      "started again before it finished")
        assert second["state"] == "running"
        await pub.aclose()

        # Bad requests: clear errors.
        assert (await r.client.get("/api/v1/heartbeats/nope/executions")).status_code == 404
        target = r.app.monitor.target_named("nightly")
        assert (await r.client.get(f"/api/v1/heartbeats/{target.id}/executions?limit=0")
                ).status_code == 400
        assert len((await r.client.get(
            f"/api/v1/heartbeats/{target.id}/executions?limit=2")).json()) == 2


@needs_curl
async def test_a_run_survives_a_restart_of_pingr(tmp_path):
    cfg = make_config(tmp_path, targets=[job_target(grace="1h")])
    async with running_app(cfg) as r:
        assert await job(r.base, "curl -fsS $PING/start") == 0
    async with running_app(cfg) as r:
        await asyncio.sleep(0.2)
        assert await job(r.base, "curl -fsS $PING") == 0
        [run] = await executions(r)
        assert run["state"] == "success" and run["duration_ms"] >= 200
        assert r.app.monitor.snapshot().statuses["nightly"] == "up"
