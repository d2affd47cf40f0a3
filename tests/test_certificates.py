"""Certificate checks end to end: automatic checks of HTTPS targets (one per host:port), the
expiry warning through the normal flip path (SSE, alert-status, notifications, webhooks'
event list), against real HTTPS servers on 127.0.0.1 serving certificates made at test time."""

from __future__ import annotations

import asyncio
import http.server
import ssl
import threading
from typing import Any

import pytest

from pingr import autocerts
from pingr.models import Target
from pingr.probes.registry import parse_spec
from pingr.webhooks import WEBHOOK_EVENTS
from tests.conftest import make_config, running_app
from tests.test_notify import Sink
from tests.test_probes_dns_tls import Certs


class HttpsServer:
    """A real HTTPS server (thread) on 127.0.0.1 serving one of Certs' leaf certificates."""

    def __init__(self, certs: Certs, leaf: str) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, *args: Any) -> None:
                pass

        cert_file, key_file, _ = certs.leaves[leaf]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_file, key_file)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def servers(certs):
    made: list[HttpsServer] = []

    def serve(leaf: str) -> HttpsServer:
        made.append(HttpsServer(certs, leaf))
        return made[-1]

    yield serve
    for server in made:
        server.close()


def t(pk: int, source: str = "config", **spec: Any) -> Target:
    return Target(pk, f"id-{pk}", parse_spec(spec), source=source)


def test_one_check_per_host_and_port_and_the_users_own_wins():
    targets = [
        t(1, name="shop", type="http", url="https://Shop.example:8443/a", tags=["web"],
          verify_tls=False, interval="30s"),
        t(2, name="shop api", type="http", url="https://shop.example:8443/api", tags=["api"],
          enabled=False),
        t(3, name="plain", type="http", url="http://shop.example/"),
        t(4, name="nas", type="http", url="https://nas.lan/", depends_on="gw", interval="2h"),
        t(5, name="gw", type="icmp", host="10.0.0.1"),
        t(6, name="mine", type="tls", host="router.lan", port=443),
        t(7, name="router", type="http", url="https://router.lan/"),
        t(8, name="v6", type="http", url="https://[fd00::5]:8443/"),
    ]
    want = autocerts.wanted(targets)
    assert sorted(want) == [("fd00::5", 8443), ("nas.lan", 443), ("shop.example", 8443)]
    shop = want[("shop.example", 8443)]
    assert shop.name == "shop.example:8443 certificate" and shop.host == "shop.example"
    # Verified when any of its HTTPS targets verifies, enabled when any is, every tag.
    assert (shop.verify, shop.enabled, shop.tags) == (True, True, ["api", "web"])
    assert shop.interval_seconds == 3600  # certificates change slowly: hourly at the most
    nas = want[("nas.lan", 443)]
    assert (nas.name, nas.depends_on, nas.interval_seconds) == ("nas.lan certificate", "gw",
                                                                 7200)
    assert want[("fd00::5", 8443)].name == "[fd00::5]:8443 certificate"

    # Stored checks follow: unchanged ones stay, changed ones change, orphans go.
    stored = [t(20, autocerts.AUTO, **want[("nas.lan", 443)].model_dump()),
              t(21, autocerts.AUTO, **{**shop.model_dump(), "tags": ["old"]}),
              t(22, autocerts.AUTO, name="gone.lan certificate", type="tls", host="gone.lan")]
    todo = autocerts.plan(targets + stored)
    assert [s.name for s in todo.add] == ["[fd00::5]:8443 certificate"]
    assert [(old.pk, new.tags) for old, new in todo.change] == [(21, ["api", "web"])]
    assert [r.pk for r in todo.remove] == [22]
    assert not autocerts.plan(targets[:4] + [t(30, autocerts.AUTO, **shop.model_dump()),
                                             t(31, autocerts.AUTO, **nas.model_dump())])
    # A name the user already gave one of theirs is not taken over.
    clash = autocerts.wanted([targets[3], t(9, name="nas.lan certificate", type="icmp",
                                            host="10.0.0.2")])
    assert clash == {}


async def test_expiring_certificate_warns_without_an_alarm(tmp_path, servers):
    soon, valid = servers("soon"), servers("valid")
    sink = Sink()
    https = {"type": "http", "verify_tls": False, "interval": "2s"}
    cfg = make_config(
        tmp_path,
        targets=[{"name": "shop", "url": f"https://127.0.0.1:{soon.port}/", **https},
                 {"name": "shop api", "url": f"https://127.0.0.1:{soon.port}/api", **https},
                 {"name": "blog", "url": f"https://127.0.0.1:{valid.port}/", **https}],
        notify=[{"name": "hook", "url": f"json://127.0.0.1:{sink.port}/n"}],
        notify_settings={"cooldown": "0s", "reminder_interval": "0s"})
    soon_name = f"127.0.0.1:{soon.port} certificate"
    try:
        async with running_app(cfg, tap=True) as r:
            tap = r.tap
            assert tap is not None
            c = r.client
            listing = (await c.get("/api/v1/targets")).json()["items"]
            auto = {x["name"]: x for x in listing if x["source"] == "auto"}
            # Two HTTPS targets on one host:port share one check.
            assert sorted(auto) == sorted([soon_name, f"127.0.0.1:{valid.port} certificate"])
            assert auto[soon_name]["type"] == "tls"
            # The checks were added at this first start, and the targets read back: each config
            # target still holds the config's spec, not a second copy.
            by_name = {t.name: t for t in r.app.targets.values()}
            assert all(by_name[spec.name].spec is spec for spec in r.app.config.targets)
            await r.wait_for(lambda: r.app.monitor.snapshot().warnings == (soon_name,))
            event = tap.first("certificate.alert", name=soon_name)
            assert event["data"]["message"].startswith("certificate expires in 2.9") or \
                event["data"]["message"].startswith("certificate expires in 3.0")
            status = (await c.get("/api/v1/alert-status")).json()
            assert status["alert"] is False and status["failing_targets"] == []
            assert status["warnings"] == [soon_name]
            await r.wait_for(lambda: sink.json("/n"), timeout=15)
            [note] = sink.json("/n")
            assert note["title"] == f"pingr: {soon_name} expires soon"
            assert note["type"] == "warning" and "expires in" in note["message"]
            assert "certificate.alert" in WEBHOOK_EVENTS
            assert [t for t in tap.types if t.startswith("certificate")] == ["certificate.alert"]

            # The automatic check is not the API's to change; the HTTPS targets are.
            soon_id = auto[soon_name]["id"]
            for call in (c.put(f"/api/v1/targets/{soon_id}", json={"warn_days": 1}),
                         c.delete(f"/api/v1/targets/{soon_id}"),
                         c.post(f"/api/v1/targets/{soon_id}/pause")):
                resp = await call
                assert resp.status_code == 409 and "automatically" in resp.json()["detail"]
            by_name = {x["name"]: x["id"] for x in listing}
            assert (await c.delete(f"/api/v1/targets/{by_name['shop']}")).status_code == 204
            assert soon_id in r.app.targets  # "shop api" still uses that host:port
            assert (await c.post(f"/api/v1/targets/{by_name['shop api']}/pause")).status_code \
                == 200
            assert not r.app.targets[soon_id].enabled  # follows its HTTPS target
            assert (await c.post(f"/api/v1/targets/{by_name['shop api']}/resume")).status_code \
                == 200
            assert r.app.targets[soon_id].enabled
            # A tls target of the user's own for that host:port replaces the automatic one.
            mine = await c.post("/api/v1/targets", json={
                "name": "my shop cert", "type": "tls", "host": "127.0.0.1", "port": soon.port,
                "verify": False, "warn_days": 30})
            assert mine.status_code == 201
            assert soon_id not in r.app.targets
            # Told about the user's check before it goes: the policy is level-driven, and a
            # target deleted before its warning was evaluated is nobody's news (CI met that).
            await r.wait_for(lambda: len(sink.json("/n")) == 2, timeout=15)
            assert (await c.delete(f"/api/v1/targets/{mine.json()['id']}")).status_code == 204
            back = [t for t in r.app.targets.values() if t.name == soon_name]
            assert len(back) == 1 and back[0].source == "auto"
            await r.wait_for(lambda: r.app.monitor.snapshot().warnings == (soon_name,))
            # The user's check warned too, and the new automatic one (a new target) again.
            await r.wait_for(lambda: len(sink.json("/n")) == 3, timeout=15)
            assert sorted(n["title"] for n in sink.json("/n")) == sorted(
                [f"pingr: {soon_name} expires soon"] * 2
                + ["pingr: my shop cert certificate expires soon"])
        # After a restart the warning comes back with the first probe, but the channel that
        # was told is not told again.
        async with running_app(cfg) as r:
            await r.wait_for(lambda: r.app.monitor.snapshot().warnings == (soon_name,))
            await asyncio.sleep(2)
            assert len(sink.json("/n")) == 3
    finally:
        sink.close()


def test_policy_tells_a_warning_once_and_its_end_only_on_a_certificate_read():
    from pingr.models import Result
    from pingr.monitor import UP, TargetState
    from pingr.notify.policy import Channel, Policy
    from pingr.settings import NotifySettings

    cert = t(1, name="nas certificate", type="tls", host="nas.lan")
    both = Channel(1, "all", "json://x", ["alert", "recovery"], [], [])
    alerts_only = Channel(2, "alerts", "json://y", ["alert"], [], [])
    channels = {1: both, 2: alerts_only}
    policy = Policy(NotifySettings())
    state = TargetState(cert, status=UP, warning="certificate expires in 3.0 days (on x)")
    state.last = Result(cert.id, 1, True, metrics={"warning": True})
    muted = [True]
    assert policy.evaluate([state], channels, lambda target: muted[0], 1) == []  # silenced
    muted[0] = False
    told = policy.evaluate([state], channels, lambda target: False, 2)
    assert [(i.channel.name, i.kind, i.alert.last_error) for i in told] == [
        ("all", "certificate.alert", state.warning),
        ("alerts", "certificate.alert", state.warning)]
    assert policy.evaluate([state], channels, lambda target: False, 3) == []  # once
    # A restart: nothing known until the first probe; that is not a renewal.
    after = Policy(NotifySettings())
    after.warned = set(policy.warned)
    unknown = TargetState(cert, status=UP)
    unknown.last = Result(cert.id, 4, True)  # restored from the raw row: no metrics
    assert after.evaluate([unknown], channels, lambda target: False, 4) == []
    renewed = TargetState(cert, status=UP)
    renewed.last = Result(cert.id, 5, True, metrics={"warning": False, "days_left": 89.0})
    told = after.evaluate([renewed], channels, lambda target: False, 5)
    assert [(i.channel.name, i.kind) for i in told] == [("all", "certificate.recovery")]
    assert after.warned == set()


async def test_mqtt_carries_days_left_and_the_warning(tmp_path, servers):
    import json

    from tests.mqttbroker import Broker, Recorder
    from tests.test_mqtt import mqtt_config

    soon = servers("soon")
    broker = Broker(tmp_path).start()
    recorder = Recorder(broker.port)
    try:
        cfg = make_config(tmp_path, mqtt=mqtt_config(broker), targets=[
            {"name": "shop", "type": "http", "url": f"https://127.0.0.1:{soon.port}/",
             "verify_tls": False, "interval": "2s"}])
        async with running_app(cfg) as r:
            cert = r.app.monitor.target_named(f"127.0.0.1:{soon.port} certificate")
            payload = json.loads(await recorder.wait(
                f"pingr/testpi/target/{cert.id}", lambda p: json.loads(p).get("warning")))
            assert payload["state"] == "up" and payload["days_left"] in (2, 3)
            assert payload["warning"].startswith("certificate expires in")
            status = json.loads(await recorder.wait(
                "pingr/testpi/alert_status", lambda p: "warnings" in json.loads(p)))
            assert status["alert"] is False and status["warnings"] == [cert.name]
            shop = r.app.monitor.target_named("shop")
            assert "days_left" not in json.loads(recorder.last(f"pingr/testpi/target/{shop.id}"))
    finally:
        recorder.close()
        broker.stop()


async def test_a_config_reload_brings_and_takes_the_automatic_certificate_checks(tmp_path):
    """An HTTPS target added by a reload gets its certificate check at once; one removed by a
    reload takes its check with it (it used to run on, warning about a host no longer watched,
    until the next start)."""
    port = 8443  # nothing needs to answer: the check exists whether or not it succeeds
    https = {"name": "shop", "type": "http",
             "url": f"https://127.0.0.1:{port}/", "interval": "1m"}
    async with running_app(make_config(tmp_path)) as run:
        def automatic() -> list[str]:
            return sorted(t.name for t in run.app.targets.values()
                          if t.source == autocerts.AUTO and t.enabled)

        assert automatic() == []
        await run.app.reload(make_config(tmp_path, targets=[https]))
        assert automatic() == [f"127.0.0.1:{port} certificate"]
        assert f"127.0.0.1:{port} certificate" in {
            t.name for t in run.app.targets.values() if t.id in run.app.scheduler.targets}
        await run.app.reload(make_config(tmp_path, targets=[]))
        assert automatic() == []
        assert not [t for t in run.app.scheduler.targets.values()
                    if t.source == autocerts.AUTO and t.enabled]
