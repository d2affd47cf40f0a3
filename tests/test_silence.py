"""Silences mute notifications and audible outputs (snapshot.failing) for their targets."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import make_config, running_app
from tests.test_notify import Sink, web_target


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.close()


async def test_silence_mutes_notifications_and_alert_status(tmp_path, target_server, sink):
    cfg = make_config(tmp_path, targets=[web_target(target_server.url)],
                      notify=[{"name": "hook", "url": f"json://127.0.0.1:{sink.port}/s"}],
                      notify_settings={"cooldown": "0s", "reminder_interval": "0s"})
    async with running_app(cfg) as run:
        c = run.client
        r = await c.post("/api/v1/silence", json={"tags": ["prod"], "duration": "1h",
                                                  "comment": "maintenance"})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        assert r.json()["active"] and r.json()["created_by"] == "bootstrap"
        target_server.behaviour.status = 500
        await run.wait_for(lambda: run.app.monitor.snapshot().statuses.get("web") == "down")
        snap = run.app.monitor.snapshot()
        assert not snap.alert and snap.failing == () and snap.silenced == ("web",)
        status = (await c.get("/api/v1/alert-status")).json()
        assert status["alert"] is False and status["silenced"] == ["web"]
        await asyncio.sleep(1.5)
        assert sink.requests == []
        log = (await c.get("/api/v1/notifications")).json()
        assert log[0]["state"] == "suppressed" and log[0]["last_error"] == "silenced"
        # Ending the silence: the alert is still open, so now it is told and sounds.
        assert (await c.delete(f"/api/v1/silence/{sid}")).status_code == 204
        await run.wait_for(lambda: run.app.monitor.snapshot().alert)
        await run.wait_for(lambda: sink.json("/s"))
        assert sink.json("/s")[0]["title"] == "pingr: web is DOWN"
        assert (await c.get("/api/v1/silence")).json() == []


async def test_silence_api_validation(tmp_path, target_server):
    cfg = make_config(tmp_path, targets=[web_target(target_server.url)])
    async with running_app(cfg) as run:
        c = run.client
        for body, msg in [({"duration": "1h"}, "targets"),
                          ({"targets": ["ghost"], "duration": "1h"}, "ghost"),
                          ({"targets": ["web"]}, "ends_at or duration"),
                          ({"targets": ["web"], "duration": "soon"}, "duration"),
                          ({"targets": ["web"], "ends_at": "2001-01-01T00:00:00Z"}, "past"),
                          ({"targets": ["web"], "starts_at": "2999-01-02T00:00:00Z",
                            "ends_at": "2999-01-01T00:00:00Z"}, "after")]:
            r = await c.post("/api/v1/silence", json=body)
            assert r.status_code == 400 and msg in r.json()["detail"], r.text
        r = await c.post("/api/v1/silence", json={"targets": ["web"],
                                                  "starts_at": "2999-01-01T00:00:00Z",
                                                  "duration": "1d"})
        assert r.status_code == 201 and r.json()["active"] is False
        assert len((await c.get("/api/v1/silence")).json()) == 1
        assert (await c.delete("/api/v1/silence/999")).status_code == 404
        key = (await c.post("/api/v1/keys", json={"name": "ro", "scope": "read"})).json()["key"]
        r = await c.post("/api/v1/silence", json={"targets": ["web"], "duration": "1h"},
                         headers={"x-api-key": key})
        assert r.status_code == 403
