"""Notifications through apprise to real json:// and form:// receivers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from typing import Any
from urllib.parse import parse_qs

import pytest

from pingr.config import ConfigError
from tests.conftest import SLOW, make_config, running_app


class Sink:
    """A real HTTP receiver on 127.0.0.1 that records every POST (and can refuse them)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.requests.append({"path": self.path, "headers": dict(self.headers),
                                      "raw": raw, "at": time.time()})
                self.send_response(sink.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def json(self, path: str | None = None) -> list[dict[str, Any]]:
        return [json.loads(r["raw"]) for r in self.requests if path is None or r["path"] == path]

    def forms(self, path: str) -> list[dict[str, str]]:
        return [{k: v[0] for k, v in parse_qs(r["raw"].decode()).items()}
                for r in self.requests if r["path"] == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.close()


def web_target(url: str, **extra: Any) -> dict[str, Any]:
    return {"name": "web", "type": "http", "url": url, "interval": "1s",
            "failure_threshold": 1, "tags": ["prod"], **extra}


def notify_cfg(tmp_path, target_server, sink, **settings: Any):
    return make_config(
        tmp_path,
        targets=[web_target(target_server.url)],
        notify=[
            {"name": "json-hook", "url": f"json://user:s3cret@127.0.0.1:{sink.port}/json"},
            {"name": "form-hook", "url": f"form://127.0.0.1:{sink.port}/form",
             "on": ["alert", "recovery"], "tags": ["prod"]},
        ],
        notify_settings={"cooldown": "0s", "reminder_interval": "0s", **settings},
    )


async def test_alert_recovery_and_reminder_reach_json_and_form_channels(tmp_path, target_server,
                                                                        sink):
    cfg = notify_cfg(tmp_path, target_server, sink, reminder_interval="2s")
    async with running_app(cfg) as run:
        await run.wait_for(lambda: run.app.monitor.snapshot().statuses.get("web") == "up")
        target_server.behaviour.status = 500
        await run.wait_for(lambda: sink.json("/json") and sink.forms("/form"))
        alert = sink.json("/json")[0]
        assert alert["title"] == "pingr: web is DOWN"
        assert alert["type"] == "failure"
        assert ("web is down since" in alert["message"]
                and "unexpected status 500" in alert["message"])
        # apprise sent the URL's credentials as HTTP basic auth: the secret reached the sink only
        auth = next(r for r in sink.requests if r["path"] == "/json")["headers"]["Authorization"]
        assert auth.startswith("Basic ")
        form = sink.forms("/form")[0]
        assert form["title"] == "pingr: web is DOWN" and form["type"] == "failure"
        # The reminder goes to the json channel only (the form channel does not want reminders).
        await run.wait_for(lambda: len(sink.json("/json")) >= 2, timeout=10)
        reminder = sink.json("/json")[1]
        assert reminder["title"] == "pingr: web is still DOWN"
        assert "nobody has acknowledged it" in reminder["message"]
        assert reminder["type"] == "warning"
        # Acknowledged: no more reminders.
        r = await run.client.post("/api/v1/alerts/ack")
        assert r.status_code == 200
        count = len(sink.json("/json"))
        target_server.behaviour.status = 200
        await run.wait_for(lambda: any(m["title"] == "pingr: web is UP"
                                       for m in sink.json("/json")))
        await run.wait_for(lambda: any(m["title"] == "pingr: web is UP"
                                       for m in sink.forms("/form")))
        up = [m for m in sink.json("/json") if m["title"] == "pingr: web is UP"]
        assert len(up) == 1 and up[0]["type"] == "success"
        assert "up again after" in up[0]["message"]
        assert len(sink.json("/json")) == count + 1  # only the recovery came after the ack
        assert len(sink.forms("/form")) == 2
        # The delivery log shows every message as sent (recorded just after the receiver
        # answered, so it may lag the receiver by a moment).
        for _ in range(100):
            log = (await run.client.get("/api/v1/notifications")).json()
            kinds = sorted((d["channel"], d["kind"]) for d in log if d["state"] == "sent")
            if ("form-hook", "recovery") in kinds and ("json-hook", "recovery") in kinds:
                break
            await asyncio.sleep(0.1)
        assert ("form-hook", "alert") in kinds and ("form-hook", "recovery") in kinds
        assert ("json-hook", "reminder") in kinds and ("json-hook", "recovery") in kinds
        assert all(d["state"] == "sent" for d in log)


async def test_failing_receiver_is_retried_then_marked_failed(tmp_path, target_server, sink):
    sink.status = 503
    cfg = make_config(tmp_path, targets=[web_target(target_server.url)],
                      notify=[{"name": "down-hook", "url": f"json://127.0.0.1:{sink.port}/x"}],
                      notify_settings={"cooldown": "0s", "reminder_interval": "0s",
                                       # Long against a send's own time (~0.3 s under
                                       # qemu-user), so the gaps show the doubling.
                                       "retry_base": f"{200 * SLOW:g}ms", "max_attempts": 3})
    async with running_app(cfg) as run:
        target_server.behaviour.status = 500

        async def final():
            rows = (await run.client.get("/api/v1/notifications")).json()
            return [d for d in rows if d["state"] == "failed"]

        failed = (await run.wait_for(final, timeout=15))[0]
        assert failed["attempts"] == 3 and failed["kind"] == "alert"
        assert "503" in failed["last_error"] or "HTTP" in failed["last_error"]
        assert len(sink.requests) == 3
        gaps = [b["at"] - a["at"] for a, b in zip(sink.requests, sink.requests[1:], strict=False)]
        assert gaps[1] > gaps[0] * 1.5  # back-off doubles
        assert run.app.monitor.snapshot().alert  # the local alert is unaffected


async def test_queue_survives_a_restart_and_delivers_when_the_receiver_returns(tmp_path,
                                                                               target_server, sink):
    sink.status = 500
    cfg = make_config(tmp_path, targets=[web_target(target_server.url)],
                      notify=[{"name": "hook", "url": f"json://127.0.0.1:{sink.port}/q"}],
                      notify_settings={"cooldown": "0s", "reminder_interval": "0s",
                                       "retry_base": "1s", "max_attempts": 20})
    target_server.behaviour.status = 500
    async with running_app(cfg) as run:
        async def retrying():
            rows = (await run.client.get("/api/v1/notifications?state=retrying")).json()
            return rows
        await run.wait_for(retrying)
    sink.status = 200
    before = len(sink.requests)
    async with running_app(cfg) as run:
        async def sent():
            return (await run.client.get("/api/v1/notifications?state=sent")).json()
        rows = await run.wait_for(sent)
        assert rows[0]["kind"] == "alert" and rows[0]["attempts"] >= 2
        assert len(sink.requests) > before
        # The queued message went out once; the restored alert was not told a second time.
        await asyncio.sleep(1.5)
        after = [json.loads(r["raw"])["title"] for r in sink.requests[before:]]
        assert after == ["pingr: web is DOWN"]


async def test_cooldown_coalesces_a_flapping_target(tmp_path, target_server, sink):
    cfg = make_config(tmp_path, targets=[web_target(target_server.url)],
                      notify=[{"name": "hook", "url": f"json://127.0.0.1:{sink.port}/c"}],
                      notify_settings={"cooldown": "8s", "reminder_interval": "0s"})
    # The cooldown is long enough that the three flips below (at least a probe each, 1 s apart)
    # fall inside it even on a loaded machine.
    async with running_app(cfg) as run:
        await run.wait_for(lambda: run.app.monitor.snapshot().statuses.get("web") == "up")
        target_server.behaviour.status = 500
        await run.wait_for(lambda: sink.json("/c"))
        sent_at = sink.requests[0]["at"]
        # Flap: up, down, up within the cooldown.
        for status in (200, 500, 200):
            target_server.behaviour.status = status
            want = "up" if status == 200 else "down"
            await run.wait_for(lambda w=want: run.app.monitor.snapshot().statuses["web"] == w)
        assert len(sink.json("/c")) == 1
        # After the cooldown, one recovery says how things stand now.
        await run.wait_for(lambda: len(sink.json("/c")) == 2, timeout=15)
        assert sink.json("/c")[1]["title"] == "pingr: web is UP"
        assert sink.requests[1]["at"] - sent_at >= 7.9


async def test_channels_api_masks_secrets_and_validates(tmp_path, target_server, sink, caplog):
    cfg = make_config(tmp_path, targets=[web_target(target_server.url)],
                      notify=[{"name": "from-yaml", "url": f"json://u:yamlsecret@127.0.0.1:{sink.port}/y"}])
    async with running_app(cfg) as run:
        c = run.client
        chans = (await c.get("/api/v1/channels")).json()
        assert chans[0]["name"] == "from-yaml" and chans[0]["source"] == "config"
        assert "yamlsecret" not in json.dumps(chans)
        r = await c.post("/api/v1/channels", json={"name": "api", "url": f"json://bob:topsecret@127.0.0.1:{sink.port}/a",
                                                  "on": ["alert"]})
        assert r.status_code == 201, r.text
        made = r.json()
        assert "topsecret" not in made["url"] and made["url"].startswith("json://bob:")
        cid = made["id"]
        # Bad input: clear 400s, nothing changed.
        for body, msg in [({"name": "x", "url": "nonsense"}, "url"),
                          ({"name": "x", "url": "nosuch://abc"}, "nosuch"),
                          ({"name": "x", "url": "json://127.0.0.1/", "on": ["sometimes"]}, "on"),
                          ({"name": "x", "url": "json://127.0.0.1/", "targets": ["ghost"]},
                           "ghost")]:
            r = await c.post("/api/v1/channels", json=body)
            assert r.status_code == 400 and msg in r.json()["detail"], r.text
        r = await c.post("/api/v1/channels", json={"name": "api", "url": "json://127.0.0.1/"})
        assert r.status_code == 409
        assert len((await c.get("/api/v1/channels")).json()) == 2
        r = await c.put(f"/api/v1/channels/{cid}", json={"on": ["alert", "recovery"]})
        assert r.status_code == 200 and r.json()["on"] == ["alert", "recovery"]
        yaml_id = chans[0]["id"]
        assert (await c.put(f"/api/v1/channels/{yaml_id}",
                            json={"on": ["alert"]})).status_code == 409
        assert (await c.delete(f"/api/v1/channels/{yaml_id}")).status_code == 409
        # Test one channel, then all.
        r = await c.post(f"/api/v1/channels/{cid}/test")
        assert r.status_code == 200 and r.json()["state"] == "sent"
        assert sink.json("/a")[0]["title"] == "pingr: test notification"
        r = await c.post("/api/v1/alerts/test")
        assert (r.status_code == 200
                and sorted(d["channel"] for d in r.json()) == ["api", "from-yaml"])
        assert all(d["state"] == "sent" for d in r.json())
        assert len(sink.json("/y")) == 1 and len(sink.json("/a")) == 2
        assert (await c.delete(f"/api/v1/channels/{cid}")).status_code == 204
        assert (await c.delete(f"/api/v1/channels/{cid}")).status_code == 404
        assert (await c.post("/api/v1/channels/999/test")).status_code == 404
        # A read key can see the log but not the channels.
        r = await c.post("/api/v1/keys", json={"name": "reader", "scope": "read"})
        key = r.json()["key"]
        assert (await c.get("/api/v1/channels", headers={"x-api-key": key})).status_code == 403
        assert (await c.get("/api/v1/notifications", headers={"x-api-key": key})).status_code == 200
    assert "topsecret" not in caplog.text and "yamlsecret" not in caplog.text


def test_config_rejects_bad_channels(tmp_path):
    with pytest.raises(ConfigError) as err:
        make_config(tmp_path, notify=[{"name": "a", "url": "nosuch://secretvalue"}])
    assert "nosuch" in str(err.value) and "secretvalue" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        make_config(tmp_path, notify=[{"name": "a", "url": "json://127.0.0.1/"},
                                      {"name": "a", "url": "json://127.0.0.1/"}])
    assert "duplicate channel" in str(err.value)
    with pytest.raises(ConfigError) as err:
        make_config(tmp_path, notify_settings={"cooldown": "soon"})
    assert "cooldown" in str(err.value)
