"""Heartbeat targets: every ping form, a missed deadline, limits."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import make_config, running_app

TOKEN = "backup-token-0123456789"


def hb(**extra):
    return {"name": "backup", "type": "heartbeat", "token": TOKEN, "period": "2s", "grace": "0s",
            "interval": "1s", **extra}


async def test_every_ping_form_feeds_the_monitor(tmp_path):
    # grace 1h: a started job has that long to finish (a 0 s grace would fail it at once).
    cfg = make_config(tmp_path, targets=[hb(period="1h", grace="1h")],
                      push={"per_token_per_minute": 1000})
    async with running_app(cfg) as run:
        pub = httpx.AsyncClient(base_url=run.base, timeout=10)  # no API key: the token is enough
        status = lambda: run.app.monitor.snapshot().statuses["backup"]  # noqa: E731
        r = await pub.get(f"/ping/{TOKEN}")
        assert r.status_code == 200 and r.json()["success"] is True
        assert status() == "up"
        r = await pub.post(f"/ping/{TOKEN}/fail", content=b"disk full")
        assert r.status_code == 200 and status() == "down"
        alert = (await run.client.get("/api/v1/alerts?state=open")).json()[0]
        assert alert["last_error"] == "disk full"
        assert (await pub.post(f"/ping/{TOKEN}/0")).status_code == 200 and status() == "up"
        await pub.get(f"/ping/{TOKEN}/3")
        assert status() == "down"
        assert (await run.client.get("/api/v1/alerts?state=open")).json()[0]["last_error"] == \
            "exit status 3"
        # start ... success measures the duration
        assert (await pub.post(f"/ping/{TOKEN}/start")).json()["kind"] == "start"
        await asyncio.sleep(0.3)
        await pub.post(f"/ping/{TOKEN}")
        last = run.app.monitor.state_of(run.app.monitor.target_named("backup").id).last
        assert last.success and last.latency_ms >= 250
        # push with JSON
        r = await pub.post(f"/api/v1/push/{TOKEN}", json={"status": "down", "message": "boom"})
        assert r.status_code == 200 and status() == "down"
        r = await pub.post(f"/api/v1/push/{TOKEN}", json={"status": "up", "ping": 42})
        assert status() == "up"
        backup = run.app.monitor.target_named("backup")
        assert run.app.monitor.state_of(backup.id).last.latency_ms == 42
        assert (await pub.post(f"/api/v1/push/{TOKEN}")).status_code == 200  # empty body = up
        # bad input: clear errors, nothing changes
        assert (await pub.post(f"/api/v1/push/{TOKEN}", json={"status": "meh"})).status_code == 400
        assert (await pub.post(f"/api/v1/push/{TOKEN}", content=b"{no")).status_code == 400
        assert (await pub.get("/ping/unknown-token-000000000")).status_code == 404
        assert (await pub.get(f"/ping/{TOKEN}/999")).status_code == 400
        r = await pub.post(f"/ping/{TOKEN}", content=b"x" * 20_000)
        assert r.status_code == 413
        assert status() == "up"
        # the admin listing shows the token; the targets API does not
        beats = (await run.client.get("/api/v1/heartbeats")).json()
        assert beats[0]["token"] == TOKEN and beats[0]["ping_url"] == f"/ping/{TOKEN}"
        targets = (await run.client.get("/api/v1/targets")).json()
        assert TOKEN not in str(targets)
        assert (await pub.get("/api/v1/heartbeats")).status_code == 401
        await pub.aclose()


async def test_missed_deadline_opens_an_alert_and_a_ping_closes_it(tmp_path):
    cfg = make_config(tmp_path, targets=[hb()])
    async with running_app(cfg) as run:
        pub = httpx.AsyncClient(base_url=run.base, timeout=10)
        await pub.get(f"/ping/{TOKEN}")
        snap = lambda: run.app.monitor.snapshot()  # noqa: E731
        await run.wait_for(lambda: snap().alert, timeout=10)
        assert [f.name for f in snap().failing] == ["backup"]
        alert = (await run.client.get("/api/v1/alerts?state=open")).json()[0]
        assert alert["last_error"].startswith("no ping for")
        await pub.get(f"/ping/{TOKEN}")
        assert not snap().alert and snap().statuses["backup"] == "up"
        await pub.aclose()


async def test_generated_token_and_rate_limits(tmp_path):
    cfg = make_config(tmp_path, targets=[{"name": "cron", "type": "heartbeat", "period": "1h"}],
                      push={"per_token_per_minute": 3, "per_ip_per_minute": 100})
    async with running_app(cfg) as run:
        token = (await run.client.get("/api/v1/heartbeats")).json()[0]["token"]
        assert len(token) >= 16
        pub = httpx.AsyncClient(base_url=run.base, timeout=10)
        codes = [(await pub.get(f"/ping/{token}")).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3] == 429
        r = await pub.get(f"/ping/{token}")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        await pub.aclose()
    # the generated token survives a restart
    async with running_app(cfg) as run:
        assert (await run.client.get("/api/v1/heartbeats")).json()[0]["token"] == token
