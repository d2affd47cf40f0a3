"""The API's first line: the key is checked before a body is read, bodies past a limit are refused
before they are read, JSON nested too deep is refused before it is parsed, OPTIONS says which
methods a path has. One 10 MB body from a client without a key used to cost 270 MB of RSS."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from starlette.routing import compile_path

from pingr.access import Authenticator, key_from_headers
from pingr.api.front import error_body

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(rb"[\[\]{}]")


def json_too_deep(body: bytes, limit: int) -> bool:
    """True when `body` (JSON text, valid or not) nests arrays/objects deeper than `limit`.

    Scanned without parsing (strings are blanked first), so a body of 60,000 `[` costs one
    regex pass, not a recursion error inside the JSON parser."""
    depth = 0
    for match in _BRACKETS.finditer(_STRINGS.sub(b'""', body)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


@dataclass(frozen=True)
class _Path:
    pattern: re.Pattern[str]
    #: method -> whether it needs an API key (the route depends on `require(scope)`)
    methods: dict[str, bool]


def _is_require(call: Any) -> bool:
    return getattr(call, "__name__", "").startswith("require_")  # see pingr.api.auth.require


def _needs_key(route: Any) -> bool:
    stack = [getattr(route, "dependant", None)]
    while stack:
        dependant = stack.pop()
        if dependant is None:
            continue
        for dep in dependant.dependencies:
            if _is_require(dep.call):
                return True
            stack.append(dep)
    return False


def _walk(routes: list[Any], prefix: str = "", guarded: bool = False
          ) -> Iterator[tuple[str, set[str], bool]]:
    """(path, methods, needs a key) of every route, included routers entered (FastAPI keeps
    them as included routers with a prefix and dependencies of their own, older versions as
    a flat list of routes)."""
    for route in routes:
        sub, ctx = getattr(route, "original_router", None), getattr(route, "include_context", None)
        if sub is not None and ctx is not None:
            deps = any(_is_require(getattr(d, "dependency", None)) for d in ctx.dependencies)
            yield from _walk(sub.routes, prefix + ctx.prefix, guarded or deps)
            continue
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if path and methods:
            yield prefix + path, set(methods), guarded or _needs_key(route)


def _paths(routes: list[Any]) -> list[_Path]:
    by_path: dict[str, dict[str, bool]] = {}
    for path, methods, guarded in _walk(routes):
        for method in methods:
            by_path.setdefault(path, {})[method] = guarded
    return [_Path(compile_path(path)[0], methods) for path, methods in by_path.items()]


class Guard:
    """ASGI middleware in front of the whole API (the alert-status fast path included).

    `app` is the pingr App (its Authenticator and `http:` limits); `routes` are the FastAPI
    app's, read once: for a request with a body, does its path take a key (public heartbeat
    pings do not)? For OPTIONS, which methods does it have?
    """

    def __init__(self, inner: Any, app: Any, routes: list[Any]) -> None:
        self.inner = inner
        self.auth: Authenticator = app.auth
        self.max_body: int = app.config.http.max_body
        self.max_depth: int = app.config.http.max_json_depth
        self.body_timeout: float = app.config.http.header_timeout
        self._paths = _paths(routes)
        # Starlette's TestClient and other tooling look for these on the ASGI app.
        self.state = getattr(inner, "state", None)
        self.openapi = getattr(inner, "openapi", None)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        method = scope["method"]
        if method == "OPTIONS":
            if await self._options(scope, send):
                return
        length, chunked = None, False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
            elif name == b"transfer-encoding":
                chunked = True
        has_body = chunked or (length or 0) > 0
        if not has_body or (method not in _BODY_METHODS and (length or 0) <= self.max_body):
            await self.inner(scope, receive, send)
            return
        if self._methods(scope["path"]).get(method, False):
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
                       if k in (b"x-api-key", b"authorization", b"x-forwarded-for")}
            peer = scope.get("client")
            ip = self.auth.client_ip(peer[0] if peer else None, headers.get("x-forwarded-for"))
            refusal = self.auth.precheck(key_from_headers(headers.get), ip)
            if refusal is not None:
                # Unread: the body is dropped with the connection.
                await self._refuse(send, refusal.status, refusal.detail or "",
                                   refusal.headers, close=True)
                return
        if length is not None and length > self.max_body:
            await self._refuse(send, 413, self._too_large(), close=True)
            return
        chunks: list[bytes] = []
        size = 0
        try:
            # A body trickled in slowly holds a connection as long as it lasts: bounded too.
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        await self._refuse(send, 413, self._too_large(), close=True)
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await self._refuse(send, 408, f"Request body not received within "
                                          f"{self.body_timeout:g} seconds", close=True)
            return
        body = b"".join(chunks)
        if body[:1] in (b"[", b"{") or body.lstrip()[:1] in (b"[", b"{"):
            if json_too_deep(body, self.max_depth):
                await self._refuse(send, 400, f"JSON body nested deeper than {self.max_depth} "
                                              "levels")
                return
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.inner(scope, replay, send)

    def _too_large(self) -> str:
        return f"Request body too large: at most {self.max_body} bytes"

    def _methods(self, path: str) -> dict[str, bool]:
        """Every method the API has at `path` -> whether it takes a key."""
        found: dict[str, bool] = {}
        for candidate in self._paths:
            if candidate.pattern.match(path):
                for method, guarded in candidate.methods.items():
                    found.setdefault(method, guarded)
        return found

    async def _options(self, scope: dict[str, Any], send: Any) -> bool:
        """204 with `Allow` listing every method of the path; False when the API has no such
        path."""
        methods = set(self._methods(scope["path"]))
        if not methods:
            return False
        methods.add("OPTIONS")
        if "GET" in methods:
            methods.add("HEAD")
        allow = ", ".join(sorted(methods))
        await send({"type": "http.response.start", "status": 204,
                    "headers": [(b"allow", allow.encode())]})
        await send({"type": "http.response.body", "body": b""})
        return True

    async def _refuse(self, send: Any, status: int, detail: str,
                      headers: dict[str, str] | None = None, close: bool = False) -> None:
        body = json.dumps(error_body(detail)).encode()
        raw = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
        raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        if close:
            raw.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})
