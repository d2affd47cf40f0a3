"""What probes share: one HTTP client, the ICMP socket mode and the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from pingr.timeutil import now_ms


@dataclass
class ProbeContext:
    """Shared, injected state for probes (so tests can give them a transport or a clock)."""

    http: httpx.AsyncClient | None = None
    http_insecure: httpx.AsyncClient | None = None
    icmp_privileged: bool | None = None
    clock_ms: Callable[[], int] = field(default=now_ms)

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


def make_client(verify: bool = True,
                transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The one place outbound probe HTTP is configured."""
    from pingr import __version__

    return httpx.AsyncClient(
        verify=verify,
        transport=transport,
        follow_redirects=True,
        headers={"User-Agent": f"pingr/{__version__}"},
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        # Probes set their own timeouts per request; this is only a backstop.
        timeout=httpx.Timeout(30.0),
        trust_env=False,
    )
