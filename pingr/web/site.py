"""What the pages share for one App: sessions, cached figures, templates, assets, and the
checks every page and action goes through (session, scope, rate limit, CSRF)."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, quote

from starlette.requests import Request

from pingr.ratelimit import TokenBucket
from pingr.web.render import Assets, Renderer
from pingr.web.sessions import COOKIE, Session, Sessions
from pingr.web.stats import Stats

if TYPE_CHECKING:
    from pingr.app import App

#: A form body larger than this is refused (the largest form is a target's settings).
MAX_FORM = 64 * 1024
T = TypeVar("T")


class PageError(Exception):
    """An error the pages answer with an error page (or JSON for the page's own script)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None,
                 session: Session | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        self.session = session


class SignIn(Exception):
    """No valid session: go to the sign-in page, then come back to `next`."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next = next_path


def safe_next(value: str | None) -> str:
    """A path on this site to return to (never another host: no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def wants_json(request: Request) -> bool:
    """The page's script asks for JSON; a plain form (JavaScript off) gets a redirect."""
    return "application/json" in request.headers.get("accept", "")


class Site:
    """The dashboard and status page of one App (made with the API, in pingr.api.asgi)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.config = app.config.web
        self.assets = Assets()
        self.renderer = Renderer(self.assets)
        self.sessions = Sessions(app.auth, app.db_path.parent, self.config.session_lifetime,
                                 app.clock_ms)
        #: The one thread that reads the store for the pages and renders them: off the event
        #: loop, one page at a time, and one malloc arena (each new thread would hold its own).
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="pingr-web")
        status = self.config.status_page
        self.stats = Stats(app.store, app.clock_ms, self.executor,
                           ledger_days=90 if status.enabled else 30)
        #: The public pages' limit per client address: as many requests as a key may make.
        self.public_limit = TokenBucket(app.config.auth.rate_limit_per_minute, 60.0)
        self.status_clients = 0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the pages' worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def client_ip(self, request: Request) -> str:
        peer = request.client.host if request.client else None
        return self.app.auth.client_ip(peer, request.headers.get("x-forwarded-for"))

    # ------------------------------------------------------------------ checks

    def guard(self, request: Request, scope: str = "read") -> Session:
        """The signed-in session, counted against its key's rate limit, with `scope`."""
        session = self.sessions.read(request.cookies.get(COOKIE))
        if session is None:
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise SignIn(path if request.method == "GET" else "/")
        refusal = self.sessions.admit(session, scope)
        if refusal is not None:
            raise PageError(refusal.status, refusal.detail, refusal.headers, session)
        return session

    async def form(self, request: Request, session: Session | None) -> dict[str, str]:
        """The posted form, after the CSRF checks: the session's token (or, for the sign-in
        form, the token of its own cookie), and the browser's word that it came from this
        origin (Sec-Fetch-Site; the Origin header is not compared with Host, which a reverse
        proxy may rewrite). The session cookie itself is SameSite=Strict."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            raise PageError(403, "Refused: this form was sent from another site.",
                            session=session)
        body = await request.body()
        if len(body) > MAX_FORM:
            raise PageError(413, "This form is too large.", session=session)
        try:
            fields = dict(parse_qsl(body.decode(), keep_blank_values=True))
        except UnicodeDecodeError:
            raise PageError(400, "This form could not be read.", session=session) from None
        token = fields.get("csrf") or request.headers.get("x-csrf-token") or ""
        expected = session.csrf if session is not None else request.cookies.get(
            "pingr_login", "")
        if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
            raise PageError(403, "This form has expired or did not come from this dashboard: "
                                 "reload the page and try again.", session=session)
        return fields

    def context(self, request: Request, session: Session | None, **extra: Any) -> dict[str, Any]:
        """What every template gets."""
        return {"session": session, "user": session.key.name if session else None,
                "scope": session.scope if session else None,
                "csrf": session.csrf if session else "",
                "can_operate": bool(session and session.allows("operate")),
                "is_admin": bool(session and session.allows("admin")),
                "status_page": self.config.status_page.enabled,
                "path": request.url.path, "quote": quote, **extra}
