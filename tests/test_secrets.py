"""Credentials are masked for every scope but admin, and in logs, events and webhooks for all."""

from __future__ import annotations

import httpx

from pingr.secrets import mask_headers, mask_text, mask_topics, mask_url
from tests.conftest import ADMIN_KEY, EventTap, make_config, running_app

SECRETS = ("s3cr3tpw", "tok3nvalue", "b3arervalue", ADMIN_KEY, "ntfytopic9")


def test_masking_functions():
    assert mask_url("http://user:s3cr3tpw@nas:5000/x?token=tok3nvalue&page=2") == \
        "http://user:****@nas:5000/x?token=****&page=2"
    assert mask_url("https://tok3nvalue@hooks.example/x") == "https://****@hooks.example/x"
    assert mask_url("http://nas/") == "http://nas/"
    assert mask_headers({"Authorization": "Bearer b3arervalue", "x-api-key": ADMIN_KEY,
                         "X-Custom": "pingr_abcdef", "Accept": "text/html"}) == {
        "Authorization": "****", "x-api-key": "****", "X-Custom": "****", "Accept": "text/html"}
    assert mask_text("ConnectError for url 'http://u:s3cr3tpw@nas/?api_key=tok3nvalue' failed") \
        == "ConnectError for url 'http://****@nas/?api_key=****' failed"
    assert mask_topics("ntfys://ntfytopic9?priority=default") == "ntfys://n...9?priority=default"
    assert mask_topics("ntfy://ntfy.example.com/ntfytopic9") == "ntfy://ntfy.example.com/n...9"


async def test_read_keys_see_no_credentials(tmp_path, target_server, caplog):
    url = target_server.url.replace("http://", "http://user:s3cr3tpw@") + "?token=tok3nvalue"
    target = {"name": "nas", "type": "http", "url": url, "interval": "1s",
              "headers": {"Authorization": "Bearer b3arervalue", "x-api-key": ADMIN_KEY,
                          "X-Plain": "hello"}}
    cfg = make_config(tmp_path, targets=[target],
                      notify=[{"name": "phone", "url": "ntfy://ntfytopic9"}])
    async with running_app(cfg) as run:
        tap = EventTap(run.app)
        r = await run.client.post("/api/v1/keys", json={"name": "ro", "scope": "read"})
        read = r.json()["key"]
        r = await run.client.post("/api/v1/keys", json={"name": "op", "scope": "operate"})
        operate = r.json()["key"]
        for key in (read, operate):
            async with httpx.AsyncClient(base_url=run.base, headers={"x-api-key": key}) as c:
                listed = (await c.get("/api/v1/targets")).text
                [one] = (await c.get("/api/v1/targets")).json()["items"]
                single = (await c.get(f"/api/v1/targets/{one['id']}")).text
                for secret in SECRETS:
                    assert secret not in listed and secret not in single, secret
                assert one["url"].startswith("http://user:****@127.0.0.1")
                assert one["headers"] == {"Authorization": "****", "x-api-key": "****",
                                          "X-Plain": "hello"}
        # The admin sees what it configured, to edit it.
        [full] = (await run.client.get("/api/v1/targets")).json()["items"]
        assert full["url"] == url and full["headers"]["x-api-key"] == ADMIN_KEY
        channels = (await run.client.get("/api/v1/channels")).text
        assert "ntfytopic9" not in channels
        # The target goes down (nothing there any more): logs and events carry no secret.
        target_server.close()
        await run.wait_for(lambda: "target.down" in tap.types, timeout=20)
        events = repr(tap.drain())
        for secret in SECRETS:
            assert secret not in events
    for secret in SECRETS:
        assert secret not in caplog.text, secret
