"""The alert engine end to end on a real HTTP target, and the /alert-status contract."""

from __future__ import annotations

import asyncio
import json

import httpx

from pingr.app import App
from pingr.server import Server
from tests.conftest import ADMIN_KEY, EventTap, make_config, running_app


def http_target(url: str, name: str, **kw):
    return {"name": name, "type": "http", "url": url, "interval_seconds": 1,
            "failure_threshold": 2, **kw}


async def status(run) -> dict:
    r = await run.client.get("/api/v1/alert-status")
    assert r.status_code == 200
    return r.json()


async def test_full_alert_sequence(tmp_path, target_server):
    cfg = make_config(tmp_path, targets=[http_target(target_server.url, "Production Server")])
    async with running_app(cfg) as run:
        app, c = run.app, run.client
        tid = next(iter(app.targets))
        await run.wait_for(lambda: app.monitor.state_of(tid).status == "up")
        body = await status(run)
        assert list(body)[:4] == ["alert", "failing_targets", "failing_count", "timestamp"]
        assert (body["alert"] is False and body["failing_targets"] == []
                and body["failing_count"] == 0)

        # One failure: visible as a count, raises nothing.
        target_server.behaviour.status = 500
        await run.wait_for(lambda: app.monitor.state_of(tid).failures == 1)
        assert (await status(run))["alert"] is False
        t = (await c.get(f"/api/v1/targets/{tid}")).json()
        assert t["consecutive_failures"] == 1 and t["status"] == "up"
        assert (await c.get("/api/v1/alerts?state=open")).json() == []

        # Threshold reached: down, one alert.
        await run.wait_for(lambda: app.monitor.state_of(tid).status == "down")
        body = await status(run)
        assert body["alert"] is True and body["failing_count"] == 1
        assert body["failing_targets"] == [{"name": "Production Server", "status": "down",
                                            "failures": 2, "threshold": 2}]
        raw = (await c.get("/api/v1/alert-status")).content
        assert len(raw) < 500
        await run.wait_for(lambda: app.monitor.state_of(tid).failures >= 3)
        assert (await status(run))["failing_targets"][0]["failures"] >= 3
        open_ = (await c.get("/api/v1/alerts?state=open")).json()
        assert (len(open_) == 1 and open_[0]["state"] == "open"
                and open_[0]["acknowledged_at"] is None)
        alert_id = open_[0]["id"]
        assert open_[0]["last_error"] == "unexpected status 500"

        # Acknowledge: still open, but alert-status is quiet.
        ack = await c.post(f"/api/v1/alerts/{alert_id}/ack")
        assert ack.status_code == 200 and ack.json()["count"] == 1
        assert ack.json()["acknowledged"][0]["acknowledged_by"] == "bootstrap"
        body = await status(run)
        assert body["alert"] is False and body["failing_targets"] == []
        assert body["acknowledged"] == ["Production Server"]
        one = (await c.get(f"/api/v1/alerts/{alert_id}")).json()
        assert one["state"] == "open" and one["acknowledged_at"].endswith("Z")

        # Recovery resolves it.
        target_server.behaviour.status = 200
        await run.wait_for(lambda: app.monitor.state_of(tid).status == "up")
        resolved = (await c.get(f"/api/v1/alerts/{alert_id}")).json()
        assert resolved["state"] == "resolved" and resolved["peak_failures"] >= 3
        assert (await status(run))["alert"] is False
        acked_resolved = await c.post(f"/api/v1/alerts/{alert_id}/ack")
        assert acked_resolved.status_code == 409

        # A new failure opens a new, unacknowledged alert.
        target_server.behaviour.status = 503
        await run.wait_for(lambda: app.monitor.state_of(tid).status == "down")
        body = await status(run)
        assert body["alert"] is True
        alerts = (await c.get("/api/v1/alerts?state=all")).json()
        assert [a["state"] for a in alerts] == ["open", "resolved"]  # newest first
        assert alerts[0]["id"] != alert_id and alerts[0]["acknowledged_at"] is None
        assert len((await c.get("/api/v1/alerts?state=resolved")).json()) == 1
        assert (await c.get("/api/v1/alerts?state=weird")).status_code == 400
        assert (await c.get("/api/v1/alerts/99999")).status_code == 404
        assert (await c.post("/api/v1/alerts/99999/ack")).status_code == 404

        # Acknowledge all (the button's path).
        all_ = await c.post("/api/v1/alerts/ack")
        assert all_.json()["count"] == 1
        assert (await status(run))["alert"] is False

        # Pausing the target resolves its alert; disabled targets never raise alert-status.
        await c.post(f"/api/v1/targets/{tid}/pause")
        assert (await c.get("/api/v1/alerts?state=open")).json() == []


async def test_etag_and_304(tmp_path, target_server):
    cfg = make_config(tmp_path, targets=[http_target(target_server.url, "web")])
    async with running_app(cfg) as run:
        await run.wait_for(lambda: run.app.monitor.last_result_ms)
        r1 = await run.client.get("/api/v1/alert-status")
        etag = r1.headers["etag"]
        r2 = await run.client.get("/api/v1/alert-status", headers={"If-None-Match": etag})
        assert r2.status_code == 304 and r2.content == b""
        assert r2.headers["etag"] == etag and "x-ratelimit-remaining" in r2.headers
        target_server.behaviour.status = 500
        tid = next(iter(run.app.targets))
        await run.wait_for(lambda: run.app.monitor.state_of(tid).status == "down")
        r3 = await run.client.get("/api/v1/alert-status", headers={"If-None-Match": etag})
        assert r3.status_code == 200 and r3.json()["alert"] is True
        assert r3.headers["etag"] != etag


async def test_dependencies_make_children_unreachable(tmp_path, target_server):
    from tests.conftest import TargetServer

    child_srv = TargetServer()
    cfg = make_config(tmp_path, targets=[
        http_target(target_server.url, "router"),
        http_target(child_srv.url, "nas", depends_on="router"),
        http_target(child_srv.url, "printer", depends_on="nas"),
    ])
    try:
        async with running_app(cfg) as run:
            m = run.app.monitor
            ids = {t.name: t.id for t in run.app.targets.values()}
            await run.wait_for(lambda: all(m.state_of(i).status == "up" for i in ids.values()))
            # The router goes down; so does everything behind it.
            target_server.behaviour.status = 500
            child_srv.behaviour.status = 500
            await run.wait_for(lambda: m.state_of(ids["router"]).status == "down")
            await run.wait_for(lambda: m.state_of(ids["nas"]).status == "unreachable"
                               and m.state_of(ids["printer"]).status == "unreachable")
            body = await status(run)
            assert [f["name"] for f in body["failing_targets"]] == ["router"]
            assert sorted(body["unreachable"]) == ["nas", "printer"]
            assert len((await run.client.get("/api/v1/alerts?state=open")).json()) == 1
            # The router recovers but the NAS itself is still broken: now it is really down.
            target_server.behaviour.status = 200
            await run.wait_for(lambda: m.state_of(ids["nas"]).status == "down", timeout=10)
            body = await status(run)
            assert "nas" in [f["name"] for f in body["failing_targets"]]
            assert "router" not in [f["name"] for f in body["failing_targets"]]
    finally:
        child_srv.close()


async def test_a_child_down_before_its_parent_becomes_unreachable(tmp_path, target_server):
    # Probed independently, a child can reach its threshold before its parent: here it alerts
    # after one failure, the router after three. Once the router is down, the NAS's failures
    # are explained by it: unreachable, its alert closed, one alert left.
    from tests.conftest import TargetServer

    child_srv = TargetServer()
    cfg = make_config(tmp_path, targets=[
        http_target(target_server.url, "router", failure_threshold=3),
        http_target(child_srv.url, "nas", depends_on="router", failure_threshold=1),
        http_target(child_srv.url, "printer", depends_on="nas", failure_threshold=1),
    ])
    try:
        async with running_app(cfg) as run:
            m = run.app.monitor
            ids = {t.name: t.id for t in run.app.targets.values()}
            await run.wait_for(lambda: all(m.state_of(i).status == "up" for i in ids.values()))
            events = EventTap(run.app)
            target_server.behaviour.status = 500
            child_srv.behaviour.status = 500
            await run.wait_for(lambda: m.state_of(ids["nas"]).status == "down")
            assert m.state_of(ids["router"]).status == "up"  # failing, below its threshold
            nas_alert = m.state_of(ids["nas"]).alert
            assert nas_alert is not None
            await run.wait_for(lambda: m.state_of(ids["router"]).status == "down")
            assert m.state_of(ids["nas"]).status == "unreachable"
            assert m.state_of(ids["printer"]).status == "unreachable"
            assert m.state_of(ids["nas"]).alert is None
            closed = events.first("target.unreachable", name="nas")
            assert closed["old"] == "down" and closed["alert"]["id"] == nas_alert.id
            assert closed["alert"]["resolved_at"] is not None
            snap = m.snapshot()
            assert [f.name for f in snap.failing] == ["router"]
            assert sorted(snap.unreachable) == ["nas", "printer"]
            await run.wait_for(lambda: run.app.store.alert(nas_alert.id).resolved_at)
            body = await status(run)
            assert [f["name"] for f in body["failing_targets"]] == ["router"]
    finally:
        child_srv.close()


async def test_stale_monitor_is_never_all_ok(tmp_path, target_server):
    cfg = make_config(tmp_path, targets=[http_target(target_server.url, "web")])
    async with running_app(cfg) as run:
        await run.wait_for(lambda: run.app.monitor.last_result_ms)
        assert (await status(run))["stale"] is False
        await run.app.scheduler.stop()  # freeze the probe loop, as a deadlock would
        await run.wait_for(lambda: run.app.monitor.stale, timeout=8)
        body = await status(run)
        assert body["alert"] is True and body["stale"] is True
        assert body["failing_targets"][0]["status"] == "stale"
        health = await run.client.get("/api/v1/health")
        assert health.status_code == 503 and health.json()["ok"] is False
        assert health.json()["stale"] is True


async def test_a_slow_start_is_not_a_stale_monitor(tmp_path, target_server):
    # Staleness counts from when probing starts, not from when the App was built: a start-up
    # slower than the stale limit (a Pi Zero, emulation) must not raise the alarm. Limit here:
    # 2 × 2 s; the first result takes 1.2 s, after the first staleness check (1 s).
    target_server.behaviour.delay = 1.2
    cfg = make_config(tmp_path, alerts={"stale_factor": 2}, targets=[
        {"name": "slow", "type": "http", "url": target_server.url, "interval": "2s",
         "timeout": "2s"}])
    app = App(cfg, env={})
    await asyncio.sleep(4.5)  # everything before probing took longer than the limit
    events = EventTap(app)
    server = Server(app)
    task = asyncio.create_task(server.run())
    try:
        await asyncio.wait_for(server.listening.wait(), 20)
        deadline = asyncio.get_running_loop().time() + 20
        while app.monitor.last_result_ms is None:  # the first (slow) result
            assert asyncio.get_running_loop().time() < deadline, "no probe result"
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.1)  # one more staleness check with the result in
        assert "monitor.stale" not in events.types
        assert app.monitor.stale is False and app.monitor.snapshot().alert is False
    finally:
        server.request_stop()
        await asyncio.wait_for(task, 20)


async def test_restart_restores_open_alert_without_alerting_twice(tmp_path, target_server):
    target_server.behaviour.status = 500
    cfg = make_config(tmp_path, targets=[http_target(target_server.url, "web")])
    async with running_app(cfg) as run:
        tid = next(iter(run.app.targets))
        await run.wait_for(lambda: run.app.monitor.state_of(tid).status == "down")
        first = (await run.client.get("/api/v1/alerts?state=open")).json()
        assert len(first) == 1
    async with running_app(cfg) as run:
        events = EventTap(run.app)
        state = run.app.monitor.state_of(tid)
        assert state.status == "down" and state.failures >= 2  # restored from history
        body = await status(run)
        assert body["alert"] is True and body["failing_targets"][0]["name"] == "web"
        await run.wait_for(lambda: state.failures >= 4)
        again = (await run.client.get("/api/v1/alerts?state=all")).json()
        assert [a["id"] for a in again] == [first[0]["id"]]
        assert "target.down" not in events.types


async def test_examples_contract_shape_with_plain_clients(tmp_path, target_server):
    """The fields existing clients read, through a client that knows nothing of pingr."""
    target_server.behaviour.status = 500
    cfg = make_config(tmp_path, targets=[http_target(target_server.url, "Production Server")])
    async with running_app(cfg) as run:
        tid = next(iter(run.app.targets))
        await run.wait_for(lambda: run.app.monitor.state_of(tid).status == "down")
        async with httpx.AsyncClient() as plain:
            r = await plain.get(f"{run.base}/api/v1/alert-status",
                                headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        data = json.loads(r.text)
        assert data["alert"] is True and data["failing_count"] == len(data["failing_targets"])
        lines = [f"- {t['name']}: {t['failures']}/{t['threshold']} failures"
                 for t in data["failing_targets"]]
        assert lines[0].startswith("- Production Server: ") and lines[0].endswith("/2 failures")
        await asyncio.sleep(0)


async def test_restart_keeps_failures_below_threshold_visible(tmp_path, target_server):
    cfg = make_config(tmp_path, targets=[http_target(target_server.url, "web",
                                                     failure_threshold=10)])
    async with running_app(cfg) as run:
        tid = next(iter(run.app.targets))
        await run.wait_for(lambda: run.app.monitor.state_of(tid).status == "up")
        target_server.behaviour.status = 500
        await run.wait_for(lambda: run.app.monitor.state_of(tid).failures >= 2)
    async with running_app(cfg) as run:
        state = run.app.monitor.state_of(tid)
        assert state.status == "up" and state.failures >= 2
        assert (await status(run))["alert"] is False
