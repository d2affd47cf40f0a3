"""What probes share: one HTTP client, the ICMP socket mode, check-in times and the clock."""

from __future__ import annotations

import os
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from pingr import __version__
from pingr.models import Result, Target
from pingr.timeutil import now_ms


class CheckinBook(Protocol):
    """The heartbeat targets' check-in times (kept by pingr.heartbeat.Heartbeats)."""

    def check(self, target: Target) -> Result:
        """The deadline check of one heartbeat target, from memory."""
        ...


@dataclass
class ProbeContext:
    """Shared, injected state for probes (so tests can give them a transport or a clock)."""

    http: httpx.AsyncClient | None = None
    http_insecure: httpx.AsyncClient | None = None
    icmp_privileged: bool | None = None
    clock_ms: Callable[[], int] = field(default=now_ms)
    checkins: CheckinBook | None = None

    def client(self, verify: bool) -> httpx.AsyncClient:
        """The shared client; a second one (made on first use) for targets with verify_tls off."""
        if verify:
            if self.http is None:
                self.http = make_client(verify=True)
            return self.http
        if self.http_insecure is None:
            self.http_insecure = make_client(verify=False)
        return self.http_insecure

    async def aclose(self) -> None:
        for client in (self.http, self.http_insecure):
            if client is not None:
                await client.aclose()


class LazyTrustContext(ssl.SSLContext):
    """A verifying client TLS context that loads its CA bundle on the first TLS connection.

    Loading certifi's bundle into OpenSSL costs ~1.8 MiB of RSS for the life of the process
    (measured, x86-64); a box that probes only http:// and ICMP targets never needs it. Until
    then the context is `ssl.create_default_context(cafile=...)` minus the loaded CAs; every
    handshake goes through `wrap_bio` (asyncio/anyio) or `wrap_socket`, which load it first.
    """

    cafile: str | None = None
    _trust_loaded = False

    def _load_trust(self) -> None:
        if not self._trust_loaded:
            if self.cafile is None:
                import certifi

                self.cafile = certifi.where()
            self.load_verify_locations(cafile=self.cafile)
            self._trust_loaded = True

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self._load_trust()
        return super().wrap_bio(*args, **kwargs)

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self._load_trust()
        return super().wrap_socket(*args, **kwargs)


def lazy_trust_context(cafile: str | None = None) -> LazyTrustContext:
    """What httpx's `verify=True` builds (certifi's CAs, hostname check), loaded on first use."""
    ctx = LazyTrustContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    ctx.cafile = cafile
    # As ssl.create_default_context does: honour SSLKEYLOGFILE for debugging.
    keylog = os.environ.get("SSLKEYLOGFILE")
    if keylog and not sys.flags.ignore_environment:
        ctx.keylog_filename = keylog
    return ctx


def make_client(verify: bool = True,
                transport: httpx.AsyncBaseTransport | None = None,
                cafile: str | None = None) -> httpx.AsyncClient:
    """The one place outbound probe HTTP is configured (`cafile`: CAs, certifi's by default)."""
    return httpx.AsyncClient(
        verify=lazy_trust_context(cafile) if verify else False,
        transport=transport,
        follow_redirects=True,
        headers={"User-Agent": f"pingr/{__version__}"},
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        # Probes set their own timeouts per request; this is only a backstop.
        timeout=httpx.Timeout(30.0),
        trust_env=False,
    )
