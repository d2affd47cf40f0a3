"""HTTP(S) probe over the shared httpx client."""

from __future__ import annotations

import time
from typing import Literal
from urllib.parse import urlsplit

import httpx
from pydantic import Field, field_validator

from pingr.configbase import TargetBase
from pingr.models import Result, Target
from pingr.probes.context import ProbeContext
from pingr.probes.kind import Kind
from pingr.secrets import mask_text


class HttpTarget(TargetBase):
    """Fetch a URL; success is a status below 400 unless `expect_status` says otherwise."""

    type: Literal["http"]
    url: str
    method: Literal["GET", "HEAD", "POST", "PUT", "OPTIONS"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    expect_status: list[int] | None = None
    body_contains: str | None = None
    verify_tls: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"invalid url {value!r}: expected http://host[:port]/path or https://…")
        return value.strip()

    @field_validator("expect_status")
    @classmethod
    def _statuses(cls, value: list[int] | None) -> list[int] | None:
        for code in value or []:
            if not 100 <= code <= 599:
                raise ValueError(f"invalid HTTP status {code}")
        return value


#: How much of a body `body_contains` searches; a probe must not download a whole ISO.
MAX_BODY = 1024 * 1024


async def run(target: Target, ctx: ProbeContext) -> Result:
    """Success is a completed request whose status is < 400 (or in `expect_status`)."""
    spec = target.spec
    ts = ctx.clock_ms()
    client = ctx.client(spec.verify_tls)
    timeout = spec.timeout_ms / 1000
    start = time.perf_counter()
    try:
        request = client.build_request(
            spec.method, spec.url, headers=spec.headers, timeout=httpx.Timeout(timeout)
        )
        response = await client.send(request, stream=True)
        try:
            body = b""
            if spec.body_contains is not None:
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) >= MAX_BODY:
                        break
        finally:
            await response.aclose()
    except httpx.TimeoutException:
        return Result(target.id, ts, False, error=f"timed out after {spec.timeout_ms} ms")
    except httpx.HTTPError as exc:
        # httpx quotes the URL in some errors; results are shown to read keys and logged.
        return Result(target.id, ts, False,
                      error=mask_text(f"{type(exc).__name__}: {exc}") or type(exc).__name__)
    latency = round((time.perf_counter() - start) * 1000)
    code = response.status_code
    ok = code in spec.expect_status if spec.expect_status else code < 400
    if not ok:
        return Result(target.id, ts, False, latency, code, f"unexpected status {code}")
    if spec.body_contains is not None:
        text = body.decode(response.encoding or "utf-8", errors="replace")
        if spec.body_contains not in text:
            return Result(target.id, ts, False, latency, code,
                          f"body does not contain {spec.body_contains!r}")
    return Result(target.id, ts, True, latency, code)


def prepare(ctx: ProbeContext, targets: list[Target]) -> None:
    """Build the HTTP clients before probing, not inside the first probe.

    Building one blocked the loop and counted against that probe's timeout (a false first
    failure under qemu-user: ~0.8 s while it loaded the CA bundle; ~0.2 s since that is
    deferred to the first TLS connection; ~30 ms on x86-64).
    """
    for verify in sorted({t.spec.verify_tls for t in targets}):
        ctx.client(verify)


KIND = Kind(HttpTarget, run, prepare)
