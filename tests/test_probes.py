"""Each probe against real loopback servers and addresses (and a private network namespace)."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap
import threading

import httpx
import pytest

from pingr.models import Target
from pingr.probes.context import LazyTrustContext, ProbeContext, lazy_trust_context, make_client
from pingr.probes.icmp import detect_mode
from pingr.probes.registry import KINDS, parse_spec


def target(**spec) -> Target:
    return Target(pk=1, id="t-1", spec=parse_spec({"name": "t", **spec}))


@pytest.fixture
async def ctx():
    c = ProbeContext()
    yield c
    await c.aclose()


def _icmp_possible() -> bool:
    try:
        detect_mode()
        return True
    except RuntimeError:
        return False


needs_icmp = pytest.mark.skipif(not _icmp_possible(), reason="no raw or unprivileged ICMP socket: "
                                "run as root or open net.ipv4.ping_group_range")


@needs_icmp
@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "127.42.1.7"])
async def test_icmp_loopback_succeeds(ctx, host):
    result = await KINDS["icmp"].run(target(type="icmp", host=host), ctx)
    assert result.success, result.error
    assert result.error is None and result.status_code is None
    assert isinstance(result.latency_ms, int) and 0 <= result.latency_ms < 100


@needs_icmp
async def test_icmp_ipv6_loopback(ctx):
    if not socket.has_ipv6 or not os.path.exists("/proc/net/if_inet6"):
        pytest.skip("IPv6 is not available on this machine")
    result = await KINDS["icmp"].run(target(type="icmp", host="::1"), ctx)
    assert result.success, result.error


NETNS_PROBE = textwrap.dedent("""
    import asyncio, json, subprocess, sys
    from pingr.models import Target
    from pingr.probes.context import ProbeContext
    from pingr.probes.registry import KINDS, parse_spec
    setup = sys.argv[1]
    if setup:
        subprocess.run(setup, shell=True, check=True)
    spec = parse_spec({"name": "t", "type": "icmp", "host": sys.argv[2],
                       "timeout_ms": 500, "interval_seconds": 1})
    r = asyncio.run(KINDS["icmp"].run(Target(1, "t", spec), ProbeContext()))
    print(json.dumps({"success": r.success, "error": r.error, "latency_ms": r.latency_ms}))
""")


def _in_new_netns(setup: str, host: str) -> dict:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to create a private network namespace")
    out = subprocess.run(["unshare", "--net", sys.executable, "-c", NETNS_PROBE, setup, host],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_icmp_send_failure_is_reported():
    # A fresh namespace has its loopback down: the kernel refuses to send at all.
    result = _in_new_netns("", "127.0.0.1")
    assert result["success"] is False
    assert result["error"].startswith("send failed"), result
    assert result["latency_ms"] is None


def test_icmp_no_reply_times_out():
    # A veth pair inside our own namespace whose far end has no address: the echo request goes
    # nowhere (ARP is never answered) and nothing leaves the machine.
    setup = ("ip link set lo up && ip link add v0 type veth peer name v1 && "
             "ip addr add 192.0.2.1/24 dev v0 && ip link set v0 up && ip link set v1 up")
    result = _in_new_netns(setup, "192.0.2.77")
    assert result["success"] is False
    assert "no echo reply within 500 ms" in result["error"]


async def test_http_success_and_status(ctx, target_server):
    r = await KINDS["http"].run(target(type="http", url=target_server.url), ctx)
    assert r.success and r.status_code == 200 and r.error is None
    assert isinstance(r.latency_ms, int)
    target_server.behaviour.status = 503
    r = await KINDS["http"].run(target(type="http", url=target_server.url), ctx)
    assert not r.success and r.status_code == 503 and r.error == "unexpected status 503"
    r = await KINDS["http"].run(
        target(type="http", url=target_server.url, expect_status=[503]), ctx)
    assert r.success


async def test_http_body_contains(ctx, target_server):
    t = target(type="http", url=target_server.url, body_contains="pingr-test")
    assert (await KINDS["http"].run(t, ctx)).success
    t = target(type="http", url=target_server.url, body_contains="absent words")
    r = await KINDS["http"].run(t, ctx)
    assert not r.success and "does not contain" in r.error and r.status_code == 200


async def test_http_timeout_and_refused(ctx, target_server):
    target_server.behaviour.delay = 1.0
    t = target(type="http", url=target_server.url, timeout_ms=300, interval_seconds=1)
    r = await KINDS["http"].run(t, ctx)
    assert not r.success and r.error == "timed out after 300 ms" and r.latency_ms is None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        r = await KINDS["http"].run(target(type="http", url=f"http://127.0.0.1:{port}/"), ctx)
    assert not r.success and "ConnectError" in r.error


async def test_http_method_and_headers(ctx):
    seen = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            seen["method"], seen["token"] = "POST", self.headers.get("X-Token")
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.handle_request, daemon=True).start()
    t = target(type="http", url=f"http://127.0.0.1:{srv.server_address[1]}/x", method="POST",
               headers={"X-Token": "abc"})
    r = await KINDS["http"].run(t, ctx)
    srv.server_close()
    assert r.success and r.status_code == 204
    assert seen == {"method": "POST", "token": "abc"}


def https_server(tmp_path, *extra: str) -> tuple[http.server.ThreadingHTTPServer, str]:
    """A TLS server on 127.0.0.1 with a fresh self-signed certificate (its path returned)."""
    if not shutil.which("openssl"):
        pytest.skip("openssl(1) is needed to make a self-signed certificate")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", *extra, "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    srv.socket = tls.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, str(cert)


async def test_https_self_signed_needs_verify_off(ctx, tmp_path):
    srv, _cert = https_server(tmp_path)
    url = f"https://127.0.0.1:{srv.server_address[1]}/"
    try:
        strict = await KINDS["http"].run(target(type="http", url=url), ctx)
        assert not strict.success and "CERTIFICATE_VERIFY_FAILED" in strict.error
        loose = await KINDS["http"].run(target(type="http", url=url, verify_tls=False), ctx)
        assert loose.success and loose.status_code == 200
    finally:
        srv.shutdown()
        srv.server_close()


async def test_https_trust_store_loads_on_first_tls_connection(tmp_path):
    """The CA bundle (certifi's, ~1.8 MiB of RSS) is loaded by the first https probe only,
    and then verifies exactly as before: a certificate signed by it passes, hostname checked."""
    srv, cert = https_server(tmp_path, "-addext", "subjectAltName=IP:127.0.0.1")
    port = srv.server_address[1]
    trust = lazy_trust_context(cert)
    probe_ctx = ProbeContext(http=httpx.AsyncClient(verify=trust))
    try:
        assert trust.cert_store_stats()["x509_ca"] == 0
        ok = await KINDS["http"].run(
            target(type="http", url=f"https://127.0.0.1:{port}/"), probe_ctx)
        assert ok.success and ok.status_code == 200
        assert trust.cert_store_stats()["x509_ca"] == 1
        # The hostname is still checked: the certificate names 127.0.0.1 only.
        bad = await KINDS["http"].run(target(type="http", url=f"https://localhost:{port}/"),
                                   probe_ctx)
        assert not bad.success and "CERTIFICATE_VERIFY_FAILED" in bad.error
    finally:
        await probe_ctx.aclose()
        srv.shutdown()
        srv.server_close()
    # make_client wires it in: certifi's bundle, not loaded until a TLS connection.
    client = make_client()
    try:
        assert isinstance(client._transport._pool._ssl_context, LazyTrustContext)
        assert client._transport._pool._ssl_context.cert_store_stats()["x509_ca"] == 0
    finally:
        await client.aclose()


async def test_tcp_open_and_closed(ctx, target_server):
    r = await KINDS["tcp"].run(target(type="tcp", host="127.0.0.1", port=target_server.port), ctx)
    assert r.success and isinstance(r.latency_ms, int)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        r = await KINDS["tcp"].run(target(type="tcp", host="127.0.0.1", port=port), ctx)
    assert not r.success and r.error.startswith("connect failed")


@needs_icmp
async def test_icmp_works_where_a_socket_option_is_missing(monkeypatch):
    """qemu-user and some kernels lack SO_TIMESTAMPNS: replies are then timed on arrival."""
    from pingr.probes import icmp

    monkeypatch.setattr(icmp, "SO_TIMESTAMPNS", 9999)  # the kernel answers ENOPROTOOPT
    monkeypatch.setattr(icmp, "_DISPATCHERS", icmp.weakref.WeakKeyDictionary())
    ctx = ProbeContext()
    result = await KINDS["icmp"].run(target(type="icmp", host="127.0.0.1"), ctx)
    assert result.success, result.error
    assert 0 <= result.latency_ms < 100


@needs_icmp
async def test_icmp_send_that_stalled_is_timed_again():
    """A thread can lose the GIL (or the CPU) between taking the send time and `sendto`: that
    RTT would include the stall. A send whose check after `sendto` shows a stall goes out again
    under a new sequence number, and only the second one is timed."""
    import time

    from pingr.probes import icmp

    stall_ns = 50_000_000
    calls = []

    def clock() -> int:
        # The first send time reads as if taken 50 ms before the packet left (a stall).
        calls.append(None)
        return time.time_ns() - (stall_ns if len(calls) == 1 else 0)

    d = icmp.Dispatcher(detect_mode(), clock=clock)
    try:
        rtt = await d.ping("127.0.0.1", 2.0)
        assert d.resent == 1
        assert 0 <= rtt < 10_000_000, rtt  # without the re-send: >= 50 ms
        assert d.waiting == {}  # the first try's entry went with it; its reply was ignored

        # And without a stall nothing is sent twice.
        rtt = await d.ping("127.0.0.1", 2.0)
        assert d.resent == 1 and 0 <= rtt < 10_000_000
    finally:
        d.close()


@needs_icmp
async def test_icmp_a_burst_of_replies_is_read_whole():
    """The reader stops early once no reply of ours is due; replies that queue up together
    (200 probes sent at once) are all read, one read each (a stalled send's stale reply too)."""
    import asyncio

    from pingr.probes import icmp

    d = icmp.Dispatcher(detect_mode())
    try:
        hosts = [f"127.0.{i // 250}.{1 + i % 250}" for i in range(200)]
        rtts = await asyncio.gather(*(d.ping(host, 2.0) for host in hosts))
        assert all(0 <= rtt < 1_000_000_000 for rtt in rtts)
        assert d.waiting == {}
        assert d.reads == len(hosts) + d.resent
        rtt = await d.ping("127.0.0.1", 2.0)  # and a lone probe after the burst
        assert 0 <= rtt < 100_000_000
    finally:
        d.close()


#: A foreign pinger in its own process: raw echo requests to loopback under the identifier it is
#: given, reading its own replies so that the test knows they were delivered. With "rr" the
#: requests carry an IP option (record route), which the reply echoes: a 36-byte IP header.
FOREIGN_PINGER = textwrap.dedent("""
    import select, socket, struct, sys
    ident, count = int(sys.argv[1]), int(sys.argv[2])
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    if sys.argv[3:] == ["rr"]:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, bytes([7, 15, 4]) + bytes(13))
    def packet(seq):
        head = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"foreign-pinger!!"
        total = sum(struct.unpack("!%dH" % (len(head) // 2), head))
        total = (total >> 16) + (total & 0xFFFF)
        total += total >> 16
        return head[:2] + struct.pack("!H", ~total & 0xFFFF) + head[4:]
    got = set()
    for seq in range(count):
        s.sendto(packet(seq), ("127.0.0.1", 0))
        while select.select([s], [], [], 0.01)[0]:
            data = s.recv(2048)
            icmp = data[(data[0] & 0x0F) * 4:]
            if icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
                got.add(struct.unpack("!H", icmp[6:8])[0])
    while len(got) < count and select.select([s], [], [], 1.0)[0]:
        data = s.recv(2048)
        icmp = data[(data[0] & 0x0F) * 4:]
        if icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
            got.add(struct.unpack("!H", icmp[6:8])[0])
    print(len(got))
""")


@needs_icmp
async def test_icmp_foreign_echo_replies_never_wake_the_dispatcher():
    """Every raw ICMP socket gets a copy of every ICMP packet on the host: without a kernel
    filter, each reply to another program's ping (a neighbour pinging at 100/s) would wake
    pingr and cost a recv in Python. The shared socket's socket filter (classic BPF) passes
    only echo replies carrying the dispatcher's identifier, so a foreign ping is never read."""
    import asyncio

    from pingr.probes import icmp

    if not detect_mode():
        pytest.skip("needs a raw ICMP socket (root or CAP_NET_RAW); datagram sockets get only "
                    "their own replies from the kernel anyway")
    d = icmp.Dispatcher(True)
    try:
        foreign_ident = (d.ident + 1) & 0xFFFF
        count = 50
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FOREIGN_PINGER, str(foreign_ident), str(count),
            stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert int(out) == count  # the neighbour's replies were on the wire (loopback)
        await asyncio.sleep(0.2)  # give the loop every chance to read anything queued
        assert d.reads == 0, f"the dispatcher read {d.reads} foreign packets"

        # Its own probes still get through the filter, one read each.
        for _ in range(3):
            rtt = await d.ping("127.0.0.1", 2.0)
            assert 0 <= rtt < 100_000_000
        assert d.reads == 3

        # The filter finds the ICMP header behind IP options too (header length from the
        # packet, not assumed to be 20): replies with our identifier and a 36-byte IP header
        # are let through (and ignored: no probe waits for those sequence numbers) ...
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FOREIGN_PINGER, str(d.ident), "5", "rr",
            stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert int(out) == 5
        await asyncio.sleep(0.2)
        assert d.reads == 3 + 5
        # ... and foreign ones with options are not.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FOREIGN_PINGER, str(foreign_ident), "5", "rr",
            stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert int(out) == 5
        await asyncio.sleep(0.2)
        assert d.reads == 3 + 5
    finally:
        d.close()
