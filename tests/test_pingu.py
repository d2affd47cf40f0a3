"""The Pingu API v0.1 draft, followed exactly: every endpoint, field, default, clamp, ordering
and error case, checked against a running pingr with the draft's own examples as the oracle
(its JSON examples are read from the document itself)."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from pingr.models import Result
from pingr.timeutil import now_ms
from tests.conftest import make_config, running_app

DRAFT = Path("/work/shared/seeds/001_58d443e3890fd174.txt")
Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def draft_examples() -> dict[str, Any]:
    """The draft's JSON examples by the endpoint whose section they are in."""
    text = DRAFT.read_text(encoding="utf-8")
    out: dict[str, Any] = {}
    section = None
    for block in re.split(r"^(#+ .*)$", text, flags=re.M):
        m = re.match(r"^### GET `+([^`]+)`+", block)
        if m:
            section = m.group(1)
            continue
        if block.startswith("#"):
            section = "error" if "Error" in block else None
            continue
        j = re.search(r"```json\n(.*?)```", block, flags=re.S)
        if j and section and section not in out:
            out[section] = json.loads(j.group(1))
    return out


EXAMPLES = draft_examples()


def test_the_draft_is_read():
    assert set(EXAMPLES) == {"/health", "/targets", "/targets/{target_id}",
                             "/results/latest-by-target", "/results/latest",
                             "/targets/{target_id}/results", "/summary", "/summary/{target_id}",
                             "error"}
    assert EXAMPLES["error"] == {"error": "invalid window format, expected like 15m, 1h, 7d"}


def same_shape(ours: Any, theirs: Any, where: str = "") -> None:
    """Every field of the draft's example is there with the same JSON type (null where the
    example is null may be anything; our objects may carry more fields)."""
    if theirs is None:
        return
    if isinstance(theirs, dict):
        assert isinstance(ours, dict), where
        for key, value in theirs.items():
            assert key in ours, f"{where}.{key} missing"
            same_shape(ours[key], value, f"{where}.{key}")
    elif isinstance(theirs, list):
        assert isinstance(ours, list), where
        for item in ours:
            same_shape(item, theirs[0], f"{where}[]")
    elif isinstance(theirs, bool):
        assert isinstance(ours, bool), where
    elif isinstance(theirs, int):
        assert isinstance(ours, int) and not isinstance(ours, bool), (where, ours)
    elif isinstance(theirs, float):
        assert isinstance(ours, float | None), (where, ours)
    else:
        assert isinstance(ours, type(theirs)) or ours is None, (where, ours)


def error_of(resp: httpx.Response, status: int) -> str:
    """The message of an error answer, checked for the draft's and PiAlert's keys."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "detail"} and body["error"] == body["detail"], body
    return body["error"]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
async def run(tmp_path, target_server):
    cfg = make_config(tmp_path, targets=[
        {"name": "web", "type": "http", "url": target_server.url, "interval": "1s"},
        {"name": "lo", "type": "icmp", "host": "127.0.0.1", "interval": "1s"},
        {"name": "archive", "type": "icmp", "host": "127.0.0.1", "enabled": False},
        {"name": "later", "type": "icmp", "host": "127.0.0.1", "enabled": False},
    ])
    async with running_app(cfg) as r:
        await r.wait_for(lambda: all(s.last is not None for s in r.app.monitor.states()
                                     if s.target.enabled))
        yield r


def ids(run) -> dict[str, str]:
    return {t.name: t.id for t in run.app.targets.values()}


async def test_health(run):
    r = await run.client.get("/api/v1/health", headers={"x-api-key": ""})  # no key needed
    assert r.status_code == 200
    body = r.json()
    same_shape(body, EXAMPLES["/health"])
    assert body["ok"] is True and body["db"] is True and body["enabled_targets"] == 2
    assert Z.match(body["last_result_ts"])
    assert type(body["seconds_since_last_result"]) is int and body["seconds_since_last_result"] >= 0
    # last_result_ts is the max timestamp across stored results (new ones keep coming).
    said = round(datetime.fromisoformat(body["last_result_ts"]).timestamp() * 1000)
    assert run.app.store.newest_result_ts() - 2000 <= said <= run.app.store.newest_result_ts()


async def test_targets(run):
    c, by_name = run.client, ids(run)
    listed = await c.get("/api/v1/targets")
    assert listed.status_code == 200 and list(listed.json()) == ["items"]
    items = listed.json()["items"]
    same_shape(listed.json(), EXAMPLES["/targets"])
    assert [t["name"] for t in items] == ["lo", "web"]  # default: enabled only
    icmp = next(t for t in items if t["type"] == "icmp")
    http = next(t for t in items if t["type"] == "http")
    assert icmp["url"] is None and icmp["host"] == "127.0.0.1"
    assert http["host"] is None and http["url"].startswith("http://127.0.0.1:")
    assert icmp["interval_seconds"] == 1 and icmp["timeout_ms"] == 1000 and icmp["enabled"]
    assert all(UUID4.match(t["id"]) for t in items)
    for status, names in (("enabled", ["lo", "web"]), ("disabled", ["archive", "later"]),
                          ("all", ["archive", "later", "lo", "web"])):
        r = await c.get("/api/v1/targets", params={"status": status})
        assert [t["name"] for t in r.json()["items"]] == names, status
    assert "status" in error_of(await c.get("/api/v1/targets?status=sideways"), 400)

    one = await c.get(f"/api/v1/targets/{by_name['lo']}")
    assert one.status_code == 200
    same_shape(one.json(), EXAMPLES["/targets/{target_id}"])
    assert one.json() == next(t for t in items if t["name"] == "lo")
    missing = "b5c59b0e-7e88-4e9f-8f3d-3c2c9d8c1b0b"  # the draft's example id: not ours
    assert error_of(await c.get(f"/api/v1/targets/{missing}"), 404) == \
        f"no target with id {missing}"


async def test_latest_by_target(run):
    r = await run.client.get("/api/v1/results/latest-by-target")
    assert r.status_code == 200 and list(r.json()) == ["items"]
    same_shape(r.json(), EXAMPLES["/results/latest-by-target"])
    items = r.json()["items"]
    assert sorted(x["target_name"] for x in items) == ["lo", "web"]  # only enabled targets
    assert [x["ts"] for x in items] == sorted((x["ts"] for x in items), reverse=True)
    for x in items:
        assert Z.match(x["ts"]) and x["target_id"] == ids(run)[x["target_name"]]
        assert x["success"] is True and x["error"] is None  # null for successful probes
        assert (x["status_code"] is None) == (x["target_name"] == "lo")  # HTTP probes only
        assert isinstance(x["latency_ms"], int)


def put_results(run, name: str, stamps: list[int], success: bool = True) -> None:
    """Results as the scheduler would hand them to the store (a disabled target: nothing
    else writes to it), oldest first."""
    target = next(t for t in run.app.targets.values() if t.name == name)
    for ts in stamps:
        run.app.store.add_result(Result(target.id, ts, success, 7 if success else None, None,
                                        None if success else "timed out after 1000 ms"),
                                 target.pk)


async def test_results_latest_default_clamp_and_order(run):
    now = now_ms()
    put_results(run, "archive", [now - 3_600_000 + i for i in range(1100)])
    c = run.client
    r = await c.get("/api/v1/results/latest")
    assert r.status_code == 200 and list(r.json()) == ["items"]
    same_shape(r.json(), EXAMPLES["/results/latest"])
    items = r.json()["items"]
    assert len(items) == 200  # default 200
    assert [x["ts"] for x in items] == sorted((x["ts"] for x in items), reverse=True)
    assert {x["target_name"] for x in items} <= {"web", "lo", "archive"}
    assert all(x["target_id"] == ids(run)[x["target_name"]] for x in items)
    assert len((await c.get("/api/v1/results/latest?limit=1000")).json()["items"]) == 1000
    assert len((await c.get("/api/v1/results/latest?limit=5000")).json()["items"]) == 1000
    assert len((await c.get("/api/v1/results/latest?limit=3")).json()["items"]) == 3
    for bad in ("0", "-3", "abc", "1.5"):
        assert "limit" in error_of(await c.get(f"/api/v1/results/latest?limit={bad}"), 400)


async def test_target_results_range_defaults_and_errors(run):
    now = now_ms()
    hour = 3_600_000
    put_results(run, "archive", [now - 25 * hour] + [now - 3 * hour + i * 1000
                                                    for i in range(1100)])
    put_results(run, "later", [now + hour])  # after "now": outside the default range
    c, tid = run.client, ids(run)["archive"]

    r = await c.get(f"/api/v1/targets/{tid}/results")
    assert r.status_code == 200
    body = r.json()
    assert list(body) == ["target_id", "target_name", "items"]
    assert body["target_id"] == tid and body["target_name"] == "archive"
    same_shape(body, EXAMPLES["/targets/{target_id}/results"])
    assert set(body["items"][0]) == set(EXAMPLES["/targets/{target_id}/results"]["items"][0])
    assert len(body["items"]) == 200  # default limit
    stamps = [x["ts"] for x in body["items"]]
    assert stamps == sorted(stamps, reverse=True) and stamps[0] == iso(now - 3 * hour + 1099_000)

    async def count(**params: Any) -> int:
        resp = await c.get(f"/api/v1/targets/{tid}/results", params=params)
        assert resp.status_code == 200, resp.text
        return len(resp.json()["items"])

    assert await count(limit=1000) == 1000
    assert await count(limit=5000) == 1000  # clamped
    # since defaults to now-24h: the result 25 h old is left out unless asked for.
    assert await count(limit=1000, since=iso(now - 4 * hour)) == 1000
    assert await count(since=iso(now - 26 * hour), until=iso(now - 4 * hour)) == 1
    assert await count(since=iso(now - 3 * hour), until=iso(now - 3 * hour + 9_000)) == 10
    assert await count(since=iso(now - 3 * hour + 1_099_000)) == 1
    later = ids(run)["later"]
    assert len((await c.get(f"/api/v1/targets/{later}/results")).json()["items"]) == 0
    plus2h = iso(now + 2 * hour)
    assert len((await c.get(f"/api/v1/targets/{later}/results",
                            params={"until": plus2h})).json()["items"]) == 1
    # Offsets other than Z are read as such.
    local = (datetime.fromtimestamp((now - 3 * hour) / 1000, UTC)
             .astimezone(datetime.now().astimezone().tzinfo) - timedelta(seconds=0))
    assert await count(since=local.isoformat(), limit=1000) == 1000

    for params, word in (({"since": "yesterday"}, "since"), ({"until": "2025-13-01"}, "until"),
                         ({"limit": "0"}, "limit"), ({"limit": "x"}, "limit"),
                         ({"since": "2030-01-01T00:00:00Z", "until": "2020-01-01T00:00:00Z"},
                          "since")):
        msg = error_of(await c.get(f"/api/v1/targets/{tid}/results", params=params), 400)
        assert word in msg, (params, msg)
    assert error_of(await c.get("/api/v1/targets/nope/results"), 404) == "no target with id nope"


async def test_summary(run, target_server):
    c = run.client
    r = await c.get("/api/v1/summary")
    assert r.status_code == 200 and list(r.json()) == ["window", "items"]
    same_shape(r.json(), EXAMPLES["/summary"])
    body = r.json()
    assert body["window"] == "1h"  # the default
    assert [x["target_name"] for x in body["items"]] == ["lo", "web"]  # enabled targets
    assert all("name" not in x for x in body["items"])
    for x in body["items"]:
        assert x["uptime_percent"] == 100.0 and x["total_probes"] >= 1
        assert isinstance(x["avg_latency_ms"], float | int)
    for window in ("15m", "1h", "24h", "7d", "90s"):
        r = await c.get("/api/v1/summary", params={"window": window})
        assert r.status_code == 200 and r.json()["window"] == window  # echoed as written

    target_server.behaviour.status = 500
    web = ids(run)["web"]

    async def some_failed() -> Any:
        one = (await c.get(f"/api/v1/summary/{web}")).json()
        return one if one["uptime_percent"] < 100 else None

    one = await run.wait_for(some_failed)
    assert list(one) == ["window", "target_id", "target_name", "uptime_percent",
                         "avg_latency_ms", "total_probes"]
    same_shape(one, EXAMPLES["/summary/{target_id}"])
    assert one["window"] == "1h" and one["target_name"] == "web" and one["target_id"] == web
    r = await c.get(f"/api/v1/summary/{web}", params={"window": "7d"})
    assert r.json()["window"] == "7d"

    draft_error = EXAMPLES["error"]["error"]
    for bad in ("forever", "-1h", "1y", "h1"):
        assert error_of(await c.get("/api/v1/summary", params={"window": bad}), 400) == \
            draft_error
        assert error_of(await c.get(f"/api/v1/summary/{web}", params={"window": bad}),
                        400) == draft_error
    assert "window" in error_of(await c.get("/api/v1/summary?window=0s"), 400)
    assert error_of(await c.get("/api/v1/summary/nope"), 404) == "no target with id nope"


async def test_every_endpoint_but_health_needs_the_key(run):
    tid = ids(run)["web"]
    async with httpx.AsyncClient(base_url=run.base) as anon:
        for path in ("/targets", f"/targets/{tid}", "/results/latest-by-target",
                     "/results/latest", f"/targets/{tid}/results", "/summary",
                     f"/summary/{tid}"):
            r = await anon.get("/api/v1" + path)
            assert error_of(r, 401) == "Missing API key in x-api-key header", path
        assert (await anon.get("/api/v1/health")).status_code == 200


async def test_unknown_paths_and_methods_answer_json(run):
    assert error_of(await run.client.get("/api/v1/nope"), 404) == "Not Found"
    r = await run.client.delete("/api/v1/health")
    assert error_of(r, 405) == "Method Not Allowed" and "GET" in r.headers["allow"]


async def test_a_broken_database_is_a_json_500_and_db_false(run):
    """The results view is gone (a damaged database): the draft's 500 is JSON like every
    other error, and /health says the database cannot be queried."""
    db = sqlite3.connect(run.app.db_path)
    db.execute("DROP VIEW results")
    db.commit()
    db.close()
    r = await run.client.get("/api/v1/results/latest")
    assert error_of(r, 500) == "unexpected server error"
    h = await run.client.get("/api/v1/health")
    assert h.status_code == 503
    assert h.json()["db"] is False and h.json()["ok"] is False
    assert "results" in h.json()["db_error"]
