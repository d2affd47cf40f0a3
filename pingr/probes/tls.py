"""TLS certificate probe: days until the server's certificate expires, who issued it, for what.

One TCP connect + TLS handshake (asyncio) that verifies chain and host name (`verify`), then
the peer certificate (DER) is parsed with `cryptography`, imported on the first certificate
parsed (~10 MiB RSS on x86-64, 7 MiB of it the library's shared object; a box without TLS
targets never loads it). When verification fails, a second handshake without verification
reads the certificate anyway, so the result says both why it failed and when it expires.

Success: verified (unless `verify: false`) and neither expired nor not yet valid. A valid
certificate within `warn_days` of its expiry is still a success, with `metrics["warning"]`.

`Result.metrics` when a certificate was read (else None):
  days_left    float, days from the probe's time to notAfter, 2 decimals, negative once expired
  not_after    RFC 3339 UTC with Z (`2030-01-01T00:00:00Z`); not_before likewise
  issuer       RFC 4514 (`CN=Example CA,O=Example`); subject likewise
  sans         DNS names and IP addresses of subjectAltName (at most 50), as text
  warning      bool: valid now and expires within warn_days (False once expired)
  expired      bool: notAfter has passed
  verified     bool: chain and host name verified (False with verify: false or on failure)
  sha256       hex fingerprint of the certificate (DER), to tell a renewal from the old one
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import time
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from pingr.configbase import TargetBase, check_host
from pingr.models import Result, Target
from pingr.probes.context import ProbeContext, lazy_trust_context
from pingr.probes.http import HttpTarget
from pingr.probes.kind import Kind

MAX_SANS = 50
MAX_TEXT = 255
#: How often the certificate of an HTTPS target is checked by default (it changes slowly).
HTTPS_CERT_INTERVAL = 3600


class TlsTarget(TargetBase):
    """Check the TLS certificate served on host:port.

    `ca_file`: a PEM file of CAs to trust instead of the default bundle (certifi's, as the
    HTTP probe uses), for a private CA; `verify: false` checks dates only.
    """

    type: Literal["tls"]
    host: str
    port: int = Field(443, ge=1, le=65535)
    #: The name sent as SNI and checked against the certificate; default: host.
    server_name: str | None = None
    warn_days: int = Field(14, ge=0, le=3650)
    verify: bool = True
    ca_file: str | None = None

    _host = field_validator("host")(classmethod(lambda cls, v: check_host(v)))

    @field_validator("server_name")
    @classmethod
    def _server_name(cls, value: str | None) -> str | None:
        return None if value is None else check_host(value)

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("ca_file must not be blank: leave it out for the default CAs")
        return None if value is None else value.strip()


def tls_target_for(http_spec: HttpTarget, **overrides: Any) -> TlsTarget | None:
    """The certificate check of an HTTPS target (None for http://).

    Same host, port and name check as the HTTP probe (verify = its verify_tls, default CAs),
    its timeout, tags, enabled and thresholds; checked every HTTPS_CERT_INTERVAL seconds.
    `overrides` sets any TlsTarget field (name, interval_seconds, warn_days, ...).
    """
    parts = urlsplit(http_spec.url)
    if parts.scheme != "https" or not parts.hostname:
        return None
    fields: dict[str, Any] = {
        "type": "tls",
        "name": f"{http_spec.name[:86]} (certificate)",
        "host": parts.hostname,
        "port": parts.port or 443,
        "verify": http_spec.verify_tls,
        "interval_seconds": max(HTTPS_CERT_INTERVAL, http_spec.interval_seconds),
        "timeout_ms": http_spec.timeout_ms,
        "enabled": http_spec.enabled,
        "tags": list(http_spec.tags),
        "failure_threshold": http_spec.failure_threshold,
        "recovery_threshold": http_spec.recovery_threshold,
        "depends_on": http_spec.depends_on,
    }
    fields.update(overrides)
    return TlsTarget.model_validate(fields)


_CONTEXTS: dict[tuple[str | None, int], ssl.SSLContext] = {}


def _verifying_context(ca_file: str | None) -> ssl.SSLContext:
    """One verifying context per CA file (reloaded when the file changes), certifi's by default."""
    stamp = os.stat(ca_file).st_mtime_ns if ca_file else 0
    key = (ca_file, stamp)
    if key not in _CONTEXTS:
        for old in [k for k in _CONTEXTS if k[0] == ca_file]:
            del _CONTEXTS[old]
        if ca_file:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
            ctx.load_verify_locations(cafile=ca_file)  # now, so a bad file is this probe's error
        else:
            ctx = lazy_trust_context()  # the HTTP probe's trust: certifi's CAs, on first use
        _CONTEXTS[key] = ctx
    return _CONTEXTS[key]


def _reading_context() -> ssl.SSLContext:
    """A context that verifies nothing: only to read the certificate."""
    key = ("<no verification>", 0)
    if key not in _CONTEXTS:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _CONTEXTS[key] = ctx
    return _CONTEXTS[key]


#: OpenSSL's reasons for a failed handshake, in the user's words.
_SSL_REASONS = {
    "WRONG_VERSION_NUMBER": "the server does not speak TLS on this port (wrong version number)",
    "UNSUPPORTED_PROTOCOL": "no TLS version in common with the server (unsupported protocol)",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version in common with the server (protocol "
                                    "version alert)",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the server refused the handshake (no cipher or TLS "
                                     "version in common?)",
    "UNEXPECTED_EOF_WHILE_READING": "the server closed the connection during the handshake",
}


class _Failed(Exception):
    """A probe failure before any certificate was read, in the user's words."""


def _os_reason(exc: OSError) -> str:
    """`Connection refused`, not asyncio's `Connect call failed ('127.0.0.1', 443)`."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    return os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _handshake(spec: TlsTarget, sslctx: ssl.SSLContext, deadline: float) -> bytes:
    """Connect, handshake, return the peer certificate (DER); raises _Failed or the
    ssl.SSLCertVerificationError of a failed verification."""
    where = _where(spec.host, spec.port)
    ms = spec.timeout_ms
    try:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            _, writer = await asyncio.open_connection(spec.host, spec.port)
    except TimeoutError:
        raise _Failed(f"connect to {where} timed out after {ms} ms") from None
    except OSError as exc:
        raise _Failed(f"connect to {where} failed: {_os_reason(exc)}") from None
    try:
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await writer.start_tls(sslctx, server_hostname=spec.server_name or spec.host)
        except TimeoutError:
            raise _Failed(f"TLS handshake with {where} timed out after {ms} ms (the server "
                          "accepted the connection but did not complete the handshake)") from None
        except ssl.SSLCertVerificationError:
            raise
        except ssl.SSLError as exc:
            reason = exc.reason or exc.strerror or str(exc)
            raise _Failed(f"TLS handshake with {where} failed: "
                          f"{_SSL_REASONS.get(reason, reason)}") from None
        except (OSError, EOFError) as exc:
            reason = (_os_reason(exc) if isinstance(exc, OSError) and exc.errno
                      else "the server closed the connection")
            raise _Failed(f"TLS handshake with {where} failed: {reason}") from None
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        if not der:
            raise _Failed(f"{where} sent no certificate")
    except Exception:
        writer.transport.abort()
        await _closed(writer)
        raise
    except BaseException:  # cancelled: no awaiting
        writer.transport.abort()
        raise
    writer.close()
    if not await _closed(writer):
        writer.transport.abort()
    return der


async def _closed(writer: asyncio.StreamWriter) -> bool:
    """Wait (briefly) for the connection to close; True if it did without error.

    After a failed handshake this also collects the error asyncio keeps for wait_closed(),
    which it would otherwise log as "Future exception was never retrieved".
    """
    try:
        async with asyncio.timeout(0.5):
            await writer.wait_closed()
        return True
    except (TimeoutError, OSError, ssl.SSLError):
        return False


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _human(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def describe(der: bytes, now_s: float, warn_days: int) -> dict[str, Any]:
    """The metrics of one certificate (see the module docstring); `verified` is left to set."""
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    not_after = cert.not_valid_after_utc
    not_before = cert.not_valid_before_utc
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [*san.get_values_for_type(x509.DNSName),
                *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]
    except x509.ExtensionNotFound:
        sans = []
    days_left = round((not_after.timestamp() - now_s) / 86400, 2)
    expired = not_after.timestamp() <= now_s
    return {
        "days_left": days_left,
        "not_after": _utc_text(not_after),
        "not_before": _utc_text(not_before),
        "issuer": cert.issuer.rfc4514_string()[:MAX_TEXT],
        "subject": cert.subject.rfc4514_string()[:MAX_TEXT],
        "sans": [s[:MAX_TEXT] for s in sans[:MAX_SANS]],
        "warning": not expired and days_left <= warn_days,
        "expired": expired,
        "verified": False,
        "sha256": hashlib.sha256(der).hexdigest(),
        # Not metrics: for the messages below, dropped before the result is made.
        "_not_after": not_after,
        "_not_before": not_before,
    }


def _checked_name(spec: TlsTarget) -> str:
    return spec.server_name or spec.host


def _verify_reason(spec: TlsTarget, exc: ssl.SSLCertVerificationError,
                   info: dict[str, Any] | None) -> str:
    """Why verification failed, in the user's words, with what the certificate says."""
    code = exc.verify_code
    message = exc.verify_message or str(exc)
    issuer = info["issuer"] if info else None
    if code == 10 and info:  # X509_V_ERR_CERT_HAS_EXPIRED
        return f"certificate expired on {_human(info['_not_after'])}"
    if code == 9 and info:  # X509_V_ERR_CERT_NOT_YET_VALID
        return f"certificate is not valid before {_human(info['_not_before'])}"
    if code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
        names = ", ".join(info["sans"][:5]) if info and info["sans"] else None
        held = f": it is for {names}" if names else ""
        return f"hostname mismatch: the certificate is not valid for {_checked_name(spec)}{held}"
    if code == 18:  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
        subject = f" ({info['subject']})" if info else ""
        return f"self-signed certificate{subject}: not issued by a trusted CA"
    if code == 19:  # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
        return "self-signed certificate in the chain: its root CA is not trusted"
    if code in (2, 20, 21):  # unable to get (local) issuer / verify leaf signature
        by = f" {issuer}" if issuer else ""
        return f"certificate issuer{by} is not trusted (unknown CA or incomplete chain)"
    return f"certificate verification failed: {message}"


async def run(target: Target, ctx: ProbeContext) -> Result:
    """Read and judge the certificate; see the module docstring for success and metrics."""
    spec: TlsTarget = target.spec  # type: ignore[assignment]
    ts = ctx.clock_ms()
    deadline = time.monotonic() + spec.timeout_ms / 1000
    verify_error: ssl.SSLCertVerificationError | None = None
    start = time.perf_counter()
    try:
        if spec.verify:
            try:
                sslctx = _verifying_context(spec.ca_file)
            except (OSError, ssl.SSLError) as exc:
                reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
                return Result(target.id, ts, False,
                              error=f"cannot load ca_file {spec.ca_file}: {reason}")
            try:
                der = await _handshake(spec, sslctx, deadline)
            except ssl.SSLCertVerificationError as exc:
                verify_error = exc
        # Latency: connect + handshake of the first (verifying, unless verify is off) one.
        if verify_error is not None:
            latency = round((time.perf_counter() - start) * 1000)
            der = await _handshake(spec, _reading_context(), deadline)
        else:
            if not spec.verify:
                der = await _handshake(spec, _reading_context(), deadline)
            latency = round((time.perf_counter() - start) * 1000)
    except _Failed as exc:
        if verify_error is not None:  # the second handshake failed: say why the first did
            return Result(target.id, ts, False, latency,
                          error=_verify_reason(spec, verify_error, None))
        return Result(target.id, ts, False, error=str(exc))
    except ssl.SSLError as exc:  # a verification error on the reading handshake: unexpected
        return Result(target.id, ts, False, error=f"TLS handshake failed: {exc}")
    try:
        info = describe(der, ts / 1000, spec.warn_days)
    except ValueError as exc:
        where = _where(spec.host, spec.port)
        error = (_verify_reason(spec, verify_error, None) + "; " if verify_error else "")
        return Result(target.id, ts, False, latency,
                      error=f"{error}cannot parse the certificate of {where}: {exc}")
    info["verified"] = spec.verify and verify_error is None
    problems = [_verify_reason(spec, verify_error, info)] if verify_error else []
    said = problems[0] if problems else ""
    if info["expired"] and not said.startswith("certificate expired"):
        problems.append(f"certificate expired on {_human(info['_not_after'])}")
    elif info["_not_before"].timestamp() > ts / 1000 and "not valid before" not in said:
        problems.append(f"certificate is not valid before {_human(info['_not_before'])}")
    metrics = {k: v for k, v in info.items() if not k.startswith("_")}
    if problems:
        return Result(target.id, ts, False, latency, None, "; ".join(problems), metrics)
    return Result(target.id, ts, True, latency, None, None, metrics)


KIND = Kind(TlsTarget, run)
