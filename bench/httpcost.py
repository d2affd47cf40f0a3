"""What one HTTP probe costs the CPU, and how much of it is the HTTP client.

The mixed bench's 300 HTTP targets are most of pingr's share of a core. This part prices one
request, client side only (the server, uvicorn with a plain ASGI app, runs in another
process; CPU is this process's user + system time), sequentially, a fresh connection each as
pingr's probe makes it:

- pingr's HTTP probe (`pingr.probes.http.run`, through the shared httpx client);
- httpx alone, the same request the probe sends (`send(stream=True)`, then `aclose`);
- the same request over plain asyncio streams (connect, write, read the head and the
  Content-Length body, close): what the request costs without an HTTP client library.

Rounds alternate; medians. The last rows say what 300 targets at 10 s (30 requests/s) cost of
one core at each price: the floor that the chosen client (httpx) sets for the mixed bench.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

from bench.common import cpu_self, free_port, heading, median, row, wait_port
from bench.probes import SERVER
from bench.service import running

REQUEST = b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"


async def _streams(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(REQUEST)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer {head[:40]!r}")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
    finally:
        writer.close()
        await writer.wait_closed()


async def _measure(port: int, n: int, rounds: int) -> dict[str, list[float]]:
    import httpx

    from pingr.models import Target
    from pingr.probes import http
    from pingr.probes.context import ProbeContext

    url = f"http://127.0.0.1:{port}/x"
    target = Target(1, "bench", http.HttpTarget(type="http", name="bench", url=url))
    ctx = ProbeContext()
    client = ctx.client(True)

    async def probe() -> None:
        result = await http.run(target, ctx)
        if not result.success:
            raise RuntimeError(f"probe failed: {result.error}")

    async def httpx_alone() -> None:
        request = client.build_request("GET", url, timeout=httpx.Timeout(2.0))
        response = await client.send(request, stream=True)
        await response.aclose()
        if response.status_code != 200:
            raise RuntimeError(f"status {response.status_code}")

    async def streams() -> None:
        await _streams(port)

    kinds = {"pingr's HTTP probe": probe, "httpx alone": httpx_alone,
             "asyncio streams, no client library": streams}
    out: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(rounds):
        for name, one in kinds.items():
            for _ in range(20):  # warm: imports, the pool, the CPU caches
                await one()
            c0 = cpu_self()
            for _ in range(n):
                await one()
            out[name].append((cpu_self() - c0) / n)
    await ctx.aclose()
    return out


def main(n: int = 2000, rounds: int = 3) -> dict[str, float]:
    heading(f"One HTTP probe's CPU, client side, a fresh connection each ({n} sequential "
            f"requests to a uvicorn server in another process, {rounds} alternated rounds)")
    port = free_port()
    with running(subprocess.Popen([sys.executable, "-c", SERVER, str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)):
        wait_port(port)
        res = asyncio.run(_measure(port, n, rounds))
    med = {k: median(v) for k, v in res.items()}
    ref = med["asyncio streams, no client library"]
    for name, cost in med.items():
        row(f"{name}: CPU per request", f"{cost * 1e6:.0f} us ({cost / ref:.1f}x streams; "
            "rounds " + ", ".join(f"{x * 1e6:.0f}" for x in res[name]) + ")")
    for name, cost in med.items():
        row(f"300 targets @10 s at that price ({name})", f"{cost * 30 * 100:.1f} % of a core")
    return med


if __name__ == "__main__":
    main()
