"""A sandbox for running documents' examples unchanged: their host names, ports and https://
URLs, inside a private network namespace (only its own loopback: nothing can leave the
machine) and mount namespace (its own /etc/hosts, /var/lib, /run), plus the small servers
those examples talk to (an HTTPS receiver standing in for discord.com, maker.ifttt.com or
fcm.googleapis.com, and a target whose answer a file controls).

Every command runs through `nsenter` into the namespaces of one holder process the sandbox
starts with `unshare`; files under the test's tmp_path are shared with the test.

    python -m tests.netns receiver PORT CERT KEY LOG     (run inside the sandbox)
    python -m tests.netns target PORT STATUS_FILE
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: A client that runs inside the sandbox: one request, the answer as JSON on stdout.
CLIENT = r"""
import json, sys, urllib.request, urllib.error
method, url, headers, body = json.loads(sys.argv[1])
req = urllib.request.Request(url, method=method, headers=headers,
                             data=None if body is None else body.encode())
try:
    resp = urllib.request.urlopen(req, timeout=10)
    status, hdrs, data = resp.status, dict(resp.headers), resp.read()
except urllib.error.HTTPError as exc:
    status, hdrs, data = exc.code, dict(exc.headers), exc.read()
print(json.dumps({"status": status, "headers": {k.lower(): v for k, v in hdrs.items()},
                  "body": data.decode("utf-8", "replace")}))
"""


def why_not() -> str | None:
    """Why a sandbox cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network and mount namespaces need root"
    for tool in ("unshare", "nsenter", "ip", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (util-linux, iproute2)"
    return None


class Sandbox:
    """A network + mount namespace with `hosts` resolving to 127.0.0.1 (its own loopback).

    `tmpfs` directories get an empty tmpfs (e.g. /var/lib, /run); `binds` are (source,
    target) bind mounts made after them (targets are created as empty files or directories).
    """

    def __init__(self, tmp: Path, hosts: list[str], tmpfs: list[str] = (),
                 binds: list[tuple[str, str]] = (), dirs: list[str] = ()) -> None:
        self.tmp = tmp
        hosts_file = tmp / "sandbox-hosts"
        hosts_file.write_text("127.0.0.1 localhost " + " ".join(hosts) + "\n::1 localhost\n")
        steps = ["ip link set lo up", f"mount --bind {hosts_file} /etc/hosts"]
        steps += [f"mount -t tmpfs tmpfs {d}" for d in tmpfs]
        steps += [f"mkdir -p {d}" for d in dirs]
        for src, dst in binds:
            steps.append(f"[ -d {src} ] && mkdir -p {dst} || touch {dst}")
            steps.append(f"mount --bind {src} {dst}")
        script = " && ".join(steps) + " && echo ready && exec sleep 100000"
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", script],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.holder.stdout.readline() if self.holder.stdout else ""
        if line.strip() != "ready":
            err = self.holder.stderr.read() if self.holder.stderr else ""
            raise RuntimeError(f"sandbox set-up failed: {err.strip()}")
        self.procs: list[subprocess.Popen[Any]] = []

    def command(self, *cmd: str) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-n", "-m", "--", *cmd]

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(ROOT), **extra}

    def popen(self, *cmd: str, env: dict[str, str] | None = None,
              log: Path | None = None) -> subprocess.Popen[Any]:
        """Start a long-running command inside (stdout+stderr to `log`)."""
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - the child's
        proc = subprocess.Popen(self.command(*cmd), stdout=out, stderr=subprocess.STDOUT,
                                env=env or self.env(), cwd=str(ROOT))
        if log:
            out.close()
        self.procs.append(proc)
        return proc

    def run(self, *cmd: str, env: dict[str, str] | None = None, timeout: float = 60,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*cmd), capture_output=True, text=True,
                              timeout=timeout, env=env or self.env(), cwd=str(ROOT),
                              input=stdin)

    def request(self, method: str, url: str, headers: dict[str, str] | None = None,
                body: Any = None) -> dict[str, Any]:
        """One HTTP request from inside; {"status", "headers", "body"} (body as text)."""
        data = None if body is None else json.dumps(body)
        hdrs = dict(headers or {})
        if data is not None:
            hdrs.setdefault("content-type", "application/json")
        done = self.run(sys.executable, "-c", CLIENT, json.dumps([method, url, hdrs, data]))
        if done.returncode != 0:
            raise RuntimeError(f"request {method} {url} failed: {done.stderr[-500:]}")
        return json.loads(done.stdout)

    def wait_http(self, url: str, timeout: float = 40.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.request("GET", url)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        self.holder.kill()
        self.holder.wait(5)


@contextlib.contextmanager
def sandbox(tmp: Path, hosts: list[str], **kw: Any) -> Iterator[Sandbox]:
    box = Sandbox(tmp, hosts, **kw)
    try:
        yield box
    finally:
        box.close()


def wait_until(predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout:g} s")
        time.sleep(0.2)


# ------------------------------------------------------------------ certificates


def make_certs(directory: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """A test CA and one leaf for `names`: (ca.pem, leaf.pem, leaf.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = dt.datetime.now(dt.UTC)
    valid = (now - dt.timedelta(days=1), now + dt.timedelta(days=30))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("pingr sandbox CA"))
          .issuer_name(name("pingr sandbox CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(valid[0]).not_valid_after(valid[1])
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(name(names[0])).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(valid[0]).not_valid_after(valid[1])
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    ca_file, cert_file, key_file = (directory / "ca.pem", directory / "leaf.pem",
                                    directory / "leaf.key")
    ca_file.write_bytes(ca.public_bytes(pem))
    cert_file.write_bytes(leaf.public_bytes(pem))
    key_file.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_file, cert_file, key_file


def received(log: Path) -> list[dict[str, Any]]:
    """What the receiver recorded, one dict per request."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------ servers (run inside)


def _receiver(port: int, cert: str, key: str, log: str) -> None:
    """HTTPS: records every request; answers OAuth token requests and FCM sends as Google
    does (enough for apprise), anything else 204."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw
            with open(log, "a") as f:
                f.write(json.dumps({"method": self.command, "host": self.headers.get("host"),
                                    "path": self.path, "body": body,
                                    "headers": {k.lower(): v for k, v in self.headers.items()},
                                    "at": time.time()}) + "\n")
            if self.path.endswith("/token"):
                answer: Any = {"access_token": "ya29.sandbox", "expires_in": 3600,
                               "token_type": "Bearer"}
            elif ":send" in self.path:
                answer = {"name": "projects/sandbox/messages/1"}
            else:
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _any  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


def _target(port: int, status_file: str) -> None:
    """HTTP: answers with the status written in `status_file` (200 when absent)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            try:
                status = int(Path(status_file).read_text().strip() or 200)
            except (OSError, ValueError):
                status = 200
            body = b"sandbox target"
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    kind, *args = sys.argv[1:]
    if kind == "receiver":
        _receiver(int(args[0]), args[1], args[2], args[3])
    elif kind == "target":
        _target(int(args[0]), args[1])
    else:
        raise SystemExit(f"unknown server {kind!r}")
