"""HTTP(S) probe over the shared httpx client."""

from __future__ import annotations

import time

import httpx

from pingr.models import Result, Target
from pingr.probes.context import ProbeContext

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
        return Result(target.id, ts, False,
                      error=f"{type(exc).__name__}: {exc}" or type(exc).__name__)
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
