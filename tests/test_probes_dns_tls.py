"""The DNS and TLS probes against real servers on loopback.

DNS: Debian's dnsmasq, started here on a 127.53.x.y address and a high port with no upstream
(`no-resolv`), so no query ever leaves the machine; it answers, changes its answer (restarted
with a new config), stops (refused) and hangs (SIGSTOP: no answer). TLS: certificates made
here with `cryptography` (a test CA; valid, 3 days left, expired, wrong host, self-signed,
unknown CA), each served by an asyncio TLS server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pingr.models import Result, Target
from pingr.probes.context import ProbeContext
from pingr.probes.registry import KINDS, parse_spec
from pingr.probes.tls import tls_target_for

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


# --------------------------------------------------------------------------------------- TLS

def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


class Certs:
    """A test CA and leaf certificates (EC P-256: quick to make), written as PEM files."""

    def __init__(self, directory: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.dir = directory
        self._x509, self._hashes, self._ser, self._ec = x509, hashes, serialization, ec
        self._name = lambda cn: x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        self.ca_key, self.ca = self._cert("pingr test CA", None, days=(-1, 3650), ca=True)
        self.ca_file = self._write("ca.pem", self.ca)
        self.other_key, self.other_ca = self._cert("Other CA", None, days=(-1, 3650), ca=True)
        self.leaves: dict[str, tuple[Path, Path, object]] = {}
        local = ["localhost", "127.0.0.1"]
        for name, cn, sans, days, issuer in [
            ("valid", "localhost", local, (-1, 90), "ca"),
            ("soon", "localhost", local, (-60, 3), "ca"),
            ("expired", "localhost", local, (-30, -1), "ca"),
            ("wrong_host", "other.pingr.test", ["other.pingr.test"], (-1, 90), "ca"),
            ("self_signed", "selfie.local", local, (-1, 90), None),
            ("unknown_ca", "localhost", local, (-1, 90), "other"),
        ]:
            signer = {"ca": (self.ca_key, self.ca), "other": (self.other_key, self.other_ca),
                      None: None}[issuer]
            key, cert = self._cert(cn, signer, days=days, sans=sans)
            self.leaves[name] = (self._write(f"{name}.pem", cert),
                                 self._write_key(f"{name}.key", key), cert)

    def _cert(self, cn, signer, days, sans=(), ca=False):
        import ipaddress

        x509 = self._x509
        key = self._ec.generate_private_key(self._ec.SECP256R1())
        now = _now()
        sign_key, issuer = (key, self._name(cn)) if signer is None else (signer[0],
                                                                        signer[1].subject)
        builder = (x509.CertificateBuilder().subject_name(self._name(cn)).issuer_name(issuer)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now + dt.timedelta(days=days[0]))
                   .not_valid_after(now + dt.timedelta(days=days[1])))
        if ca:
            builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None),
                                            critical=True)
        if sans:
            entries = []
            for s in sans:
                try:
                    entries.append(x509.IPAddress(ipaddress.ip_address(s)))
                except ValueError:
                    entries.append(x509.DNSName(s))
            builder = builder.add_extension(x509.SubjectAlternativeName(entries), critical=False)
        return key, builder.sign(sign_key, self._hashes.SHA256())

    def _write(self, name, cert) -> Path:
        path = self.dir / name
        path.write_bytes(cert.public_bytes(self._ser.Encoding.PEM))
        return path

    def _write_key(self, name, key) -> Path:
        path = self.dir / name
        path.write_bytes(key.private_bytes(self._ser.Encoding.PEM,
                                           self._ser.PrivateFormat.PKCS8,
                                           self._ser.NoEncryption()))
        return path


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(tmp_path_factory.mktemp("certs"))


class TlsServers:
    """asyncio TLS servers on 127.0.0.1, one per certificate asked for (in the test's loop)."""

    def __init__(self, certs: Certs) -> None:
        self.certs = certs
        self.servers: list[asyncio.Server] = []
        self.writers: set[asyncio.StreamWriter] = set()
        self.stopping = asyncio.Event()

    async def _start(self, handle, ssl_ctx: ssl.SSLContext | None) -> int:
        async def tracked(reader, writer):
            self.writers.add(writer)
            try:
                await handle(reader, writer)
            except (OSError, ssl.SSLError):
                pass
            finally:
                writer.transport.abort()

        server = await asyncio.start_server(tracked, "127.0.0.1", 0, ssl=ssl_ctx)
        self.servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def serve(self, leaf: str) -> int:
        cert_file, key_file, _ = self.certs.leaves[leaf]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_file, key_file)

        async def handle(reader, writer):
            await reader.read(100)

        return await self._start(handle, ctx)

    async def serve_plain(self, reply: bytes | None) -> int:
        """A TCP server that never starts TLS: answers `reply` or says nothing at all."""
        async def handle(reader, writer):
            await reader.read(100)
            if reply is None:
                await self.stopping.wait()
            else:
                writer.write(reply)
                await writer.drain()

        return await self._start(handle, None)

    async def close(self) -> None:
        self.stopping.set()
        for writer in self.writers:
            writer.transport.abort()
        for server in self.servers:
            server.close()
            await server.wait_closed()
        await asyncio.sleep(0)


@pytest.fixture
async def tls(certs):
    servers = TlsServers(certs)
    yield servers
    await servers.close()


def tls_probe(certs: Certs, port: int, **extra):
    return probe(type="tls", host="127.0.0.1", port=port, ca_file=str(certs.ca_file), **extra)


async def test_tls_valid_certificate(certs, tls):
    port = await tls.serve("valid")
    result = await tls_probe(certs, port)
    assert result.success, result.error
    assert result.error is None and isinstance(result.latency_ms, int)
    m = result.metrics
    cert = certs.leaves["valid"][2]
    assert abs(m["days_left"] - 90) < 0.01
    assert m["not_after"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert m["issuer"] == "CN=pingr test CA"
    assert m["subject"] == "CN=localhost"
    assert m["sans"] == ["localhost", "127.0.0.1"]
    assert m["warning"] is False and m["expired"] is False and m["verified"] is True
    assert len(m["sha256"]) == 64
    # The same by name: SNI and host name check for "localhost".
    named = await tls_probe(certs, port, server_name="localhost")
    assert named.success, named.error


async def test_tls_expiring_in_3_days_warns_but_succeeds(certs, tls):
    port = await tls.serve("soon")
    result = await tls_probe(certs, port)
    assert result.success, result.error
    assert abs(result.metrics["days_left"] - 3) < 0.01
    assert result.metrics["warning"] is True and result.metrics["verified"] is True
    quiet = await tls_probe(certs, port, warn_days=2)
    assert quiet.success and quiet.metrics["warning"] is False


async def test_tls_expired(certs, tls):
    port = await tls.serve("expired")
    result = await tls_probe(certs, port)
    assert not result.success
    not_after = certs.leaves["expired"][2].not_valid_after_utc
    assert result.error == f"certificate expired on {not_after:%Y-%m-%d %H:%M} UTC"
    m = result.metrics
    assert m["expired"] is True and m["warning"] is False and m["verified"] is False
    assert abs(m["days_left"] + 1) < 0.01
    # Not verifying does not make an expired certificate good.
    unverified = await tls_probe(certs, port, verify=False)
    assert not unverified.success
    assert unverified.error == f"certificate expired on {not_after:%Y-%m-%d %H:%M} UTC"


async def test_tls_wrong_host(certs, tls):
    port = await tls.serve("wrong_host")
    by_ip = await tls_probe(certs, port)
    assert not by_ip.success
    assert by_ip.error == ("hostname mismatch: the certificate is not valid for 127.0.0.1: "
                           "it is for other.pingr.test")
    by_name = await tls_probe(certs, port, server_name="localhost")
    assert by_name.error == ("hostname mismatch: the certificate is not valid for localhost: "
                             "it is for other.pingr.test")
    # What the certificate says is still read and reported.
    assert by_name.metrics["subject"] == "CN=other.pingr.test"
    assert abs(by_name.metrics["days_left"] - 90) < 0.01
    assert by_name.metrics["verified"] is False


async def test_tls_self_signed_and_unknown_ca(certs, tls):
    port = await tls.serve("self_signed")
    result = await tls_probe(certs, port)
    assert not result.success
    assert result.error == "self-signed certificate (CN=selfie.local): not issued by a trusted CA"
    assert result.metrics["issuer"] == result.metrics["subject"] == "CN=selfie.local"
    unverified = await tls_probe(certs, port, verify=False)
    assert unverified.success, unverified.error
    assert unverified.metrics["verified"] is False
    assert isinstance(unverified.latency_ms, int) and unverified.latency_ms >= 0
    # Default CAs (certifi's, as the HTTP probe uses) do not know the test CA either.
    port = await tls.serve("valid")
    default = await probe(type="tls", host="127.0.0.1", port=port)
    assert default.error == ("certificate issuer CN=pingr test CA is not trusted "
                             "(unknown CA or incomplete chain)")
    port = await tls.serve("unknown_ca")
    other = await tls_probe(certs, port)
    assert other.error == ("certificate issuer CN=Other CA is not trusted "
                           "(unknown CA or incomplete chain)")


async def test_tls_server_down_slow_or_not_tls(certs, tls):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = await tls_probe(certs, port)
    assert not down.success and down.metrics is None
    assert down.error == f"connect to 127.0.0.1:{port} failed: Connection refused"

    port = await tls.serve_plain(None)  # accepts, never answers the ClientHello
    start = time.monotonic()
    slow = await tls_probe(certs, port, timeout_ms=500)
    elapsed = time.monotonic() - start
    assert slow.error == (f"TLS handshake with 127.0.0.1:{port} timed out after 500 ms (the "
                          "server accepted the connection but did not complete the handshake)")
    assert 0.45 <= elapsed < 1.5, elapsed

    port = await tls.serve_plain(b"HTTP/1.1 400 Bad Request\r\n\r\n")  # plain HTTP
    plain = await tls_probe(certs, port)
    assert not plain.success and plain.metrics is None
    assert plain.error == (f"TLS handshake with 127.0.0.1:{port} failed: the server does not "
                           "speak TLS on this port (wrong version number)")

    port = await tls.serve_plain(b"")  # closes at once
    closed = await tls_probe(certs, port)
    assert closed.error.startswith(f"TLS handshake with 127.0.0.1:{port} failed: "), closed.error
    assert "closed the connection" in closed.error or "reset" in closed.error, closed.error


async def test_tls_ca_file_missing(tmp_path):
    result = await probe(type="tls", host="127.0.0.1", port=443,
                         ca_file=str(tmp_path / "nope.pem"))
    assert result.error == f"cannot load ca_file {tmp_path / 'nope.pem'}: No such file or directory"


async def test_tls_target_for_https(certs, tls):
    http = parse_spec({"name": "shop", "type": "http", "url": "https://localhost:8443/health",
                       "interval": "1m", "timeout": "3s", "tags": ["web"]})
    spec = tls_target_for(http)
    assert (spec.type, spec.host, spec.port, spec.verify, spec.warn_days) == (
        "tls", "localhost", 8443, True, 14)
    assert spec.name == "shop (certificate)"
    assert (spec.interval_seconds, spec.timeout_ms, spec.tags) == (3600, 3000, ["web"])
    assert tls_target_for(parse_spec({"name": "x", "type": "http", "url": "http://a/"})) is None
    insecure = parse_spec({"name": "x", "type": "http", "url": "https://[::1]/",
                           "verify_tls": False})
    assert (tls_target_for(insecure).host, tls_target_for(insecure).port,
            tls_target_for(insecure).verify) == ("::1", 443, False)
    # And it probes: the HTTPS server's certificate, through its URL's host and port.
    port = await tls.serve("valid")
    http = parse_spec({"name": "shop", "type": "http", "url": f"https://127.0.0.1:{port}/"})
    spec = tls_target_for(http, ca_file=str(certs.ca_file))
    assert (spec.host, spec.port) == ("127.0.0.1", port)
    result = await KINDS["tls"].run(Target(2, "t-2", spec), ProbeContext())
    assert result.success, result.error
    assert result.metrics["subject"] == "CN=localhost" and result.metrics["verified"]


def test_tls_config_validation():
    spec = parse_spec({"name": "c", "type": "tls", "host": "example.lan"})
    assert (spec.port, spec.server_name, spec.warn_days, spec.verify, spec.ca_file) == (
        443, None, 14, True, None)
    for extra, message in [({"host": "bad host"}, "invalid host"),
                           ({"warn_days": -1}, "warn_days"),
                           ({"port": 0}, "port"),
                           ({"ca_file": " "}, "ca_file must not be blank")]:
        with pytest.raises(ValueError, match=message):
            parse_spec({"name": "c", "type": "tls", "host": "example.lan", **extra})
