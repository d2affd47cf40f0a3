"""Fleet mode against a real Mosquitto on loopback: node state, sites offline, mirrored alerts,
bounded parsing, the API and outputs; and the pure verdicts (quorum, "is it me?") step by step.

The three-process test in network namespaces is tests/test_fleet_netns.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pingr.config import parse_config
from pingr.fleet.config import FleetConfig
from pingr.fleet.view import FleetView, fleet_target
from pingr.fleet.wire import parse
from pingr.models import Result, Target
from pingr.monitor import DOWN, UNREACHABLE, UP, Monitor, TargetState
from pingr.probes.registry import parse_spec
from tests.conftest import TargetServer, make_config, running_app
from tests.mqttbroker import Broker, Recorder

PREFIX = "pingr-fleet"


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path).start()
    yield b
    b.stop()


@pytest.fixture
def recorder(broker):
    r = Recorder(broker.port, (f"{PREFIX}/#",))
    yield r
    r.close()


def fleet_config(mosquitto: Broker, node: str, **extra: Any) -> dict[str, Any]:
    return {"enabled": True, "node_id": node, "interval": "1s", "offline_after": "3s",
            "broker": {"host": "127.0.0.1", "port": mosquitto.port, "keepalive": "5s",
                       "reconnect_min": "200ms", "reconnect_max": "1s"}} | extra


def node_config(tmp_path: Path, broker: Broker, node: str, targets: list[dict[str, Any]],
                **extra: Any) -> Any:
    (tmp_path / node).mkdir(exist_ok=True)
    return make_config(tmp_path / node, {
        "fleet": fleet_config(broker, node, **extra.pop("fleet", {})),
        "targets": targets, "metrics": {"enabled": False}, **extra})


def http_target(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "http", "url": url, "interval": "1s", "timeout": "500ms",
            "failure_threshold": 2, **extra}


async def alert_status(running) -> dict[str, Any]:
    return (await running.client.get("/api/v1/alert-status")).json()


def failing_names(body: dict[str, Any]) -> set[str]:
    return {t["name"] for t in body["failing_targets"]}


# ---------------------------------------------------------------- real broker, real Apps


async def test_node_state_is_compact_retained_and_valid(tmp_path, broker, recorder):
    server = TargetServer()
    try:
        config = node_config(tmp_path, broker, "alpha",
                             [http_target("web", server.url, check="web")],
                             fleet={"name": "Alpha site"})
        async with running_app(config) as r:
            topic = f"{PREFIX}/alpha/state"
            payload = await recorder.wait(topic, lambda p: '"web":["u"' in p)
            state = parse(payload)
            assert (state.node, state.name, state.up, state.ok) == ("alpha", "Alpha site", "ok",
                                                                   True)
            assert state.t["web"] == ("u", 0) and state.c == {"web": 0}
            assert len(payload) < 300, payload  # compact: about 20 bytes per target
            assert await recorder.wait(f"{PREFIX}/alpha/status") == "online"
            # Republished every interval (the heartbeat others time out on), seq growing.
            first = state.seq
            later = parse(await recorder.wait(topic, lambda p: parse(p).seq >= first + 2,
                                              timeout=5))
            assert later.boot == state.boot
            # Our own state comes back: the link works end to end.
            body = (await r.client.get("/api/v1/fleet")).json()
            assert body["enabled"] and body["linked"] and body["node"] == "alpha"
            assert body["nodes"][0]["self"] is True
            assert body["checks"] == [{"check": "web", "target": "fleet:check:web",
                                       "down": False, "quorum": 2, "voters": ["alpha"],
                                       "down_from": []}]
        # A clean stop says offline itself.
        assert recorder.last(f"{PREFIX}/alpha/status") == "offline"
    finally:
        server.close()


async def test_site_offline_mirrored_alerts_and_recovery(tmp_path, broker, recorder):
    servers = [TargetServer() for _ in range(3)]
    a_web, b_web, b_ok = servers
    try:
        a_cfg = node_config(tmp_path, broker, "alpha", [http_target("a-web", a_web.url)])
        b_cfg = node_config(tmp_path, broker, "bravo",
                            [http_target("b-web", b_web.url), http_target("b-ok", b_ok.url)],
                            fleet={"name": "Branch B"})
        async with running_app(a_cfg) as a:
            async with running_app(b_cfg):
                await a.wait_for(lambda: status_of(a, "fleet:site:bravo") == UP)
                fleet = (await a.client.get("/api/v1/fleet")).json()
                bravo = next(n for n in fleet["nodes"] if n["node"] == "bravo")
                assert bravo["online"] and bravo["name"] == "Branch B"
                assert bravo["status"] == "online" and bravo["version"]
                # bravo's own target goes down there: its alert is mirrored here.
                b_web.behaviour.status = 500
                await a.wait_for(lambda: "fleet:alerts:bravo" in failing_names_sync(a))
                state = a.app.monitor.state_of("fleet:alerts:bravo")
                assert state.last.error == "Branch B: b-web down"
                fleet = (await a.client.get("/api/v1/fleet")).json()
                bravo = next(n for n in fleet["nodes"] if n["node"] == "bravo")
                assert bravo["failing"] == [{"name": "b-web", "status": "down", "failures": 2}]
                b_web.behaviour.status = 200
                await a.wait_for(lambda: "fleet:alerts:bravo" not in failing_names_sync(a))
                assert status_of(a, "a-web") == UP
            # bravo stopped (its clean stop says offline): a site-offline alert here, through
            # the same engine as any target: alert-status, an alert record, its error.
            await a.wait_for(lambda: "fleet:site:bravo" in failing_names_sync(a), timeout=5)
            body = await alert_status(a)
            assert body["alert"] is True and "fleet:site:bravo" in failing_names(body)
            alerts = (await a.client.get("/api/v1/alerts?state=open")).json()
            site = next(x for x in alerts if x["target_name"] == "fleet:site:bravo")
            assert "site Branch B offline" in site["last_error"]
            # bravo back: resolved, one alert only.
            async with running_app(b_cfg):
                await a.wait_for(lambda: "fleet:site:bravo" not in failing_names_sync(a))
                rows = (await a.client.get("/api/v1/alerts?state=all")).json()
                assert [x["resolved_at"] is not None for x in rows
                        if x["target_name"] == "fleet:site:bravo"] == [True]
    finally:
        for server in servers:
            server.close()


def status_of(running, name: str) -> str | None:
    return running.app.monitor.snapshot().statuses.get(name)


def failing_names_sync(running) -> set[str]:
    return {f.name for f in running.app.monitor.snapshot().failing}


async def test_malformed_and_oversized_messages_are_dropped_and_counted(tmp_path, broker,
                                                                         recorder):
    config = node_config(tmp_path, broker, "alpha", [],
                         fleet={"max_message": "2KB", "peers": ["bravo", "charlie"]})
    async with running_app(config) as r:
        await r.wait_for(lambda: r.app.fleet.view.link_ok)
        good = {"v": 1, "node": "bravo", "boot": "b1", "seq": 1, "ts": 1, "t": {"x": ["u", 0]}}
        bad = [
            (f"{PREFIX}/bravo/state", "not json at all"),
            (f"{PREFIX}/bravo/state", json.dumps({**good, "v": 2})),
            (f"{PREFIX}/bravo/state", json.dumps({**good, "t": {"x": ["?", 0]}})),
            (f"{PREFIX}/bravo/state", json.dumps({**good, "t": {"x": ["u", -1]}})),
            (f"{PREFIX}/bravo/state", json.dumps({**good, "ok": "yes"})),
            (f"{PREFIX}/bravo/state", json.dumps({**good, "node": "charlie"})),
            (f"{PREFIX}/bravo/state", "[" * 1500),  # nested past the parser's depth limit
            (f"{PREFIX}/bravo/state", json.dumps([good])),
            (f"{PREFIX}/bravo/status", "maybe"),
            (f"{PREFIX}/bravo/state", "\udcff".encode("utf-8", "surrogatepass").hex()),
        ]
        for topic, payload in bad:
            recorder.publish(topic, payload)
        big = {**good, "t": {f"target-{i}": ["u", 0] for i in range(200)}}
        recorder.publish(f"{PREFIX}/bravo/state", json.dumps(big))      # > 2 KB
        recorder.publish(f"{PREFIX}/mallory/state", json.dumps({**good, "node": "mallory"}))
        recorder.publish(f"{PREFIX}/bra.vo/state", "x")
        await r.wait_for(lambda: sum(r.app.fleet.view.counters.dropped.values()) >= 11,
                         timeout=5)
        dropped = (await r.client.get("/api/v1/fleet")).json()["messages"]["dropped"]
        # mallory is not a peer: with `peers` we subscribe to theirs only, so the broker never
        # even sends its message (nor the one on an impossible node id).
        assert dropped == {"malformed": 10, "oversized": 1, "untrusted": 0, "foreign": 0,
                           "too_many_nodes": 0, "out_of_order": 0, "duplicate_node": 0}
        # Nothing of it became a node or a target; the node still works.
        assert r.app.fleet.view.peers["bravo"].state is None
        assert "mallory" not in r.app.fleet.view.peers
        recorder.publish(f"{PREFIX}/bravo/state", json.dumps(good))
        await r.wait_for(lambda: r.app.fleet.view.peers["bravo"].state is not None)
        assert (await r.client.get("/api/v1/health")).status_code == 200


async def test_fleet_down_output_and_unknown_peer_never_heard(tmp_path, broker):
    config = node_config(tmp_path, broker, "alpha", [], fleet={"peers": ["ghost"]},
                         hardware={"backend": "mock", "lamp_test": {"at_start": False},
                                   "outputs": [
                                       {"name": "fleet-lamp", "type": "led", "pin": 17,
                                        "when": "fleet_down"},
                                       {"name": "siren", "type": "buzzer", "pin": 18,
                                        "when": "fleet_down", "audible": True}]})
    async with running_app(config) as r:
        lamp = r.app.outputs.outputs["fleet-lamp"]
        siren = r.app.outputs.outputs["siren"]
        assert lamp.value == 0 and siren.value == 0
        # ghost never shows up: offline once we have been linked for offline_after.
        await r.wait_for(lambda: "fleet:site:ghost" in failing_names_sync(r), timeout=8)
        error = r.app.monitor.state_of("fleet:site:ghost").last.error
        assert error == "site ghost offline: never heard from it"
        await r.wait_for(lambda: lamp.value == 1 and siren.value == 1)
        # Acknowledged: the siren goes quiet, the lamp stays until recovery.
        assert (await r.client.post("/api/v1/alerts/ack")).status_code == 200
        await r.wait_for(lambda: siren.value == 0)
        assert lamp.value == 1


async def test_a_site_alert_survives_a_restart_without_alerting_twice(tmp_path, broker):
    config = node_config(tmp_path, broker, "alpha", [], fleet={"peers": ["ghost"]})
    async with running_app(config) as r:
        await r.wait_for(lambda: "fleet:site:ghost" in failing_names_sync(r), timeout=8)
        first = (await r.client.get("/api/v1/alerts?state=open")).json()
    async with running_app(config) as r:
        # Adopted at start, judged again once linked: still offline, still the same alert.
        await r.wait_for(lambda: r.app.fleet.view.settled, timeout=10)
        assert "fleet:site:ghost" in failing_names_sync(r)
        again = (await r.client.get("/api/v1/alerts?state=all")).json()
        assert [(a["id"], a["resolved_at"]) for a in again] == [(first[0]["id"], None)]


async def test_tls_and_per_node_credentials_to_the_broker(tmp_path):
    """The fleet's broker over TLS (the broker's certificate checked against the CA given)
    with a username and password per node; a wrong CA or password never links, and says so
    as an alert (fleet:broker) instead of pretending the other sites are fine."""
    import shutil
    import subprocess

    from tests.test_probes_dns_tls import Certs

    if not shutil.which("mosquitto_passwd"):
        pytest.skip("mosquitto_passwd is not installed (tests/bootstrap.sh installs it)")
    (tmp_path / "certs").mkdir()
    certs = Certs(tmp_path / "certs")
    other_ca = certs._write("other-ca.pem", certs.other_ca)
    cert, key, _ = certs.leaves["valid"]
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "alpha", "pw-alpha"],
                   check=True, capture_output=True)
    passwords.chmod(0o600)
    broker = Broker(tmp_path)
    broker.conf.write_text(
        f"user root\nlistener {broker.port} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\n"
        f"allow_anonymous false\npassword_file {passwords}\npersistence false\n"
        "log_dest stderr\nlog_type error\n")
    broker.start()
    try:
        def node(name: str, ca: Path, password: str) -> Any:
            return node_config(tmp_path, broker, name, [], fleet={"broker": {
                "host": "127.0.0.1", "port": broker.port, "username": "alpha",
                "password": password, "tls": {"enabled": True, "ca_file": str(ca)},
                "keepalive": "5s", "reconnect_min": "200ms", "reconnect_max": "1s"}})

        async with running_app(node("alpha", certs.ca_file, "pw-alpha")) as good, \
                running_app(node("wrongca", other_ca, "pw-alpha")) as wrong_ca, \
                running_app(node("wrongpw", certs.ca_file, "nope")) as wrong_pw:
            await good.wait_for(lambda: good.app.fleet.view.link_ok)
            for bad in (wrong_ca, wrong_pw):
                await bad.wait_for(lambda b=bad: "fleet:broker" in failing_names_sync(b),
                                   timeout=10)
                assert not bad.app.fleet.view.link_ok
            assert "fleet:broker" not in failing_names_sync(good)
            # The password is never shown, not even to an admin.
            fleet = (await good.client.get("/api/v1/fleet")).text
            assert "pw-alpha" not in fleet
    finally:
        broker.stop()


async def test_sites_on_two_bridged_brokers(tmp_path):
    """The bridge configuration the README gives: a site's own broker bridges the fleet's
    topics both ways to the central one. States, last wills and retained messages cross it;
    when the bridge itself goes, the other side falls silent and is offline after
    offline_after (its last will never makes it across)."""
    (tmp_path / "central").mkdir()
    (tmp_path / "site").mkdir()
    central = Broker(tmp_path / "central").start()
    site = Broker(tmp_path / "site")
    with site.conf.open("a") as conf:
        conf.write(f"connection central\naddress 127.0.0.1:{central.port}\n"
                   f"topic {PREFIX}/# both 1\ncleansession true\nrestart_timeout 1\n")
    site.start()
    try:
        async with running_app(node_config(tmp_path, central, "alpha", [])) as alpha:
            async with running_app(node_config(tmp_path, site, "bravo", [])) as bravo:
                await alpha.wait_for(lambda: status_of(alpha, "fleet:site:bravo") == UP)
                await bravo.wait_for(lambda: status_of(bravo, "fleet:site:alpha") == UP)
            # bravo's clean stop (`offline`, retained) crosses the bridge.
            await alpha.wait_for(lambda: "fleet:site:bravo" in failing_names_sync(alpha),
                                 timeout=5)
            async with running_app(node_config(tmp_path, site, "bravo", [])):
                await alpha.wait_for(lambda: "fleet:site:bravo" not in failing_names_sync(alpha))
                site.proc.kill()  # the site broker dies, the bridge with it: nothing more
                site.proc.wait()  # crosses, not even bravo's last will
                await alpha.wait_for(lambda: "fleet:site:bravo" in failing_names_sync(alpha),
                                     timeout=8)
                error = alpha.app.monitor.state_of("fleet:site:bravo").last.error
                assert error == "site bravo offline: no update for more than 3 s"
    finally:
        site.stop()
        central.stop()


async def test_retired_node_is_forgotten(tmp_path, broker, recorder):
    config = node_config(tmp_path, broker, "alpha", [])
    async with running_app(config) as r:
        good = {"v": 1, "node": "old", "boot": "b1", "seq": 1, "ts": 1, "t": {}}
        recorder.publish(f"{PREFIX}/old/state", json.dumps(good), retain=True)
        recorder.publish(f"{PREFIX}/old/status", "offline", retain=True)
        await r.wait_for(lambda: "fleet:site:old" in failing_names_sync(r))
        # Clearing its retained messages retires it: its targets go, their alert resolves.
        recorder.publish(f"{PREFIX}/old/state", "", retain=True)
        recorder.publish(f"{PREFIX}/old/status", "", retain=True)
        await r.wait_for(lambda: r.app.monitor.state_of("fleet:site:old") is None)
        assert "old" not in r.app.fleet.view.peers
        assert not failing_names_sync(r)


async def test_two_appliances_with_one_node_id_are_reported(tmp_path, broker, recorder):
    config = node_config(tmp_path, broker, "alpha", [])
    async with running_app(config) as r:
        await r.wait_for(lambda: r.app.fleet.view.link_ok)
        other = {"v": 1, "node": "alpha", "boot": "not-ours", "seq": 99, "ts": 1, "t": {}}
        recorder.publish(f"{PREFIX}/alpha/state", json.dumps(other))
        await r.wait_for(lambda: r.app.fleet.view.counters.dropped["duplicate_node"] == 1)


# ---------------------------------------------------------------- the verdicts, step by step


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def ms(self) -> int:
        return int(self.t * 1000)


def view_of(node: str = "me", **config: Any) -> tuple[FleetView, Clock]:
    clock = Clock()
    cfg = FleetConfig(enabled=True, interval=1, **config)
    return FleetView(cfg, node, "boot-me", clock=clock, clock_ms=clock.ms), clock


def msg(node: str, seq: int = 1, boot: str = "b", **fields: Any) -> str:
    return json.dumps({"v": 1, "node": node, "boot": boot, "seq": seq, "ts": 0, **fields})


def beat(view: FleetView, seq: int) -> None:
    """We publish our state `seq` and it comes back from the broker."""
    view.sent(seq)
    view.receive(f"{PREFIX}/{view.node}/state", msg(view.node, seq=seq, boot=view.boot))


def link(view: FleetView, clock: Clock) -> None:
    beat(view, 1)
    view.tick()
    assert view.link_ok


def local(name: str, status: str, failures: int, *, check: str | None = None,
          kind: str = "tcp") -> TargetState:
    data: dict[str, Any] = {"name": name, "type": kind, "failure_threshold": 2}
    if kind == "tcp":
        data.update(host="192.0.2.1", port=1, check=check)
    else:
        data.update(period="1h")
    return TargetState(Target(1, name, parse_spec(data)), status, failures)


def results(view: FleetView) -> dict[str, tuple[bool, str | None]]:
    found = view.findings()
    return {r.target_id: (r.success, r.error) for r in found.results} if found else {}


def test_consensus_needs_quorum_of_the_nodes_that_vote():
    view, clock = view_of(quorum=2)
    link(view, clock)
    view.local([local("nas", DOWN, 3, check="nas"), local("gw", UP, 0)])
    for node in ("b", "c"):
        view.receive(f"{PREFIX}/{node}/state", msg(node, c={"nas": 0}))
    got = results(view)
    assert got["fleet:check:nas"] == (True, None)  # one of three: no alert
    view.receive(f"{PREFIX}/b/state", msg("b", seq=2, c={"nas": 1}))
    got = results(view)
    assert got["fleet:check:nas"] == (False, "nas is down from me, b (2 of 3 nodes checking "
                                             "it; quorum 2)")
    # c goes silent while we and b go on: offline, it no longer votes; 2 of 2 still down.
    for seq in range(2, 6):
        clock.t += 1
        beat(view, seq)
        view.receive(f"{PREFIX}/b/state", msg("b", seq=seq + 1, c={"nas": 1}))
        view.tick()
    got = results(view)
    assert got["fleet:site:c"] == (False, "site c offline: no update for more than 3 s")
    assert got["fleet:check:nas"][1] == "nas is down from me, b (2 of 2 nodes checking it; " \
        "quorum 2)"
    # We see it up again: 1 of 2 is below the quorum.
    view.local([local("nas", UP, 0, check="nas"), local("gw", UP, 0)])
    assert results(view)["fleet:check:nas"] == (True, None)
    # b alone can vote (we stop checking it): fewer voters than the quorum must all agree.
    view.local([local("gw", UP, 0)])
    assert results(view)["fleet:check:nas"] == (False, "nas is down from b (1 of 1 nodes "
                                                       "checking it; quorum 2)")


def test_is_it_me_uplink_verdict_and_abstention():
    view, clock = view_of(uplink_min_targets=2)
    link(view, clock)
    view.receive(f"{PREFIX}/peer/state", msg("peer", name="Peer", c={"nas": 0}))
    mine = [local("nas", UNREACHABLE, 2, check="nas"), local("a", DOWN, 2), local("b", UP, 1)]
    view.local(mine)
    assert view.uplink == "all 3 targets fail from here while Peer sees theirs"
    assert view.votes == {}  # no opinion on shared checks while our own uplink is down
    got = results(view)
    assert got["fleet:uplink"] == (False, "this node's uplink is down: all 3 targets fail from "
                                          "here while Peer sees theirs")
    assert got["fleet:check:nas"] == (True, None)  # only the peer votes, and it sees it up
    # One target answers again: not everything fails, the verdict ends.
    view.local([local("nas", UNREACHABLE, 2, check="nas"), local("a", DOWN, 2),
                local("b", UP, 0)])
    assert view.uplink is None and results(view)["fleet:uplink"] == (True, None)
    # Everything fails but the peer sees everything failing too: it is not just me.
    view.receive(f"{PREFIX}/peer/state", msg("peer", seq=2, f=True))
    view.local(mine)
    assert view.uplink is None
    # A heartbeat target or a single network target tells nothing about the uplink.
    view.receive(f"{PREFIX}/peer/state", msg("peer", seq=3))
    view.local([local("a", DOWN, 2), local("cron", DOWN, 2, kind="heartbeat")])
    assert view.uplink is None


def test_own_link_is_judged_by_its_echo_before_any_peer():
    view, clock = view_of()
    link(view, clock)
    view.receive(f"{PREFIX}/peer/state", msg("peer"))
    assert results(view)["fleet:site:peer"] == (True, None)
    # What we send stops coming back, and the peer falls silent at the same moment: our
    # link is in doubt first, so the peer is unknown, not offline; the broker verdict says so.
    for seq in range(2, 7):
        clock.t += 1
        view.sent(seq)
        view.tick()
    assert not view.link_ok
    got = results(view)
    assert "fleet:site:peer" not in got
    assert got["fleet:broker"][0] is False and "cannot reach the fleet broker" in \
        got["fleet:broker"][1]
    # Back: the retained messages and our echo arrive; nothing was raised about the peer.
    view.receive(f"{PREFIX}/peer/state", msg("peer"))
    beat(view, 7)
    view.tick()
    got = results(view)
    assert got["fleet:broker"] == (True, None) and "fleet:site:peer" not in got
    # A loop that stalls (a busy Pi) sends nothing meanwhile: no doubt about the link.
    clock.t += 30
    view.tick()
    assert view.link_ok


def test_untrusted_foreign_and_too_many_nodes_are_dropped():
    view, clock = view_of(peers=["b"], max_nodes=1)
    link(view, clock)
    view.receive(f"{PREFIX}/mallory/state", msg("mallory"))
    view.receive(f"{PREFIX}/bra.vo/state", msg("b"))
    view.receive("other/b/state", msg("b"))
    view.receive(f"{PREFIX}/b/state", msg("b"))
    assert "mallory" not in view.peers and view.peers["b"].state is not None
    open_view, _ = view_of(max_nodes=1)
    open_view.receive(f"{PREFIX}/x/state", msg("x"))
    open_view.receive(f"{PREFIX}/y/state", msg("y"))
    assert list(open_view.peers) == ["x"]
    assert (view.counters.dropped["untrusted"], view.counters.dropped["foreign"],
            open_view.counters.dropped["too_many_nodes"]) == (1, 2, 1)


def test_last_will_and_return():
    view, clock = view_of()
    link(view, clock)
    view.receive(f"{PREFIX}/peer/state", msg("peer", seq=5))
    view.receive(f"{PREFIX}/peer/status", "online")
    results(view)
    view.receive(f"{PREFIX}/peer/status", "offline")
    site = results(view)["fleet:site:peer"]
    assert site[0] is False and "its last will" in site[1]
    # A retained copy of its old state (same seq) does not bring it back; a newer one does.
    view.receive(f"{PREFIX}/peer/state", msg("peer", seq=5))
    assert "fleet:site:peer" not in results(view)
    view.receive(f"{PREFIX}/peer/state", msg("peer", seq=4))
    assert view.counters.dropped["out_of_order"] == 1
    view.receive(f"{PREFIX}/peer/state", msg("peer", seq=6))
    assert results(view)["fleet:site:peer"] == (True, None)


def test_fleet_config_errors_are_clear():
    from pingr.config import ConfigError

    cases = {
        "fleet: {interval: 10s, offline_after: 20s}\n": "at least 3 × interval",
        "fleet: {node_id: 'a b'}\n": "invalid node_id",
        "fleet: {prefix: 'a/#'}\n": "invalid prefix",
        "fleet: {peers: [ok, 'no/pe']}\n": "invalid peer",
        "fleet: {quorums: {'bad id': 2}}\n": "invalid check id",
        "targets: [{name: x, type: tcp, host: h, port: 1, check: 'a b'}]\n": "invalid check id",
        "hardware: {outputs: [{name: l, type: led, pin: 5, when: fleet}]}\n": "fleet_down",
    }
    for text, expected in cases.items():
        with pytest.raises(ConfigError) as exc:
            parse_config(text, "t.yaml")
        assert expected in str(exc.value), (text, exc.value)
    cfg = parse_config("fleet: {enabled: true, interval: 10s}\n")
    assert cfg.fleet.offline_after == 30


def test_fleet_target_is_not_probed():
    target = fleet_target("fleet:site:x")
    assert not target.probed and target.spec.failure_threshold == 1
    assert target.spec.tags == ["fleet"] and target.source == "fleet"


# ---------------------------------------------------------------- the monitor's one hook


def test_monitor_holds_what_the_fleet_decides():
    """A held target goes unreachable instead of down (no alert of its own); reconsider()
    closes the alert of one held after it went down; released, it goes down at its next
    failure. The monitor stays pure: `held` is a question it asks, like `silenced`."""
    held: dict[str, str] = {}
    monitor = Monitor(held=lambda t: held.get(t.name), clock_ms=lambda: 1_000)
    shared, plain = (Target(i, f"id-{n}", parse_spec({"name": n, "type": "tcp", "host": "h",
                                                        "port": 1, "failure_threshold": 2}))
                     for i, n in ((1, "shared"), (2, "plain")))
    monitor.restore([shared, plain], [], {}, 1, None)

    def fail(t: Target) -> Any:
        return monitor.process(Result(t.id, 1_000, False, error="refused"))

    held["shared"] = "a shared check"
    fail(shared)
    change = fail(shared)
    assert monitor.state_of(shared.id).status == UNREACHABLE and not change.alerts
    assert [e.type for e in change.events] == ["target.unreachable"]
    fail(plain)
    change = fail(plain)
    assert monitor.state_of(plain.id).status == DOWN and change.alerts[0].open
    snap = monitor.snapshot()
    assert [f.name for f in snap.failing] == ["plain"] and snap.unreachable == ("shared",)
    # The uplink went down: reconsider closes the alert of what is held now.
    held["plain"] = "uplink down"
    change = monitor.reconsider()
    assert monitor.state_of(plain.id).status == UNREACHABLE
    assert [a.resolved_at is not None for a in change.alerts] == [True]
    assert not monitor.snapshot().failing
    assert not monitor.reconsider()  # nothing left to do: an empty change
    # Released: down (a new alert) at its next failure, up at its next success.
    del held["plain"]
    change = fail(plain)
    assert monitor.state_of(plain.id).status == DOWN and change.alerts[0].open
    monitor.process(Result(shared.id, 1_000, True))
    assert monitor.state_of(shared.id).status == UP
