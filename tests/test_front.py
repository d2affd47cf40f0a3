"""The front door: alert-status and health answered without FastAPI; the rest of the API built on
its first use, once, and answering as before."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx

from pingr.api.front import Front
from pingr.api.schemas import HealthOut
from tests.conftest import ADMIN_KEY, make_config, running_app

ROOT = Path(__file__).resolve().parent.parent

_SCRIPT = """
import asyncio, json, sys
from pathlib import Path
import httpx
from tests.conftest import ADMIN_KEY, make_config, running_app

def api_loaded():
    return sorted(m for m in sys.modules if m == 'fastapi' or m.startswith('pingr.api.')
                  and m not in ('pingr.api.front',))

async def main():
    cfg = make_config(Path(sys.argv[1]), targets=[
        {"name": "self", "type": "tcp", "host": "127.0.0.1", "port": 9, "interval": "1s"}])
    async with running_app(cfg) as run:
        out = {}
        health = await run.client.get("/api/v1/health", headers={"x-api-key": ""})
        status = await run.client.get("/api/v1/alert-status")
        out["first"] = [health.status_code, status.status_code, api_loaded()]
        targets = await run.client.get("/api/v1/targets")
        out["after"] = [targets.status_code, [t["name"] for t in targets.json()["items"]],
                        "fastapi" in sys.modules]
    print(json.dumps(out))

asyncio.run(main())
"""


def test_a_running_pingr_answers_health_and_alert_status_without_loading_the_api(tmp_path):
    # A fresh interpreter: this one has imported FastAPI for other tests.
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], capture_output=True,
                         text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stdout + out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    # Health without a key, alert-status with one: both answered, neither loaded the API.
    assert seen["first"] == [200, 200, []], seen
    # The first other request builds the whole API, which then answers as always.
    assert seen["after"] == [200, ["self"], True], seen


async def test_the_front_doors_health_body_is_the_documented_model_exactly(tmp_path, target_server):
    cfg = make_config(tmp_path, targets=[{"name": "web", "type": "http",
                                          "url": target_server.url, "interval": "1s"}])
    async with running_app(cfg) as run:
        await run.wait_for(lambda: run.app.store.newest_result_ts() is not None)
        r = await run.client.get("/api/v1/health", headers={"x-api-key": ""})
        assert r.status_code == 200
        body = r.json()
        # Field for field what HealthOut (the OpenAPI document's schema) serializes to.
        assert HealthOut.model_validate(body).model_dump(mode="json") == body
        assert body["last_result_ts"].endswith("Z") and body["db"] is True
        # The documented route, reached inside the whole API, answers the same shape.
        front: Front = run.server.uvicorn.config.app
        api = await front.whole_api()
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://pingr") as inner:
            routed = await inner.get("/api/v1/health")
        assert routed.status_code == 200
        assert list(routed.json()) == list(body)
        assert {k: v for k, v in routed.json().items()
                if k not in ("uptime_seconds", "seconds_since_last_result", "last_result_ts",
                             "disk_bytes_written", "disk_bytes_per_day", "db_size_bytes")} == \
            {k: v for k, v in body.items()
             if k not in ("uptime_seconds", "seconds_since_last_result", "last_result_ts",
                          "disk_bytes_written", "disk_bytes_per_day", "db_size_bytes")}


async def test_concurrent_first_requests_build_the_api_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pingr.api.front")
    async with running_app(make_config(tmp_path)) as run:
        answers = await asyncio.gather(*(run.client.get("/api/v1/targets") for _ in range(8)),
                                       run.client.get("/api/v1/alert-status"))
        assert [a.status_code for a in answers] == [200] * 9
        builds = [r for r in caplog.records if "built on its first use" in r.getMessage()]
        assert len(builds) == 1, [r.getMessage() for r in builds]
        # The API's routes and models, built after start-up, are frozen as start-up's are.
        front: Front = run.server.uvicorn.config.app
        assert gc.is_tracked(front.api)
        assert not any(o is front.api for o in gc.get_objects())  # frozen ones are not listed
        # A request with a body goes to the whole API (its Guard), never the front's shortcut.
        r = await run.client.post("/api/v1/alerts/ack", content=b"x" * 100,
                                  headers={"x-api-key": "wrong"})
        assert r.status_code == 401
        assert r.json() == {"error": "Invalid or disabled API key",
                            "detail": "Invalid or disabled API key"}
        r = await run.client.request("OPTIONS", "/api/v1/health")
        assert r.status_code == 204 and "GET" in r.headers["allow"]
        assert ADMIN_KEY not in r.text
