"""Every core endpoint with its error cases, timestamps in Z, and a complete OpenAPI document."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import make_config, running_app

Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def http_target(url: str, name: str = "web", **kw):
    return {"name": name, "type": "http", "url": url, "interval_seconds": 1, **kw}


@pytest.fixture
async def run(tmp_path, target_server):
    cfg = make_config(tmp_path, targets=[http_target(target_server.url),
                                         {"name": "lo", "type": "icmp", "host": "127.0.0.1",
                                          "interval_seconds": 1, "enabled": False}])
    async with running_app(cfg) as r:
        await r.wait_for(lambda: r.app.store.newest_result_ts() is not None)
        yield r


async def test_health(run):
    r = await run.client.get("/api/v1/health", headers={"x-api-key": ""})
    body = r.json()
    assert r.status_code == 200 and body["ok"] is True and body["db"] is True
    assert body["enabled_targets"] == 1
    assert Z.match(body["last_result_ts"]) and body["seconds_since_last_result"] >= 0
    assert body["version"] and body["stale"] is False


async def test_targets_list_filter_and_get(run):
    c = run.client
    enabled = (await c.get("/api/v1/targets")).json()["items"]
    assert [t["name"] for t in enabled] == ["web"]
    disabled = (await c.get("/api/v1/targets?status=disabled")).json()["items"]
    assert [t["name"] for t in disabled] == ["lo"]
    assert len((await c.get("/api/v1/targets?status=all")).json()["items"]) == 2
    bad = await c.get("/api/v1/targets?status=sideways")
    assert bad.status_code == 400 and "status" in bad.json()["detail"]
    t = enabled[0]
    assert Z.match(t["created_at"]) and t["source"] == "config"
    assert t["failure_threshold"] == 3 and t["interval_seconds"] == 1 and t["timeout_ms"] == 1000
    one = await c.get(f"/api/v1/targets/{t['id']}")
    assert one.status_code == 200 and one.json()["id"] == t["id"]
    missing = await c.get("/api/v1/targets/nope")
    assert missing.status_code == 404
    assert missing.json() == {"error": "no target with id nope", "detail": "no target with id nope"}


async def test_target_management_takes_effect_without_restart(run, target_server):
    c = run.client
    hits = target_server.behaviour.hits
    created = await c.post("/api/v1/targets", json={"name": "api-made", "type": "tcp",
                                                    "host": "127.0.0.1",
                                                    "port": target_server.port,
                                                    "interval_seconds": 1, "tags": ["x"]})
    assert created.status_code == 201, created.text
    t = created.json()
    assert t["source"] == "api" and t["tags"] == ["x"]
    await run.wait_for(lambda: (run.app.monitor.state_of(t["id"]).last is not None))

    dup = await c.post("/api/v1/targets", json={"name": "api-made", "type": "icmp",
                                                "host": "127.0.0.1"})
    assert dup.status_code == 409 and "already exists" in dup.json()["detail"]
    bad = await c.post("/api/v1/targets", json={"name": "x", "type": "http", "url": "nope"})
    assert bad.status_code == 400 and "url" in bad.json()["detail"]
    unknown = await c.post("/api/v1/targets", json={"name": "x", "type": "icmp",
                                                    "host": "127.0.0.1", "colour": "red"})
    assert unknown.status_code == 400 and "colour: unknown field" in unknown.json()["detail"]
    notjson = await c.post("/api/v1/targets", content=b"{nope",
                           headers={"content-type": "application/json"})
    assert notjson.status_code == 400
    parent = await c.post("/api/v1/targets", json={"name": "x", "type": "icmp",
                                                   "host": "127.0.0.1", "depends_on": "ghost"})
    assert parent.status_code == 400 and "unknown target 'ghost'" in parent.json()["detail"]

    upd = await c.put(f"/api/v1/targets/{t['id']}", json={"failure_threshold": 5})
    assert upd.status_code == 200 and upd.json()["failure_threshold"] == 5
    assert upd.json()["port"] == target_server.port
    badupd = await c.put(f"/api/v1/targets/{t['id']}", json={"port": 70000})
    assert badupd.status_code == 400 and "port" in badupd.json()["detail"]
    assert (await c.get(f"/api/v1/targets/{t['id']}")).json()["port"] == target_server.port

    web_id = (await c.get("/api/v1/targets")).json()["items"][1]["id"]
    cyc = await c.put(f"/api/v1/targets/{web_id}", json={"depends_on": "api-made"})
    assert cyc.status_code == 200
    cyc2 = await c.put(f"/api/v1/targets/{t['id']}", json={"depends_on": "web"})
    assert cyc2.status_code == 400 and "cycle" in cyc2.json()["detail"]
    busy = await c.delete(f"/api/v1/targets/{t['id']}")
    assert busy.status_code == 409 and "web" in busy.json()["detail"]
    await c.put(f"/api/v1/targets/{web_id}", json={"depends_on": None})

    paused = await c.post(f"/api/v1/targets/{web_id}/pause")
    assert paused.status_code == 200 and paused.json()["enabled"] is False
    assert paused.json()["status"] == "paused"
    await run.wait_for(lambda: True)
    n = len(hits)
    import asyncio

    await asyncio.sleep(1.5)
    assert len(hits) <= n + 1  # at most one probe was already in flight
    resumed = await c.post(f"/api/v1/targets/{web_id}/resume")
    assert resumed.json()["enabled"] is True
    await run.wait_for(lambda: len(hits) > n + 1)

    gone = await c.delete(f"/api/v1/targets/{t['id']}")
    assert gone.status_code == 204
    assert (await c.get(f"/api/v1/targets/{t['id']}")).status_code == 404
    assert (await c.delete(f"/api/v1/targets/{t['id']}")).status_code == 404
    assert (await c.post(f"/api/v1/targets/{t['id']}/pause")).status_code == 404


async def test_results_endpoints(run, target_server):
    c = run.client
    await run.wait_for(lambda: len(list(run.app.monitor.states())) and
                       run.app.store.summary(0).get(next(iter(run.app.targets.values())).pk,
                                                    (0,))[0] >= 2)
    latest = (await c.get("/api/v1/results/latest")).json()["items"]
    assert len(latest) >= 2
    assert [r["ts"] for r in latest] == sorted((r["ts"] for r in latest), reverse=True)
    r0 = latest[0]
    assert Z.match(r0["ts"]) and r0["success"] is True and r0["status_code"] == 200
    assert isinstance(r0["latency_ms"], int) and r0["error"] is None
    assert len((await c.get("/api/v1/results/latest?limit=1")).json()["items"]) == 1
    assert (await c.get("/api/v1/results/latest?limit=5000")).status_code == 200  # clamped
    for bad in ("0", "-3", "abc"):
        resp = await c.get(f"/api/v1/results/latest?limit={bad}")
        assert resp.status_code == 400 and "limit" in resp.json()["detail"]

    by_target = (await c.get("/api/v1/results/latest-by-target")).json()["items"]
    assert [x["target_name"] for x in by_target] == ["web"] and by_target[0]["status"] == "up"

    tid = r0["target_id"]
    hist = await c.get(f"/api/v1/targets/{tid}/results")
    assert hist.status_code == 200 and len(hist.json()["items"]) >= 2
    since = hist.json()["items"][0]["ts"]
    only = (await c.get(f"/api/v1/targets/{tid}/results",
                        params={"since": since})).json()["items"]
    assert len(only) >= 1 and all(x["ts"] >= since for x in only)
    assert (await c.get(f"/api/v1/targets/{tid}/results?since=yesterday")).status_code == 400
    assert (await c.get(f"/api/v1/targets/{tid}/results?until=2025-13-01")).status_code == 400
    inv = await c.get(f"/api/v1/targets/{tid}/results",
                      params={"since": "2030-01-01T00:00:00Z", "until": "2020-01-01T00:00:00Z"})
    assert inv.status_code == 400
    assert (await c.get("/api/v1/targets/nope/results")).status_code == 404

    target_server.behaviour.status = 500

    async def failure_stored():
        s = (await c.get("/api/v1/summary")).json()["items"]
        return s if s[0]["uptime_percent"] < 100 else None

    s = await run.wait_for(failure_stored)
    assert len(s) == 1 and s[0]["total_probes"] >= 3
    assert 0 < s[0]["uptime_percent"] < 100
    one = (await c.get(f"/api/v1/summary/{tid}?window=24h")).json()
    assert one["target_id"] == tid and one["window"] == "24h"
    assert one["avg_latency_ms"] is not None
    for bad in ("forever", "0s", "-1h"):
        resp = await c.get(f"/api/v1/summary?window={bad}")
        assert resp.status_code == 400 and "window" in resp.json()["detail"]
    assert (await c.get("/api/v1/summary/nope")).status_code == 404


async def test_openapi_is_complete(run):
    doc = (await run.client.get("/openapi.json")).json()
    paths = doc["paths"]
    for p in ("/api/v1/health", "/api/v1/targets", "/api/v1/targets/{target_id}",
              "/api/v1/results/latest", "/api/v1/results/latest-by-target",
              "/api/v1/targets/{target_id}/results", "/api/v1/summary",
              "/api/v1/summary/{target_id}", "/api/v1/alert-status", "/api/v1/alerts",
              "/api/v1/alerts/{alert_id}/ack", "/api/v1/keys"):
        assert p in paths, p
    for path, ops in paths.items():
        for method, op in ops.items():
            codes = op["responses"]
            assert "422" not in codes, (path, method)
            ok = [c for c in codes if c.startswith("2")]
            assert ok, (path, method)
            for code in ok:
                if code != "204":
                    assert "content" in codes[code], (path, method, code)
            if op.get("security"):
                assert "401" in codes, (path, method)
    secured = {p for p, ops in paths.items() if any(o.get("security") for o in ops.values())}
    assert "/api/v1/health" not in secured
    assert {"/api/v1/targets", "/api/v1/alert-status", "/api/v1/keys"} <= secured
    assert "ErrorOut" in doc["components"]["schemas"]


async def test_every_error_answer_has_error_and_detail(tmp_path):
    """Whatever part of the API answers an error (routes, the alert-status fast path, the
    public heartbeat endpoints, Starlette's routing, validation), the body is
    {"error": m, "detail": m} with one message in the user's words."""
    token = "heartbeat-token-0123456789"
    cfg = make_config(tmp_path, targets=[
        {"name": "job", "type": "heartbeat", "token": token, "period": "1h"}],
        push={"per_token_per_minute": 2})
    async with running_app(cfg) as run:
        c = run.client
        read = (await c.post("/api/v1/keys", json={"name": "ro", "scope": "read"})).json()["key"]
        anon = httpx.AsyncClient(base_url=run.base, timeout=10)
        cases = [
            (anon.get("/api/v1/alert-status"), 401, "Missing API key in x-api-key header"),
            (anon.get("/api/v1/targets", headers={"x-api-key": "nope"}), 401,
             "Invalid or disabled API key"),
            (c.post("/api/v1/alerts/ack", headers={"x-api-key": read}), 403,
             "This API key has the 'read' scope; this request needs 'operate'."),
            (c.get("/api/v1/alerts/12345"), 404, "no alert with id 12345"),
            (c.get("/api/v1/alerts?limit=0"), 400, "invalid limit: must be at least 1, got 0"),
            (c.get("/api/v1/alerts?state=sideways"), 400,
             "state: must be 'open', 'resolved' or 'all'"),
            (c.post("/api/v1/keys", json={"name": "ro", "scope": "read"}), 409,
             "an API key named 'ro' already exists"),
            (c.post("/api/v1/keys", json={"name": "x", "scope": "root"}), 400,
             "scope: must be 'read', 'operate' or 'admin'"),
            (c.get("/api/v1/no-such-thing"), 404, "Not Found"),
            (c.put("/api/v1/health"), 405, "Method Not Allowed"),
            (anon.get("/ping/unknown-token-000000000"), 404, None),
            (anon.get(f"/ping/{token}/999"), 400, None),
            (anon.post(f"/ping/{token}", content=b"x" * 20_000), 413, None),
            (anon.post(f"/api/v1/push/{token}", json={"status": "meh"}), 400,
             "status: must be 'up' or 'down'"),
            (anon.post(f"/api/v1/push/{token}", content=b"{no"), 400, "body is not valid JSON"),
        ]
        try:
            for pending, status, text in cases:
                r = await pending
                body = r.json()
                assert r.status_code == status, (r.request.url, r.status_code, body)
                assert set(body) == {"error", "detail"} and body["error"] == body["detail"], body
                assert body["error"] and "function-after" not in body["error"]
                if text is not None:
                    assert body["error"] == text, (r.request.url, body)
            for _ in range(3):  # the per-token limit: 2 a minute
                r = await anon.get(f"/ping/{token}")
            assert r.status_code == 429 and r.json()["error"] == r.json()["detail"]
            assert int(r.headers["retry-after"]) >= 1
        finally:
            await anon.aclose()
