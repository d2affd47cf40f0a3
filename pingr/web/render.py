"""Templates (loaded on first use), the packaged static assets, and the pages' responses:
security headers, gzip, Server-Timing."""

from __future__ import annotations

import ctypes
import ctypes.util
import gzip
import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from pingr import __version__

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".svg": "image/svg+xml", ".png": "image/png", ".webmanifest": "application/manifest+json"}

#: No inline script or style anywhere, nothing from another origin; the pages cannot be framed.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
#: Smaller bodies are not worth compressing.
GZIP_MIN = 1024


def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to hand back
        return None


_TRIM = _malloc_trim()


def give_back_memory() -> None:
    """Return the heap a one-off job freed to the system (glibc's malloc_trim).

    Compiling a template or scanning months of aggregates peaks at a few MB of short-lived
    allocations; freed, they stay in the process's heap as resident memory for good unless
    handed back. Called after such one-off work only (it costs a few milliseconds).
    """
    if _TRIM is not None:
        _TRIM(0)


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes | None
    media_type: str
    version: str


class Assets:
    """The files of pingr/web/static, read once and kept with their gzip and a version hash
    (URLs carry `?v=<hash>`, so browsers may cache them for a year)."""

    def __init__(self, root: Path = STATIC) -> None:
        self.root = root
        self._files: dict[str, Asset | None] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Asset | None:
        with self._lock:
            if name not in self._files:
                self._files[name] = self._load(name)
            return self._files[name]

    def _load(self, name: str) -> Asset | None:
        path = (self.root / name).resolve()
        if path.parent != self.root or not path.is_file() or path.suffix not in TYPES:
            return None
        body = path.read_bytes()
        packed = gzip.compress(body, 9, mtime=0) if path.suffix != ".png" else None
        return Asset(body, packed if packed and len(packed) < len(body) else None,
                     TYPES[path.suffix], hashlib.sha256(body).hexdigest()[:12])

    def url(self, name: str) -> str:
        asset = self.get(name)
        return f"/static/{name}?v={asset.version}" if asset else f"/static/{name}"


class Renderer:
    """Jinja2 through FastAPI's templating, created on the first page: an appliance nobody
    looks at never loads the template engine (2.5 MiB)."""

    def __init__(self, assets: Assets) -> None:
        self.assets = assets
        self._templates: Any = None
        self._lock = threading.Lock()
        self._compiled: set[str] = set()

    @property
    def templates(self) -> Any:
        if self._templates is None:
            with self._lock:
                if self._templates is None:
                    self._templates = self._load()
        return self._templates

    def _load(self) -> Any:
        # Lazy on purpose: jinja2 is a heavy optional part (see the class docstring).
        import jinja2
        from fastapi.templating import Jinja2Templates

        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
            trim_blocks=True, lstrip_blocks=True, auto_reload=False,
            undefined=jinja2.StrictUndefined)
        env.globals.update(asset=self.assets.url, version=__version__)
        return Jinja2Templates(env=env)

    def render(self, name: str, context: dict[str, Any]) -> str:
        template = self.templates.get_template(name)
        if name not in self._compiled:  # the first time: the engine and the template compiled
            self._compiled.add(name)
            give_back_memory()
        return template.render(context)


def accepts_gzip(request: Request) -> bool:
    return "gzip" in request.headers.get("accept-encoding", "").lower()


def html_response(request: Request, html: str, status: int = 200, *,
                  headers: dict[str, str] | None = None, started: float | None = None,
                  cache: str = "no-store") -> Response:
    """A page: gzipped when the browser takes it, with the security headers, and the time the
    server spent on it (Server-Timing, shown by browsers' developer tools)."""
    body = html.encode()
    out = {**SECURITY_HEADERS, "Cache-Control": cache, "Vary": "Accept-Encoding, Cookie",
           **(headers or {})}
    if len(body) >= GZIP_MIN and accepts_gzip(request):
        body = gzip.compress(body, 6)
        out["Content-Encoding"] = "gzip"
    if started is not None:
        out["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
    return Response(body, status, out, "text/html; charset=utf-8")


def asset_response(request: Request, assets: Assets, name: str) -> Response:
    asset = assets.get(name)
    if asset is None:
        return Response(b"not found", 404, {**SECURITY_HEADERS}, "text/plain")
    versioned = request.query_params.get("v") == asset.version
    headers = {**SECURITY_HEADERS, "ETag": f'"{asset.version}"', "Vary": "Accept-Encoding",
               "Cache-Control": "public, max-age=31536000, immutable" if versioned
               else "public, max-age=300"}
    if request.headers.get("if-none-match") == f'"{asset.version}"':
        return Response(None, 304, headers)
    body = asset.body
    if asset.gzipped is not None and accepts_gzip(request):
        body = asset.gzipped
        headers["Content-Encoding"] = "gzip"
    return Response(body, 200, headers, asset.media_type)
