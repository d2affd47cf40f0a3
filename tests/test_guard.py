"""Bodies before auth, body and JSON-depth limits, OPTIONS: refused before anything is read."""

from __future__ import annotations

import asyncio
import json

import httpx

from pingr.api.deps import error_body
from tests.conftest import ADMIN_KEY, make_config, running_app


async def _raw(port: int, head: bytes, body: bytes = b"", wait: float = 5.0) -> bytes:
    """Send a request head (and maybe part of a body) on a fresh socket; return what comes back
    within `wait` seconds, without ever sending the rest of the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        await writer.drain()
        data = b""
        try:
            async with asyncio.timeout(wait):
                while b"\r\n\r\n" not in data:
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    data += chunk
                head_end = data.find(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in data[:head_end].split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(data) < head_end + 4 + length:
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    data += chunk
        except TimeoutError:
            pass
        return data
    finally:
        writer.close()


def _status(response: bytes) -> int:
    assert response, "no answer: the server is still waiting for the body"
    return int(response.split(b" ", 2)[1])


def _json(response: bytes) -> dict:
    return json.loads(response.split(b"\r\n\r\n", 1)[1])


async def test_keyless_big_body_is_refused_before_it_is_read(tmp_path):
    """A 10 MB body announced without a key: 401 at once, while the body is still unsent (today
    it was read and parsed first: 136 -> 409 MB RSS)."""
    async with running_app(make_config(tmp_path)) as run:
        head = (b"POST /api/v1/targets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 10485760\r\n\r\n")
        answer = await _raw(run.app.port, head, b'{"name": "x", ', wait=3)
        assert _status(answer) == 401
        assert _json(answer) == error_body("Missing API key in x-api-key header")
        answer = await _raw(run.app.port, head.replace(b"Host: x", b"Host: x\r\nx-api-key: nope"),
                            wait=3)
        assert _status(answer) == 401
        assert _json(answer) == error_body("Invalid or disabled API key")
        # With the key, the size alone refuses it: 413, still unread.
        answer = await _raw(run.app.port, head.replace(b"Host: x", b"Host: x\r\nx-api-key: "
                                                       + ADMIN_KEY.encode()), wait=3)
        assert _status(answer) == 413
        assert _json(answer) == error_body("Request body too large: at most 65536 bytes")
        # The refused requests changed nothing, and the API still answers.
        r = await run.client.get("/api/v1/targets")
        assert r.status_code == 200 and "x" not in [t["name"] for t in r.json()["items"]]


async def test_chunked_body_past_the_limit_is_refused(tmp_path):
    cfg = make_config(tmp_path, http={"max_body": "2KB"})
    async with running_app(cfg) as run:
        head = (b"POST /api/v1/targets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\nx-api-key: " + ADMIN_KEY.encode() + b"\r\n\r\n")
        chunk = b"x" * 1000
        body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3))
        answer = await _raw(run.app.port, head, body, wait=3)  # never the last chunk
        assert _status(answer) == 413
        assert _json(answer) == error_body("Request body too large: at most 2048 bytes")
        # Under the limit a body is read as before.
        r = await run.client.post("/api/v1/targets", json={"name": "small", "type": "icmp",
                                                           "host": "127.0.0.1"})
        assert r.status_code == 201, r.text


async def test_deep_json_is_a_400_not_a_500(tmp_path):
    async with running_app(make_config(tmp_path)) as run:
        for body in (b"[" * 30_000 + b"]" * 30_000, b'{"a":' * 50 + b"1" + b"}" * 50):
            r = await run.client.post("/api/v1/targets", content=body,
                                      headers={"content-type": "application/json"})
            assert r.status_code == 400, r.text
            assert r.json() == error_body("JSON body nested deeper than 32 levels")
        # Brackets inside strings do not count.
        r = await run.client.post("/api/v1/targets", json={
            "name": "[[[[" * 20, "type": "icmp", "host": "127.0.0.1"})
        assert r.status_code == 201, r.text


async def test_public_ping_takes_a_body_without_a_key(tmp_path):
    cfg = make_config(tmp_path, targets=[{"name": "job", "type": "heartbeat", "period": "1h",
                                          "token": "tok_0123456789abcdef"}])
    async with running_app(cfg) as run:
        async with httpx.AsyncClient(base_url=run.base) as c:
            r = await c.post("/api/v1/push/tok_0123456789abcdef", json={"status": "up"})
            assert r.status_code == 200, r.text


async def test_options_lists_every_method_of_the_path(tmp_path):
    async with running_app(make_config(tmp_path)) as run:
        async with httpx.AsyncClient(base_url=run.base) as c:
            r = await c.options("/api/v1/targets/abc")
            assert r.status_code == 204
            assert r.headers["allow"] == "DELETE, GET, HEAD, OPTIONS, PUT"
            r = await c.options("/api/v1/targets")
            assert r.headers["allow"] == "GET, HEAD, OPTIONS, POST"
            r = await c.options("/api/v1/alert-status")
            assert r.headers["allow"] == "GET, HEAD, OPTIONS"
            assert (await c.options("/api/v1/nothing-here")).status_code == 404
