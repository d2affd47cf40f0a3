"""GET /metrics against a real running pingr, parsed with prometheus-client's own parser."""

from __future__ import annotations

import time

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_config, running_app


def parse(text: str) -> dict[str, list]:
    """name -> samples, via prometheus-client's text parser (raises on malformed output)."""
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(families: dict[str, list], sample: str, **labels: str) -> float:
    family = families[sample.removesuffix("_total")]
    found = [s.value for s in family
             if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, f"{sample}{labels}: {found}"
    return found[0]


def target_labels(families: dict[str, list]) -> set[str]:
    return {s.labels["target"] for f, samples in families.items() if f.startswith("pingr_target")
            for s in samples}


async def test_metrics_follow_targets_and_alerts(tmp_path, target_server):
    cfg = make_config(tmp_path, targets=[
        {"name": "web", "type": "http", "url": target_server.url, "interval": "1s",
         "failure_threshold": 2},
        {"name": "port", "type": "tcp", "host": "127.0.0.1", "port": target_server.port,
         "interval": "1s"},
    ])
    async with running_app(cfg) as run:
        await run.wait_for(lambda: all(
            s.last is not None for s in run.app.monitor.states()))
        resp = await run.client.get("/metrics")
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
        fams = parse(resp.text)
        assert value(fams, "pingr_target_up", target="web", type="http") == 1
        assert value(fams, "pingr_target_up", target="port", type="tcp") == 1
        assert value(fams, "pingr_target_latency_seconds", target="web") >= 0
        assert value(fams, "pingr_target_consecutive_failures", target="web") == 0
        assert value(fams, "pingr_alert") == 0 and value(fams, "pingr_open_alerts") == 0
        assert value(fams, "pingr_probes_total", type="http") >= 1
        assert value(fams, "pingr_probe_errors_total", type="http") == 0
        # Process figures of this very process (the server runs in it), as the platform reports
        # them: psutil reads /proc/self/statm, which qemu-user does not fake (unlike .../stat).
        rss = value(fams, "process_resident_memory_bytes")
        assert 0.5 < rss / psutil.Process().memory_info().rss < 2, rss
        assert value(fams, "process_virtual_memory_bytes") >= rss
        assert value(fams, "process_cpu_seconds_total") > 0
        assert value(fams, "process_open_fds") > 0
        assert value(fams, "process_start_time_seconds") <= time.time()
        # prometheus-client's platform collector is in the same registry.
        assert "python_info" in fams

        target_server.behaviour.status = 500
        await run.wait_for(lambda: run.app.monitor.snapshot().alert)
        fams = parse((await run.client.get("/metrics")).text)
        assert value(fams, "pingr_target_up", target="web", type="http") == 0
        assert value(fams, "pingr_target_consecutive_failures", target="web") >= 2
        assert value(fams, "pingr_target_state", target="web", state="down") == 1
        assert value(fams, "pingr_alert") == 1 and value(fams, "pingr_open_alerts") == 1
        assert value(fams, "pingr_failing_targets") == 1
        assert value(fams, "pingr_probe_errors_total", type="http") >= 2
        await run.wait_for(lambda: run.app.store.rows_written > 0)
        fams = parse((await run.client.get("/metrics")).text)
        assert value(fams, "pingr_storage_rows_written_total") > 0
        assert value(fams, "pingr_storage_database_bytes") > 0

        # Targets come and go; their series go with them (bounded label sets).
        names = [f"extra {i}" for i in range(5)]
        for name in names:
            r = await run.client.post("/api/v1/targets", json={
                "name": name, "type": "tcp", "host": "127.0.0.1", "port": target_server.port,
                "interval": "1s"})
            assert r.status_code in (200, 201), r.text
        await run.wait_for(lambda: all(
            s.last is not None for s in run.app.monitor.states()))
        fams = parse((await run.client.get("/metrics")).text)
        assert target_labels(fams) == {"web", "port", *names}
        for item in (await run.client.get("/api/v1/targets")).json()["items"]:
            if item["name"] in names:
                r = await run.client.delete(f"/api/v1/targets/{item['id']}")
                assert r.status_code in (200, 204), r.text
        fams = parse((await run.client.get("/metrics")).text)
        assert target_labels(fams) == {"web", "port"}


async def test_metrics_needs_a_key_unless_public(tmp_path):
    cfg = make_config(tmp_path, targets=[])
    async with running_app(cfg) as run:
        async with httpx.AsyncClient(base_url=run.base) as anon:
            resp = await anon.get("/metrics")
            assert resp.status_code == 401
            assert resp.json() == {"error": "Missing API key in x-api-key header",
                                   "detail": "Missing API key in x-api-key header"}
            bearer = {"authorization": f"Bearer {cfg.auth.api_key}"}
            resp = await anon.get("/metrics", headers=bearer)
            assert resp.status_code == 200 and "pingr_alert" in parse(resp.text)
    cfg = make_config(tmp_path, targets=[], metrics={"public": True})
    async with running_app(cfg) as run:
        async with httpx.AsyncClient(base_url=run.base) as anon:
            resp = await anon.get("/metrics")
            assert resp.status_code == 200 and "pingr_monitor_stale" in parse(resp.text)
    cfg = make_config(tmp_path, targets=[], metrics={"enabled": False})
    async with running_app(cfg) as run:
        assert (await run.client.get("/metrics")).status_code == 404
