"""The DNS probe against a real server on loopback.

Debian's dnsmasq, started here on a 127.53.x.y address and a high port with no upstream
(`no-resolv`), so no query ever leaves the machine; it answers, changes its answer (restarted
with a new config), stops (refused) and hangs (SIGSTOP: no answer).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pingr.models import Result, Target
from pingr.probes.context import ProbeContext
from pingr.probes.registry import KINDS, parse_spec

DNSMASQ = shutil.which("dnsmasq") or next(
    (p for p in ("/usr/sbin/dnsmasq", "/sbin/dnsmasq") if os.path.exists(p)), None)
needs_dnsmasq = pytest.mark.skipif(
    DNSMASQ is None, reason="dnsmasq is not installed (tests/bootstrap.sh installs dnsmasq-base)")


def target(**spec) -> Target:
    return Target(pk=1, id="t-1", spec=parse_spec({"name": "t", **spec}))


async def probe(**spec) -> Result:
    t = target(**spec)
    return await KINDS[spec["type"]].run(t, ProbeContext())


# --------------------------------------------------------------------------------------- DNS

RECORDS = textwrap.dedent("""\
    local=/pingr.test/
    host-record=web.pingr.test,10.0.0.5,fd00::5
    cname=alias.pingr.test,web.pingr.test
    mx-host=pingr.test,mail.pingr.test,10
    txt-record=txt.pingr.test,"v=spf1 ","-all"
    address=/multi.pingr.test/10.0.0.7
    address=/multi.pingr.test/10.0.0.8
""") + "".join(
    # Four 200-byte TXT records: over 512 bytes, so the UDP answer comes back truncated.
    f'txt-record=big.pingr.test,"{chr(ord("a") + i) * 200}"\n' for i in range(4))


def _free_port(address: str) -> int:
    """A port free for both UDP and TCP on `address`."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((address, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((address, port))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no free port on {address}")


class Dnsmasq:
    """dnsmasq on its own loopback address and port, answering only from its config."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.address = f"127.53.{random.randint(1, 254)}.{random.randint(1, 254)}"
        self.port = _free_port(self.address)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def server(self) -> str:
        return f"{self.address}:{self.port}"

    def start(self, records: str) -> None:
        conf = self.dir / "dnsmasq.conf"
        conf.write_text(textwrap.dedent(f"""\
            no-resolv
            no-hosts
            no-poll
            bind-interfaces
            listen-address={self.address}
            port={self.port}
            pid-file=
            log-facility=-
            log-queries
        """) + records)
        self.log = open(self.dir / "dnsmasq.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [DNSMASQ, f"--conf-file={conf}", "--keep-in-foreground", "--no-daemon"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Until dnsmasq answers a query (its own NXDOMAIN for an unknown local name)."""
        import dns.message
        import dns.query

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"dnsmasq exited: {self.logtext()}")
            try:
                dns.query.udp(dns.message.make_query("ready.pingr.test", "A"), self.address,
                              timeout=0.2, port=self.port)
                return
            except Exception:
                time.sleep(0.05)
        raise RuntimeError(f"dnsmasq did not answer within 10 s: {self.logtext()}")

    def logtext(self) -> str:
        return (self.dir / "dnsmasq.log").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()

    async def astop(self) -> None:
        """stop() with the event loop running: with --no-daemon dnsmasq serves TCP in its one
        process and waits for a client to close; a probe's TCP socket closes on the loop's
        next turn, which a blocking stop() would hold off (SIGTERM waited 5 s behind it)."""
        await asyncio.to_thread(self.stop)

    async def arestart(self, records: str) -> None:
        await self.astop()
        self.start(records)


@pytest.fixture
async def dnsmasq(tmp_path):
    server = Dnsmasq(tmp_path)
    server.start(RECORDS)
    yield server
    await server.astop()


def dns_probe(server: Dnsmasq, query: str, record_type: str = "A", **extra):
    return probe(type="dns", query=query, record_type=record_type, server=server.server,
                 **extra)


@needs_dnsmasq
@pytest.mark.parametrize("query, rtype, expect, answers", [
    ("web.pingr.test", "A", ["10.0.0.5"], ["10.0.0.5"]),
    ("web.pingr.test", "AAAA", ["fd00:0:0::5"], ["fd00::5"]),
    ("txt.pingr.test", "TXT", ["v=spf1 -all"], ["v=spf1 -all"]),  # strings joined
    ("pingr.test", "MX", ["10 mail.pingr.test"], ["10 mail.pingr.test"]),
    ("pingr.test", "MX", ["Mail.Pingr.Test."], ["10 mail.pingr.test"]),  # exchange alone
    ("alias.pingr.test", "CNAME", ["web.pingr.test"], ["web.pingr.test"]),
    ("10.0.0.5", "PTR", ["web.pingr.test"], ["web.pingr.test"]),  # IP -> in-addr.arpa
    ("multi.pingr.test", "A", ["10.0.0.8", "10.0.0.7"], ["10.0.0.7", "10.0.0.8"]),
])
async def test_dns_answer_matches(dnsmasq, query, rtype, expect, answers):
    result = await dns_probe(dnsmasq, query, rtype, expect=expect)
    assert result.success, result.error
    assert result.error is None
    assert isinstance(result.latency_ms, int) and 0 <= result.latency_ms < 1000
    assert result.metrics["answers"] == answers
    assert result.metrics["rcode"] == "NOERROR"
    assert result.metrics["transport"] == "udp"
    assert result.metrics["server"] == dnsmasq.server


@needs_dnsmasq
async def test_dns_follows_cname_to_the_address(dnsmasq):
    result = await dns_probe(dnsmasq, "alias.pingr.test", "A", expect=["10.0.0.5"])
    assert result.success, result.error
    assert result.metrics["answers"] == ["10.0.0.5"]
    assert result.metrics["cname"] == "web.pingr.test"


@needs_dnsmasq
async def test_dns_without_expect_succeeds_on_any_answer(dnsmasq):
    result = await dns_probe(dnsmasq, "web.pingr.test")
    assert result.success and result.metrics["answers"] == ["10.0.0.5"]


@needs_dnsmasq
async def test_dns_expected_value_mismatch(dnsmasq):
    result = await dns_probe(dnsmasq, "web.pingr.test", expect=["10.0.0.6"])
    assert not result.success
    assert result.error == "expected 10.0.0.6, got 10.0.0.5"
    assert result.metrics["answers"] == ["10.0.0.5"]
    assert isinstance(result.latency_ms, int)  # the server did answer
    mx = await dns_probe(dnsmasq, "pingr.test", "MX", expect=["20 mail.pingr.test"])
    assert mx.error == "expected 20 mail.pingr.test, got 10 mail.pingr.test"


@needs_dnsmasq
async def test_dns_expect_modes(dnsmasq):
    one = ["10.0.0.7"]
    assert (await dns_probe(dnsmasq, "multi.pingr.test", expect=one)).success  # all (default)
    exact = await dns_probe(dnsmasq, "multi.pingr.test", expect=one, expect_mode="exact")
    assert exact.error == "expected exactly 10.0.0.7, got 10.0.0.7, 10.0.0.8"
    both = ["10.0.0.7", "10.0.0.8"]
    assert (await dns_probe(dnsmasq, "multi.pingr.test", expect=both,
                            expect_mode="exact")).success
    anyof = await dns_probe(dnsmasq, "multi.pingr.test", expect=["10.0.0.9", "10.0.0.8"],
                            expect_mode="any")
    assert anyof.success
    none = await dns_probe(dnsmasq, "multi.pingr.test", expect=["10.0.0.9"], expect_mode="any")
    assert none.error == "expected one of 10.0.0.9, got 10.0.0.7, 10.0.0.8"


@needs_dnsmasq
async def test_dns_nxdomain_nodata_refused(dnsmasq):
    nx = await dns_probe(dnsmasq, "nope.pingr.test")
    assert not nx.success
    assert nx.error == "NXDOMAIN: nope.pingr.test does not exist"
    assert nx.metrics["rcode"] == "NXDOMAIN"
    nodata = await dns_probe(dnsmasq, "web.pingr.test", "MX")
    assert nodata.error == "no MX record for web.pingr.test"
    assert nodata.metrics["rcode"] == "NOERROR" and nodata.metrics["answers"] == []
    # Outside its local domain and without upstream servers, dnsmasq refuses (asks no one).
    refused = await dns_probe(dnsmasq, "pingr-elsewhere.invalid")
    assert refused.error == (f"REFUSED: {dnsmasq.server} refuses to answer for "
                             "pingr-elsewhere.invalid")


@needs_dnsmasq
async def test_dns_truncated_udp_answer_is_asked_again_over_tcp(dnsmasq):
    result = await dns_probe(dnsmasq, "big.pingr.test", "TXT", expect=["c" * 200])
    assert result.success, result.error
    assert result.metrics["transport"] == "tcp"  # UDP came back with TC set
    assert [len(a) for a in result.metrics["answers"]] == [200, 200, 200, 200]
    log = dnsmasq.logtext()
    assert log.count("query[TXT] big.pingr.test") == 2, log  # once over UDP, once over TCP
    forced = await dns_probe(dnsmasq, "web.pingr.test", transport="tcp")
    assert forced.success and forced.metrics["transport"] == "tcp"


@needs_dnsmasq
async def test_dns_follows_a_changed_answer(dnsmasq):
    spec = {"expect": ["10.0.0.5"]}
    assert (await dns_probe(dnsmasq, "web.pingr.test", **spec)).success
    await dnsmasq.arestart(RECORDS.replace("10.0.0.5", "10.0.0.6"))
    changed = await dns_probe(dnsmasq, "web.pingr.test", **spec)
    assert not changed.success
    assert changed.error == "expected 10.0.0.5, got 10.0.0.6"
    await dnsmasq.arestart(RECORDS)
    assert (await dns_probe(dnsmasq, "web.pingr.test", **spec)).success


@needs_dnsmasq
async def test_dns_server_stopped_and_hung(dnsmasq):
    # Hung (SIGSTOP): the query waits for the whole timeout.
    dnsmasq.proc.send_signal(signal.SIGSTOP)
    try:
        start = time.monotonic()
        hung = await dns_probe(dnsmasq, "web.pingr.test", timeout_ms=500)
        elapsed = time.monotonic() - start
    finally:
        dnsmasq.proc.send_signal(signal.SIGCONT)
    assert not hung.success
    assert hung.error == f"no answer from {dnsmasq.server} within 500 ms"
    assert hung.latency_ms is None
    assert 0.45 <= elapsed < 1.5, elapsed
    tcp = await dns_probe(dnsmasq, "web.pingr.test", transport="tcp")
    assert tcp.success, tcp.error  # and it answers again once resumed
    # Stopped: loopback says so at once (ICMP port unreachable / RST), no need to wait.
    await dnsmasq.astop()
    start = time.monotonic()
    gone = await dns_probe(dnsmasq, "web.pingr.test", timeout_ms=2000)
    assert time.monotonic() - start < 1
    assert gone.error == f"nothing answers DNS on {dnsmasq.server} (connection refused)"
    gone_tcp = await dns_probe(dnsmasq, "web.pingr.test", transport="tcp")
    assert gone_tcp.error == f"nothing answers DNS on {dnsmasq.server} (connection refused)"


def test_dns_config_validation():
    spec = parse_spec({"name": "d", "type": "dns", "query": "web.pingr.test",
                       "server": "[::1]:5353", "record_type": "aaaa",
                       "expect": ["FD00:0::5"]})
    assert (spec.server, spec.port, spec.record_type, spec.expect) == (
        "::1", 5353, "AAAA", ["fd00::5"])
    assert parse_spec({"name": "d", "type": "dns", "query": "x.lan", "server": "127.0.0.1:5353",
                       "port": 5353}).port == 5353
    bad = [
        ({"server": "dns.example"}, "give the DNS server's IP address"),
        ({"server": "127.0.0.1:53", "port": 54}, "give it once"),
        ({"record_type": "AXFR"}, "unsupported record_type 'AXFR'"),
        ({"expect": ["10.0.0.300"]}, "is not an IP address"),
        ({"record_type": "AAAA", "expect": ["10.0.0.1"]}, "is not an IPv6 address"),
        ({"query": "a..b"}, "invalid name to resolve"),
        ({"transport": "doh"}, "transport"),
    ]
    for extra, message in bad:
        with pytest.raises(ValueError, match=message):
            parse_spec({"name": "d", "type": "dns", "query": "x.lan", **extra})


SYSTEM_RESOLVER = textwrap.dedent("""
    import asyncio, json, subprocess, sys, time
    import dns.message, dns.query
    from pingr.models import Target
    from pingr.probes import dns as dns_probe
    from pingr.probes.context import ProbeContext
    from pingr.probes.registry import KINDS, parse_spec
    conf, dns_probe.RESOLV_CONF = sys.argv[1], sys.argv[2]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    proc = subprocess.Popen([sys.argv[3], "--conf-file=" + conf, "--keep-in-foreground"])
    try:
        for _ in range(100):
            try:
                dns.query.udp(dns.message.make_query("x.pingr.test", "A"), "127.0.0.1",
                              timeout=0.2)
                break
            except Exception:
                time.sleep(0.05)
        spec = parse_spec({"name": "t", "type": "dns", "query": "web.pingr.test",
                           "expect": ["10.0.0.5"]})
        r = asyncio.run(KINDS["dns"].run(Target(1, "t", spec), ProbeContext()))
        print(json.dumps({"success": r.success, "error": r.error, "metrics": r.metrics}))
    finally:
        proc.terminate()
        proc.wait()
""")


@needs_dnsmasq
def test_dns_without_server_asks_the_system_nameservers(tmp_path):
    """No `server`: resolv.conf's nameservers on port 53, in order, the first refusing.

    Run in a private network namespace (nothing there can reach a real DNS server) with
    dns.RESOLV_CONF pointing at a file of ours naming 127.0.0.2 (nothing listens) then
    127.0.0.1 (dnsmasq on port 53).
    """
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) for a private network namespace with port 53")
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text("no-resolv\nno-hosts\nbind-interfaces\nlisten-address=127.0.0.1\n"
                    "port=53\npid-file=\n" + RECORDS)
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.2\nnameserver 127.0.0.1\n")
    out = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", SYSTEM_RESOLVER, str(conf),
         str(resolv), DNSMASQ], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["success"], result
    assert result["metrics"]["server"] == "127.0.0.1:53"
    assert result["metrics"]["answers"] == ["10.0.0.5"]


async def test_dns_without_server_and_without_nameservers(tmp_path, monkeypatch):
    from pingr.probes import dns as dns_probe

    monkeypatch.setattr(dns_probe, "RESOLV_CONF", str(tmp_path / "resolv.conf"))
    result = await probe(type="dns", query="web.pingr.test")
    assert not result.success
    assert result.error == f"no server given and no nameserver in {tmp_path / 'resolv.conf'}"
