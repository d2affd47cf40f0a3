"""Three real `pingr run` processes, each in its own network namespace, joined to a Mosquitto in
another by veth links this test creates; their targets live in a fourth. Nothing touches the
host's network: every interface, address and route is inside the namespaces.

    broker ns  10.19.<i>.1 ── veth ── 10.19.<i>.2  node i  10.20.<i>.2 (wan) ── veth ── 10.20.<i>.1
    (mosquitto, per-node credentials and ACL)       (pingr)          targets ns (10.99.0.10-12)

Cutting a node's broker link raises "site offline" on the others within offline_after and
resolves it when the link returns; a shared target unreachable from one node raises nothing
at quorum 2, from two nodes one alert on every node; a node whose uplink goes down reports its
uplink, and nobody alarms for its targets.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import SLOW
from tests.mqttbroker import MOSQUITTO

ROOT = Path(__file__).resolve().parent.parent
PINGR = [str(ROOT / ".venv" / "bin" / "pingr")] if (ROOT / ".venv/bin/pingr").exists() else [
    sys.executable, "-m", "pingr"]
KEY = "pingr_fleet_netns_key_0123456789abcdef"
NODES = ("n1", "n2", "n3")
OFFLINE_AFTER = 4.0
CLONE_NEWNET = 0x40000000
SHARED, OTHERS = "10.99.0.10", ("10.99.0.11", "10.99.0.12")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip") or MOSQUITTO is None
    or not shutil.which("mosquitto_passwd"),
    reason="needs root, ip(8), mosquitto and mosquitto_passwd (tests/bootstrap.sh) to build "
           "network namespaces with a broker")


def ip(*args: str) -> None:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")


class NsHttp:
    """GETs to 127.0.0.1 inside a namespace, from a thread that entered it (setns affects
    only the calling thread; the sockets it opens belong to the namespace)."""

    def __init__(self, ns: str) -> None:
        self.pool = ThreadPoolExecutor(1, initializer=self._enter, initargs=(ns,))

    @staticmethod
    def _enter(ns: str) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns into {ns}: {os.strerror(err)}")
        finally:
            os.close(fd)

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` in the namespace's thread (sockets it opens are in the namespace)."""
        return self.pool.submit(fn).result(20)

    def get(self, path: str) -> Any:
        def work() -> Any:
            conn = http.client.HTTPConnection("127.0.0.1", 9009, timeout=5)
            try:
                conn.request("GET", path, headers={"x-api-key": KEY})
                resp = conn.getresponse()
                return json.loads(resp.read())
            finally:
                conn.close()
        return self.pool.submit(work).result(10)

    def close(self) -> None:
        self.pool.shutdown(wait=False)


class Fleet:
    """The namespaces, the broker, the target hosts and three pingr processes."""

    def __init__(self, workdir: Path) -> None:
        tag = f"f19{os.getpid() % 100000}"
        self.workdir = workdir
        self.broker_ns, self.targets_ns = f"{tag}b", f"{tag}t"
        self.node_ns = {n: f"{tag}{n}" for n in NODES}
        self.namespaces: list[str] = []
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.http: dict[str, NsHttp] = {}

    # ------------------------------------------------------------------ building

    def build(self) -> None:
        for ns in (self.broker_ns, self.targets_ns, *self.node_ns.values()):
            try:
                ip("netns", "add", ns)
            except RuntimeError as exc:
                pytest.skip(f"cannot create network namespaces here: {exc}")
            self.namespaces.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        for addr in (SHARED, *OTHERS):
            ip("-n", self.targets_ns, "addr", "add", f"{addr}/32", "dev", "lo")
        for i, node in enumerate(NODES, start=1):
            ns = self.node_ns[node]
            ip("-n", self.broker_ns, "link", "add", f"b{i}", "type", "veth", "peer", "name",
               "brk", "netns", ns)
            ip("-n", self.broker_ns, "addr", "add", f"10.19.{i}.1/24", "dev", f"b{i}")
            ip("-n", ns, "addr", "add", f"10.19.{i}.2/24", "dev", "brk")
            ip("-n", self.targets_ns, "link", "add", f"t{i}", "type", "veth", "peer", "name",
               "wan", "netns", ns)
            ip("-n", self.targets_ns, "addr", "add", f"10.20.{i}.1/24", "dev", f"t{i}")
            ip("-n", ns, "addr", "add", f"10.20.{i}.2/24", "dev", "wan")
            for dev, where in ((f"b{i}", self.broker_ns), (f"t{i}", self.targets_ns),
                               ("brk", ns), ("wan", ns)):
                ip("-n", where, "link", "set", dev, "up")
            ip("-n", ns, "route", "add", "10.99.0.0/24", "via", f"10.20.{i}.1")

    def start_broker(self) -> None:
        pw = self.workdir / "passwords"
        for node in NODES:
            subprocess.run(["mosquitto_passwd", "-b", *([] if pw.exists() else ["-c"]), str(pw),
                            node, f"pw-{node}"], check=True, capture_output=True)
        pw.chmod(0o600)  # mosquitto 2 refuses a password file others can read
        acl = self.workdir / "acl"
        # Each node writes only under its own node id (its username); all read the fleet.
        acl.write_text("pattern readwrite pingr-fleet/%u/#\npattern read pingr-fleet/#\n")
        acl.chmod(0o600)
        conf = self.workdir / "mosquitto.conf"
        # `user root`: started as root, mosquitto would become `mosquitto`, who cannot read
        # pytest's private tmp directory.
        conf.write_text(f"user root\nlistener 1883 0.0.0.0\nallow_anonymous false\n"
                        f"password_file {pw}\n"
                        f"acl_file {acl}\npersistence false\nlog_dest stderr\n"
                        "log_type error\nlog_type warning\n")
        self._spawn("broker", self.broker_ns, [MOSQUITTO, "-c", str(conf)])

    def start_targets(self) -> None:
        # Every target host is the same little TCP listener on 10.99.0.10-12:8080.
        code = ("import socket\ns = socket.create_server(('0.0.0.0', 8080), backlog=128)\n"
                "while True:\n    c, _ = s.accept()\n    c.close()\n")
        self._spawn("targets", self.targets_ns, [sys.executable, "-c", code])

    def start_nodes(self) -> None:
        for i, node in enumerate(NODES, start=1):
            self.procs[node] = self._spawn(node, self.node_ns[node],
                                           [*PINGR, "run", "--config", str(self._config(i, node))])
            self.http[node] = NsHttp(self.node_ns[node])

    def _config(self, i: int, node: str) -> Path:
        state = self.workdir / node
        state.mkdir()
        target = {"type": "tcp", "port": 8080, "interval": "1s", "timeout": "500ms",
                  "failure_threshold": 2}
        config = {
            "host": "127.0.0.1", "port": 9009, "log_level": "info",
            "auth": {"api_key": KEY, "rate_limit_per_minute": 100_000},  # the test polls
            "storage": {"path": str(state / "pingr.db"), "flush_interval": "200ms"},
            "scheduler": {"stagger": "500ms"}, "docker": {"enabled": False},
            "metrics": {"enabled": False},
            "fleet": {"enabled": True, "node_id": node, "name": f"Site {i}", "interval": "1s",
                      "offline_after": f"{OFFLINE_AFTER:g}s", "quorum": 2,
                      "peers": [n for n in NODES if n != node],
                      "broker": {"host": f"10.19.{i}.1", "port": 1883, "username": node,
                                 "password": f"pw-{node}", "keepalive": "5s",
                                 "reconnect_min": "500ms", "reconnect_max": "1s"}},
            "targets": [{**target, "name": "nas", "host": SHARED, "check": "nas"},
                        {**target, "name": "printer", "host": OTHERS[0]},
                        {**target, "name": "router", "host": OTHERS[1]}],
        }
        path = state / "pingr.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def _spawn(self, name: str, ns: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, "PINGR_CONFIG": ""})
        self.procs[name] = proc
        return proc

    # ------------------------------------------------------------------ reading

    def failing(self, node: str) -> set[str]:
        return {t["name"] for t in self.http[node].get("/api/v1/alert-status")["failing_targets"]}

    def status(self, node: str) -> dict[str, Any]:
        return self.http[node].get("/api/v1/alert-status")

    def fleet(self, node: str) -> dict[str, Any]:
        return self.http[node].get("/api/v1/fleet")

    def target_status(self, node: str, name: str) -> str:
        targets = self.http[node].get("/api/v1/targets")["items"]
        return next(t["status"] for t in targets if t["name"] == name)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.workdir.glob("*.log")))

    def wait(self, what: str, predicate: Callable[[], Any], timeout: float) -> float:
        """Poll until `predicate()` is truthy; return the seconds it took."""
        start = time.monotonic()
        deadline = start + timeout * SLOW
        last: Any = None
        while time.monotonic() < deadline:
            for node, proc in self.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(f"{node} exited ({proc.returncode})\n{self.logs()}")
            try:
                last = predicate()
            except (OSError, http.client.HTTPException, KeyError, StopIteration) as exc:
                last = exc
            else:
                if last:
                    return time.monotonic() - start
            time.sleep(0.1)
        raise AssertionError(f"{what}: not within {timeout * SLOW:g}s (last: {last!r})\n"
                             f"{self.logs()}")

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        for http_ in self.http.values():
            http_.close()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for ns in self.namespaces:
            with contextlib.suppress(RuntimeError):
                ip("netns", "del", ns)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    try:
        f.build()
        f.start_broker()
        f.start_targets()
        f.start_nodes()
        yield f
    finally:
        f.close()


def test_three_sites_agree(fleet: Fleet):
    f = fleet

    def all_online() -> bool:
        for node in NODES:
            view = f.fleet(node)
            if not view["linked"] or not all(n["online"] for n in view["nodes"]):
                return False
            if f.failing(node):
                return False
            if any(f.target_status(node, t) != "up" for t in ("nas", "printer", "router")):
                return False
            # every node's vote on the shared check has arrived (each votes after its own
            # first probe of it, which may come after its state message)
            if [sorted(c["voters"]) for c in view["checks"]][:1] != [["n1", "n2", "n3"]]:
                return False
        return True

    f.wait("three nodes linked, all online, nothing failing, every vote in", all_online, 60)
    view = f.fleet("n1")
    assert {n["node"]: n["name"] for n in view["nodes"]} == {
        "n1": "Site 1", "n2": "Site 2", "n3": "Site 3"}
    assert sorted(view["checks"][0]["voters"]) == ["n1", "n2", "n3"]

    # Per-node credentials: with n1's, a client may not speak for n2 (the broker's ACL drops
    # it), but may publish under n1: n1 notices another appliance using its node id.
    spoof = {"v": 1, "node": "n2", "name": "Site 2", "boot": "spoofed", "seq": 10**9,
             "ts": 0, "up": "down", "t": {"nas": ["d", 9]}}
    same_id = {"v": 1, "node": "n1", "boot": "intruder", "seq": 1, "ts": 0}

    def publish_as_n1() -> list[Any]:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="intruder")
        client.username_pw_set("n1", "pw-n1")
        client.connect("10.19.1.1", 1883, keepalive=5)
        client.loop_start()
        try:
            out = [client.publish("pingr-fleet/n2/state", json.dumps(spoof), qos=1),
                   client.publish("pingr-fleet/n1/state", json.dumps(same_id), qos=1)]
            for info in out:
                info.wait_for_publish(5)
            return [info.rc for info in out]
        finally:
            client.disconnect()
            client.loop_stop()

    assert f.http["n1"].run(publish_as_n1) == [0, 0]
    f.wait("n1 sees the message under its own id",
           lambda: f.fleet("n1")["messages"]["dropped"]["duplicate_node"] == 1, 10)
    for node in ("n1", "n3"):  # the n2 message, sent first, never arrived
        peer = next(n for n in f.fleet(node)["nodes"] if n["node"] == "n2")
        assert peer["uplink"] == "ok" and not peer["failing"], peer
        assert not f.failing(node)

    # ---- 1. Cut n3's link to the broker: the others raise "site offline" within
    # offline_after; n3 blames its own link (peers unknown), not the others.
    ip("-n", f.broker_ns, "link", "set", "b3", "down")
    took = f.wait("n1 and n2 see site n3 offline",
                  lambda: all("fleet:site:n3" in f.failing(n) for n in ("n1", "n2")), 15)
    assert took <= OFFLINE_AFTER + 3 * SLOW, f"site offline after {took:.1f}s"
    assert f.failing("n1") == f.failing("n2") == {"fleet:site:n3"}
    site = next(n for n in f.fleet("n1")["nodes"] if n["node"] == "n3")
    assert site["online"] is False
    f.wait("n3 reports its broker link", lambda: f.failing("n3") == {"fleet:broker"}, 15)
    ip("-n", f.broker_ns, "link", "set", "b3", "up")
    f.wait("site n3 back on n1 and n2, n3 linked again",
           lambda: not any(f.failing(n) for n in NODES), 30)
    alerts = f.http["n1"].get("/api/v1/alerts?state=all")
    assert [a["target_name"] for a in alerts] == ["fleet:site:n3"]  # one alert, resolved
    assert alerts[0]["resolved_at"] is not None
    assert "site Site 3 offline" in alerts[0]["last_error"]

    # ---- 2. The shared target unreachable from n1 only: nothing at quorum 2.
    ip("-n", f.node_ns["n1"], "route", "add", "unreachable", f"{SHARED}/32")
    f.wait("n2 hears that n1 sees nas down",
           lambda: f.fleet("n2")["checks"][0]["down_from"] == ["n1"], 15)
    time.sleep(2)  # long enough for an alert to have been raised anywhere
    for node in NODES:
        assert not f.failing(node), (node, f.status(node))
    assert f.target_status("n1", "nas") == "unreachable"  # held: the fleet decides
    assert "nas" in f.status("n1").get("unreachable", [])
    # ... and from n2 as well: one alert, on every node.
    ip("-n", f.node_ns["n2"], "route", "add", "unreachable", f"{SHARED}/32")
    f.wait("fleet:check:nas down on every node",
           lambda: all(f.failing(n) == {"fleet:check:nas"} for n in NODES), 15)
    for node in NODES:
        body = f.status(node)
        assert body["alert"] is True and body["failing_count"] == 1
    check = f.fleet("n3")["checks"][0]
    assert (check["down"], check["down_from"]) == (True, ["n1", "n2"])
    for node in ("n1", "n2"):
        ip("-n", f.node_ns[node], "route", "del", "unreachable", f"{SHARED}/32")
    f.wait("the shared check up again everywhere",
           lambda: not any(f.failing(n) for n in NODES), 20)

    # ---- 3. n2's uplink goes down: it reports its uplink; nobody alarms for its targets.
    ip("-n", f.node_ns["n2"], "link", "set", "wan", "down")
    f.wait("n2 reports its uplink", lambda: f.failing("n2") == {"fleet:uplink"}, 15)
    f.wait("the others mirror n2's uplink, and only that",
           lambda: all(f.failing(n) == {"fleet:alerts:n2"} for n in ("n1", "n3")), 10)
    time.sleep(2)
    assert f.failing("n2") == {"fleet:uplink"}
    for node in ("n1", "n3"):
        assert f.failing(node) == {"fleet:alerts:n2"}
    for name in ("nas", "printer", "router"):
        assert f.target_status("n2", name) == "unreachable"
    alerts_n1 = f.http["n1"].get("/api/v1/alerts?state=open")
    mirrored = next(a for a in alerts_n1 if a["target_name"] == "fleet:alerts:n2")
    assert "its uplink is down" in mirrored["last_error"]
    n2 = next(n for n in f.fleet("n2")["nodes"] if n["self"])
    assert n2["uplink"] == "down" and "while" in n2["uplink_reason"]
    ip("-n", f.node_ns["n2"], "link", "set", "wan", "up")
    ip("-n", f.node_ns["n2"], "route", "replace", "10.99.0.0/24", "via", "10.20.2.1")
    f.wait("all clear after n2's uplink returns", lambda: not any(f.failing(n) for n in NODES),
           20)
    # n2's targets never alerted on their own, anywhere.
    for node in NODES:
        names = {a["target_name"] for a in f.http[node].get("/api/v1/alerts?state=all")}
        assert not names & {"nas", "printer", "router"}, (node, names)
