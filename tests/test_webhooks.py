"""Signed outgoing webhooks, verified by the tested example receiver."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import make_config, running_app
from tests.test_notify import Sink, web_target

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("webhook_verify",
                                              ROOT / "examples" / "webhook_verify.py")
webhook_verify = importlib.util.module_from_spec(spec)
spec.loader.exec_module(webhook_verify)


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.close()


async def test_events_are_posted_signed_and_verify(tmp_path, target_server, sink):
    cfg = make_config(tmp_path, targets=[web_target(target_server.url)],
                      notify_settings={"retry_base": "100ms"})
    async with running_app(cfg) as run:
        c = run.client
        r = await c.post("/api/v1/webhooks", json={"name": "ops", "url": f"http://127.0.0.1:{sink.port}/hook",
                                                  "events": ["target.down", "target.up"]})
        assert r.status_code == 201, r.text
        hook = r.json()
        secret = hook["secret"]
        assert secret.startswith("whsec_")
        listed = (await c.get("/api/v1/webhooks")).json()
        assert secret not in json.dumps(listed) and listed[0]["secret_hint"] == secret[:10] + "…"
        await run.wait_for(lambda: run.app.monitor.snapshot().statuses.get("web") == "up")
        target_server.behaviour.status = 500
        await run.wait_for(lambda: sink.requests)
        target_server.behaviour.status = 200
        await run.wait_for(lambda: len(sink.requests) >= 2)
        events = []
        for req in sink.requests:
            h = req["headers"]
            payload = webhook_verify.verify(secret, req["raw"], h["X-Pingr-Signature"],
                                            h["X-Pingr-Timestamp"])
            assert h["X-Pingr-Event"] == payload["event"]
            events.append((payload["event"], payload["payload"]["target"]["name"]))
        assert events == [("target.down", "web"), ("target.up", "web")]
        down = json.loads(sink.requests[0]["raw"])
        assert down["payload"]["alert"]["target_name"] == "web"
        # A tampered body, a wrong secret and an old timestamp are refused.
        req = sink.requests[0]
        h = req["headers"]
        with pytest.raises(webhook_verify.BadSignature):
            webhook_verify.verify(secret, req["raw"].replace(b"web", b"wex"),
                                  h["X-Pingr-Signature"], h["X-Pingr-Timestamp"])
        with pytest.raises(webhook_verify.BadSignature):
            webhook_verify.verify("whsec_wrong", req["raw"], h["X-Pingr-Signature"],
                                  h["X-Pingr-Timestamp"])
        with pytest.raises(webhook_verify.BadSignature):
            webhook_verify.verify(secret, req["raw"], h["X-Pingr-Signature"],
                                  h["X-Pingr-Timestamp"], now=int(h["X-Pingr-Timestamp"]) + 3600)
        # Test delivery, a failing receiver, validation, delete.
        r = await c.post(f"/api/v1/webhooks/{hook['id']}/test")
        assert r.json() == {"ok": True, "status": 200, "error": None}
        assert json.loads(sink.requests[-1]["raw"])["event"] == "webhook.test"
        sink.status = 500
        r = await c.post(f"/api/v1/webhooks/{hook['id']}/test")
        assert r.json()["ok"] is False and r.json()["status"] == 500
        assert (await c.get("/api/v1/webhooks")).json()[0]["last_status"] == 500
        for body in ({"name": "x", "url": "ftp://127.0.0.1/"},
                     {"name": "x", "url": "http://127.0.0.1/", "events": ["nope"]},
                     {"name": "x", "url": "http://127.0.0.1/", "secret": "short"}):
            assert (await c.post("/api/v1/webhooks", json=body)).status_code == 400
        assert (await c.post("/api/v1/webhooks",
                             json={"name": "ops", "url": "http://127.0.0.1/"})).status_code == 409
        assert (await c.delete(f"/api/v1/webhooks/{hook['id']}")).status_code == 204
        assert (await c.delete(f"/api/v1/webhooks/{hook['id']}")).status_code == 404
