"""PiAlert's /api/v1/alert-status, exactly as its document says: bodies, texts, headers,
caching (a weak ETag over the situation, If-None-Match per RFC 9110), keep-alive, and its
client examples (bash+jq, the Python relay, the Discord and IFTTT bridges, curl) run verbatim
against pingr in a sandbox where the document's host names point at it and at a local
receiver."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pingr.server import KEEP_ALIVE
from tests import netns
from tests.conftest import TargetServer, make_config, running_app

DOC = Path("/work/shared/seeds/004_c3114b2c4cae8c6e.txt").read_text(encoding="utf-8")
ROOT = Path(__file__).resolve().parent.parent
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")


def doc_json(label: str) -> Any:
    """The JSON the document shows after `label` (e.g. 'Response (No Alerts):')."""
    start = DOC.index("{", DOC.index(label))
    return json.JSONDecoder().raw_decode(DOC, start)[0]


def doc_error(comment: str) -> str:
    """The `detail` of the error the document lists under `// <comment>`."""
    start = DOC.index("{", DOC.index(comment))
    return json.JSONDecoder().raw_decode(DOC, start)[0]["detail"]


def doc_code(start: str, end: str) -> str:
    """A client example, verbatim from its first line to its last."""
    i = DOC.index(start)
    return DOC[i:DOC.index(end, i) + len(end)] + "\n"


def target(url: str, name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "type": "http", "url": url, "interval": "1s",
            "failure_threshold": 3, **kw}


def error_body(text: str) -> dict[str, str]:
    return {"error": text, "detail": text}


# ---------------------------------------------------------------- body and texts


async def test_bodies_fields_and_texts(tmp_path, target_server):
    second = TargetServer()
    cfg = make_config(tmp_path, targets=[
        target(target_server.url, "Production Server"), target(second.url, "Database"),
        target(second.url, "Backup", enabled=False),
        target(target_server.url, "Flaky", failure_threshold=50)])
    try:
        async with running_app(cfg) as run:
            c = run.client
            await run.wait_for(lambda: all(s.status == "up" for s in run.app.monitor.states()
                                           if s.target.enabled))
            calm = doc_json("Response (No Alerts):")
            r = await c.get("/api/v1/alert-status")
            body = r.json()
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
            assert list(body)[:4] == list(calm)
            assert {k: body[k] for k in ("alert", "failing_targets", "failing_count")} == \
                {k: calm[k] for k in ("alert", "failing_targets", "failing_count")}
            assert STAMP.match(body["timestamp"]) and STAMP.match(calm["timestamp"])

            # "ISO 8601 UTC timestamp of when the status was generated"
            before = time.time()
            stamps = []
            for _ in range(2):
                stamps.append((await c.get("/api/v1/alert-status")).json()["timestamp"])
                await asyncio.sleep(0.3)
            after = time.time()
            seen = [datetime.fromisoformat(s).timestamp() for s in stamps]
            assert before - 0.01 <= seen[0] < seen[1] <= after + 0.01
            assert seen[1] - seen[0] >= 0.3

            second.behaviour.status = target_server.behaviour.status = 500
            await run.wait_for(lambda: len(run.app.monitor.snapshot().failing) == 2)
            alerting = doc_json("Response (With Alerts):")
            raw = await c.get("/api/v1/alert-status")
            body = raw.json()
            assert list(body)[:4] == list(alerting)
            assert body["alert"] is True and body["failing_count"] == 2 == \
                len(body["failing_targets"])
            # Names as configured; "Flaky" fails too, but below its threshold: not listed.
            assert sorted(t["name"] for t in body["failing_targets"]) == \
                sorted(t["name"] for t in alerting["failing_targets"])
            for t, example in zip(body["failing_targets"], alerting["failing_targets"],
                                  strict=True):
                assert list(t) == list(example)
                assert t["status"] == "down" and t["threshold"] == 3 and t["failures"] >= 3
                assert all(type(t[k]) is type(example[k]) for k in example)
            assert len(raw.content) < 500  # "Response size typically <500 bytes"

            # "Acknowledged alerts are excluded", "Disabled targets are excluded".
            alerts = (await c.get("/api/v1/alerts", params={"state": "open"})).json()
            db_alert = next(a for a in alerts if a["target_name"] == "Database")
            assert (await c.post(f"/api/v1/alerts/{db_alert['id']}/ack")).status_code == 200
            body = (await c.get("/api/v1/alert-status")).json()
            assert [t["name"] for t in body["failing_targets"]] == ["Production Server"]
            assert body["acknowledged"] == ["Database"]
            prod = run.app.monitor.target_named("Production Server").id
            assert (await c.post(f"/api/v1/targets/{prod}/pause")).status_code == 200
            body = (await c.get("/api/v1/alert-status")).json()
            assert (body["alert"], body["failing_targets"], body["failing_count"]) == \
                (False, [], 0)
    finally:
        second.close()


async def test_error_answers_are_the_documents(tmp_path):
    async with running_app(make_config(tmp_path)) as run:
        async with httpx.AsyncClient(base_url=run.base) as c:
            r = await c.get("/api/v1/alert-status")
            assert r.status_code == 401
            assert r.json() == error_body(doc_error("401 Unauthorized - Missing API key"))
            r = await c.get("/api/v1/alert-status", headers={"x-api-key": "your-api-key-here"})
            assert r.status_code == 401
            assert r.json() == error_body(doc_error("401 Unauthorized - Invalid API key"))
        assert doc_error("429 Too Many Requests - Rate limit exceeded") == \
            "Rate limit exceeded. Try again in 42 seconds."  # pingr's wording, N varying
        assert doc_error("429 Too Many Requests - Too many failed auth attempts") == \
            "Too many failed authentication attempts. Try again in 60 seconds."

        # A fault inside alert-status (none happens on its own: the body comes from memory).
        class Broken:
            def etag(self, snap: Any) -> str:
                raise RuntimeError("simulated fault")

        real, run.app.alert_status = run.app.alert_status, Broken()
        try:
            r = await run.client.get("/api/v1/alert-status")
        finally:
            run.app.alert_status = real
        assert r.status_code == 500
        assert r.json() == error_body(doc_error("500 Internal Server Error"))
        assert r.json()["detail"] == "Unable to fetch alert status"
        assert (await run.client.get("/api/v1/alert-status")).status_code == 200


# ---------------------------------------------------------------- caching


async def test_weak_etag_holds_while_failures_grow(tmp_path, target_server):
    cfg = make_config(tmp_path, targets=[target(target_server.url, "web",
                                                failure_threshold=2)])
    async with running_app(cfg) as run:
        c, app = run.client, run.app
        await run.wait_for(lambda: app.monitor.snapshot().statuses.get("web") == "up")
        r1 = await c.get("/api/v1/alert-status")
        tag1 = r1.headers["etag"]
        assert re.fullmatch(r'W/"[0-9a-f]{16}"', tag1) and r1.headers["cache-control"] == "no-cache"

        target_server.behaviour.status = 500
        tid = next(iter(app.targets))
        await run.wait_for(lambda: app.monitor.state_of(tid).status == "down")
        r2 = await c.get("/api/v1/alert-status", headers={"If-None-Match": tag1})
        assert r2.status_code == 200 and r2.json()["alert"] is True
        tag2 = r2.headers["etag"]
        assert tag2 != tag1
        failures = r2.json()["failing_targets"][0]["failures"]
        await run.wait_for(lambda: app.monitor.state_of(tid).failures >= failures + 2)

        # The count grew; the situation did not: 304 for a poller that has tag2.
        r3 = await c.get("/api/v1/alert-status", headers={"If-None-Match": tag2})
        assert r3.status_code == 304 and r3.content == b""
        assert r3.headers["etag"] == tag2 and r3.headers["cache-control"] == "no-cache"
        assert "x-ratelimit-remaining" in r3.headers
        assert "content-type" not in r3.headers and "content-length" not in r3.headers
        fresh = await c.get("/api/v1/alert-status")
        assert fresh.json()["failing_targets"][0]["failures"] > failures
        assert fresh.headers["etag"] == tag2

        opaque = tag2.removeprefix("W/")
        matching = [tag2, opaque, f'"nope", {tag2}', f'W/"a",{opaque} , "b"', "*",
                    f'"x",,{tag2}']
        for value in matching:
            r = await c.get("/api/v1/alert-status", headers={"If-None-Match": value})
            assert r.status_code == 304, value
        # Two If-None-Match fields are one list.
        r = await c.get("/api/v1/alert-status",
                        headers=[("If-None-Match", '"x"'), ("If-None-Match", tag2)])
        assert r.status_code == 304
        for value in ['W/"nope"', tag1, "garbage", f"{opaque}{opaque}", "*, " + tag2, '"',
                      f"{tag2} junk", ""]:
            r = await c.get("/api/v1/alert-status", headers={"If-None-Match": value})
            assert r.status_code == 200 and r.json()["alert"] is True, value
        head = await c.head("/api/v1/alert-status", headers={"If-None-Match": tag2})
        assert head.status_code == 304 and head.content == b""
        head = await c.head("/api/v1/alert-status")
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) > 0

        # An acknowledgement changes the situation: a new ETag and the new body.
        assert (await c.post("/api/v1/alerts/ack")).status_code == 200
        r4 = await c.get("/api/v1/alert-status", headers={"If-None-Match": tag2})
        assert r4.status_code == 200 and r4.json()["alert"] is False
        assert r4.json()["acknowledged"] == ["web"] and r4.headers["etag"] != tag2


def test_readme_describes_timestamp_and_etag_as_they_are():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### /api/v1/alert-status"):readme.index("### Keys, scopes")]
    assert "when this state began" not in section
    assert "generated" in section and 'W/"' in section and "If-None-Match" in section


# ---------------------------------------------------------------- keep-alive


async def test_keep_alive_outlasts_the_slowest_documented_poll(tmp_path):
    minutes = int(re.search(r"Maximum: (\d+) minutes", DOC).group(1))
    assert KEEP_ALIVE > minutes * 60  # the documented maximum poll interval
    async with running_app(make_config(tmp_path)) as run:
        request = (f"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1:{run.app.port}\r\n\r\n"
                   .encode())

        def exchange() -> list[bytes]:
            answers = []
            with socket.create_connection(("127.0.0.1", run.app.port), timeout=10) as s:
                for pause in (0, 6.5):  # uvicorn's default keep-alive (5 s) closed it here
                    time.sleep(pause)
                    s.sendall(request)
                    data = b""
                    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
                            re.search(rb"content-length: (\d+)", data, re.I).group(1)):
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    answers.append(data)
            return answers

        first, second = await asyncio.to_thread(exchange)
        assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 200")


# ---------------------------------------------------------------- the client examples


RELAY = ("#!/usr/bin/env python3\nimport requests\nimport RPi.GPIO as GPIO",
         "    time.sleep(POLL_INTERVAL)")
DISCORD = ("import requests\nimport time\n\nPIALERT_URL", "    time.sleep(30)")
BASH = ("#!/bin/bash\n\nAPI_URL=", "    exit 0\nfi")
IFTTT = ('import requests\n\nPIALERT_URL = "http://your-server:8000/api/v1/alert-status"\n'
         'PIALERT_API_KEY = "your-api-key-here"\nIFTTT', '"value3": data["timestamp"]\n        })')


def test_the_examples_are_found_verbatim():
    for start, end in (RELAY, DISCORD, IFTTT):
        compile(doc_code(start, end), "example", "exec")
    bash = doc_code(*BASH)
    assert 'API_URL="http://your-server:8000/api/v1/alert-status"' in bash
    assert "jq -r '.failing_targets[]" in bash


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_document_client_examples_run_verbatim(tmp_path):
    """pingr serves the document's URL (your-server:8000, localhost:8000) and key
    (your-api-key-here) in a sandbox; discord.com and maker.ifttt.com are a local HTTPS
    receiver there. Every script runs byte for byte as the document prints it."""
    reason = netns.why_not() or (None if shutil.which("curl") and shutil.which("jq")
                                 else "curl and jq are needed (tests/bootstrap.sh installs them)")
    if reason:
        pytest.skip(reason)
    ca, cert, key = netns.make_certs(tmp_path, ["discord.com", "maker.ifttt.com"])
    scripts = {name: tmp_path / f"{name}.{ext}" for name, ext in
               (("relay", "py"), ("discord", "py"), ("ifttt", "py"), ("bash", "sh"))}
    for name, (start, end) in (("relay", RELAY), ("discord", DISCORD), ("ifttt", IFTTT),
                               ("bash", BASH)):
        scripts[name].write_text(doc_code(start, end))
    status_file, hooks, gpio = tmp_path / "status", tmp_path / "hooks.jsonl", tmp_path / "gpio"
    config = tmp_path / "pingr.yaml"
    config.write_text(yaml.safe_dump({
        "host": "0.0.0.0", "port": 8000,
        "auth": {"api_key": "your-api-key-here"},
        "storage": {"path": str(tmp_path / "pingr.db")},
        "scheduler": {"stagger": 0},
        "targets": [{"name": "Production Server", "type": "http",
                     "url": "http://127.0.0.1:8081/", "interval": "1s",
                     "failure_threshold": 3}],
    }))
    with netns.sandbox(tmp_path, ["your-server", "discord.com", "maker.ifttt.com"]) as box:
        box.popen(sys.executable, "-m", "tests.netns", "target", "8081", str(status_file))
        box.popen(sys.executable, "-m", "tests.netns", "receiver", "443", str(cert), str(key),
                  str(hooks))
        box.popen(sys.executable, "-m", "pingr", "run", "--config", str(config),
                  log=tmp_path / "pingr.log")
        status_url = "http://your-server:8000/api/v1/alert-status"
        headers = {"x-api-key": "your-api-key-here"}

        def alert_is(value: bool) -> bool:
            r = box.request("GET", status_url, headers)
            return r["status"] == 200 and json.loads(r["body"])["alert"] is value

        box.wait_http("http://your-server:8000/api/v1/health")
        netns.wait_until(lambda: alert_is(False), 30, "the target up")
        env = box.env(REQUESTS_CA_BUNDLE=str(ca), PYTHONUNBUFFERED="1",
                      FAKE_GPIO_LOG=str(gpio),
                      PYTHONPATH=f"{ROOT}:{ROOT / 'tests' / 'fixtures' / 'gpio'}")

        # The curl lines of the document: theirs with the real key, and the placeholder key.
        for key_text, url, expect in (("your-api-key-here", "http://localhost:8000", 200),
                                      ("YOUR_API_KEY_HERE", "http://your-server:8000", 401)):
            curl = box.run("curl", "-s", "-i", "-H", f"x-api-key: {key_text}",
                           f"{url}/api/v1/alert-status")
            head, _, text = curl.stdout.partition("\n\n")  # (text mode: \r\n read as \n)
            assert head.startswith(f"HTTP/1.1 {expect}"), curl.stdout
            if expect == 401:
                assert json.loads(text)["detail"] == "Invalid or disabled API key"
            else:
                assert json.loads(text)["alert"] is False

        ok = box.run("bash", str(scripts["bash"]), env=env)
        assert (ok.returncode, ok.stdout) == (0, "OK: All systems operational\n"), ok.stderr
        quiet = box.run(sys.executable, str(scripts["ifttt"]), env=env)
        assert quiet.returncode == 0, quiet.stderr
        assert netns.received(hooks) == []  # no alert: IFTTT is not triggered

        status_file.write_text("500")
        netns.wait_until(lambda: alert_is(True), 30, "the alert")
        relay = box.popen(sys.executable, str(scripts["relay"]), env=env,
                          log=tmp_path / "relay.out")
        discord = box.popen(sys.executable, str(scripts["discord"]), env=env,
                            log=tmp_path / "discord.out")

        alert = box.run("bash", str(scripts["bash"]), env=env)
        lines = alert.stdout.splitlines()
        assert alert.returncode == 1 and lines[0] == "ALERT: 1 targets are down", alert.stdout
        assert re.fullmatch(r"- Production Server: \d+/3 failures", lines[1]), lines
        assert int(lines[1].split(": ")[1].split("/")[0]) >= 3 and len(lines) == 2

        fired = box.run(sys.executable, str(scripts["ifttt"]), env=env)
        assert fired.returncode == 0, fired.stderr
        ifttt = [h for h in netns.received(hooks) if h["host"] == "maker.ifttt.com"]
        assert len(ifttt) == 1 and ifttt[0]["method"] == "POST"
        assert ifttt[0]["path"] == "/trigger/%7Bevent%7D/with/key/%7Bkey%7D"
        sent = ifttt[0]["body"]
        assert sent["value1"] == 1 and sent["value2"] == "Production Server"
        assert STAMP.match(sent["value3"])
        age = time.time() - datetime.fromisoformat(sent["value3"]).timestamp()
        assert 0 <= age < 10  # when the status was generated: just now

        def discord_posts() -> list[dict[str, Any]]:
            return [h for h in netns.received(hooks) if h["host"] == "discord.com"]

        first = netns.wait_until(discord_posts, 30, "Discord's alert message")[0]
        assert first["path"] == "/api/webhooks/..."
        content = first["body"]["content"]
        assert content.startswith("🚨 **Alert!** 1 targets are down:\n- Production Server (")
        assert re.fullmatch(r"🚨 \*\*Alert!\*\* 1 targets are down:\n"
                            r"- Production Server \(\d+/3 failures\)", content)
        netns.wait_until(lambda: _lines(gpio) == ["17 1"], 20, "the relay on")
        netns.wait_until(lambda: "ALERT: 1 targets down" in _lines(tmp_path / "relay.out"), 10,
                         "the relay's ALERT line")

        # Recovery: both loops poll every 30 s and see it at their next poll.
        status_file.write_text("200")
        netns.wait_until(lambda: alert_is(False), 30, "the recovery")
        recovered = netns.wait_until(lambda: len(discord_posts()) == 2, 45,
                                     "Discord's recovery message")
        assert discord_posts()[1]["body"] == {"content": "✅ All systems recovered!"}
        assert recovered
        netns.wait_until(lambda: _lines(gpio) == ["17 1", "17 0"], 45, "the relay off")
        assert "All systems operational" in _lines(tmp_path / "relay.out")
        assert relay.poll() is None and discord.poll() is None  # still looping, no errors
        for out in ("relay.out", "discord.out"):
            assert "Error" not in (tmp_path / out).read_text(), out
