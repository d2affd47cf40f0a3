"""The dashboard: sign-in, overview, target pages, and the actions (through the same calls
as the API's). Pages work with JavaScript off; the script only makes them live."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from pydantic import ValidationError
from starlette.responses import Response

from pingr.errors import AppError
from pingr.probes.registry import parse_spec
from pingr.timeutil import parse_duration
from pingr.web import views
from pingr.web.render import SECURITY_HEADERS, asset_response, html_response
from pingr.web.sessions import COOKIE, LOGIN_COOKIE, Refusal, Session
from pingr.web.site import PageError, SignIn, Site, safe_next, wants_json

router = APIRouter(include_in_schema=False)
#: Lamp-test, silence and chart windows the forms offer.
WINDOWS = ("24h", "7d", "30d")
SILENCE_CHOICES = ("15m", "30m", "1h", "2h", "4h", "8h", "1d", "3d", "7d")


def _site(request: Request) -> Site:
    return request.app.state.web


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _done(request: Request, fields: dict[str, str], message: str,
          data: dict[str, Any] | None = None) -> Response:
    """After an action: JSON for the page's script, else back to the page it came from."""
    if wants_json(request):
        return JSONResponse({"ok": True, "message": message, **(data or {})},
                            headers=SECURITY_HEADERS)
    return RedirectResponse(safe_next(fields.get("back")), 303, headers=SECURITY_HEADERS)


def _target(site: Site, target_id: str, session: Session | None) -> Any:
    target = site.app.targets.get(target_id)
    if target is None:
        raise PageError(404, f"No target with id {target_id}.", session=session)
    return target


# ---------------------------------------------------------------------- static, sign-in


@router.get("/static/{name}")
async def static(name: str, request: Request) -> Response:
    return asset_response(request, _site(request).assets, name)


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    site = _site(request)
    if site.sessions.read(request.cookies.get(COOKIE)) is not None:
        return RedirectResponse(safe_next(next), 303, headers=SECURITY_HEADERS)
    return _login_form(request, site, safe_next(next), None, 200)


def _login_form(request: Request, site: Site, next_path: str, error: str | None,
                status: int, headers: dict[str, str] | None = None) -> Response:
    token = site.sessions.login_token()
    html = site.renderer.render("login.html", site.context(
        request, None, next=next_path, error=error, login_csrf=token))
    response = html_response(request, html, status, headers=headers)
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, httponly=True, samesite="strict",
                        secure=_secure(request), path="/login")
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    site = _site(request)
    fields = await site.form(request, None)
    next_path = safe_next(fields.get("next"))
    outcome = site.sessions.sign_in(fields.get("key", ""), site.client_ip(request))
    if isinstance(outcome, Refusal):
        return _login_form(request, site, next_path, outcome.detail, outcome.status,
                           outcome.headers)
    cookie, max_age = site.sessions.issue(outcome)
    response = RedirectResponse(next_path, 303, headers=SECURITY_HEADERS)
    response.set_cookie(COOKIE, cookie, max_age=max_age, httponly=True, samesite="strict",
                        secure=_secure(request), path="/")
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    site = _site(request)
    session = site.sessions.read(request.cookies.get(COOKIE))
    if session is not None:
        await site.form(request, session)
        site.sessions.revoke(session)
    response = RedirectResponse("/login", 303, headers=SECURITY_HEADERS)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


# ---------------------------------------------------------------------- pages


@router.get("/")
async def overview(request: Request) -> Response:
    started = time.perf_counter()
    site = _site(request)
    session = site.guard(request)
    app = site.app
    now = app.clock_ms()
    # Memory first, here on the event loop where the monitor lives; then the stored figures
    # and the rendering on a worker thread, so probes never wait for a page.
    targets = views.overview_targets(app, now)
    context = site.context(
        request, session, targets=targets, counts=views.counts(targets),
        alerts=views.open_alerts(app), outputs=views.outputs(app),
        silences=views.silences(app, now), appliance=views.appliance(app),
        snapshot=app.monitor.snapshot(), names=sorted(t.name for t in app.targets.values()),
        tags=sorted({tag for t in app.targets.values() for tag in t.spec.tags}),
        choices=SILENCE_CHOICES, fmt_time=views.fmt_time, iso=views.iso)

    def finish() -> str:
        views.add_stats(targets, site.stats)
        return site.renderer.render("overview.html", context)

    return html_response(request, await site.run(finish), started=started)


@router.get("/targets/{target_id}")
async def target_page(target_id: str, request: Request, window: str = "24h") -> Response:
    started = time.perf_counter()
    site = _site(request)
    session = site.guard(request)
    app = site.app
    if window not in WINDOWS:
        raise PageError(400, f"window must be one of {', '.join(WINDOWS)}", session=session)
    state = app.monitor.state_of(target_id)
    if state is None:
        raise PageError(404, f"No target with id {target_id}.", session=session)
    now = app.clock_ms()
    view = views.target_view(app, state, now)
    stored = app.targets.get(target_id)
    context = site.context(
        request, session, t=view, window=window, windows=WINDOWS, stored=stored is not None,
        enabled=state.target.enabled,
        settings=views.settings(state.target.spec, session.allows("admin")),
        fmt_time=views.fmt_time, iso=views.iso)

    def finish() -> str:
        if view.probed and stored is not None:
            chart, figures = views.history_chart(app, view, window, now)
            context.update(chart=chart, figures=figures,
                           results=views.recent_results(app, view, now))
        else:
            context.update(chart=None, figures=None, results=[])
        context["incidents"] = views.incidents(app, target_id)
        return site.renderer.render("target.html", context)

    return html_response(request, await site.run(finish), started=started)


@router.get("/targets/{target_id}/edit")
async def edit_page(target_id: str, request: Request) -> Response:
    site = _site(request)
    session = site.guard(request, "admin")
    target = _target(site, target_id, session)
    text = yaml.safe_dump(target.spec.model_dump(mode="json"), sort_keys=False,
                          allow_unicode=True)
    return _edit_form(request, site, session, target, text, None, 200)


def _edit_form(request: Request, site: Site, session: Session, target: Any, text: str,
               error: str | None, status: int) -> Response:
    html = site.renderer.render("edit.html", site.context(
        request, session, target=target, href=views.href(target.id), text=text, error=error))
    return html_response(request, html, status)


@router.post("/targets/{target_id}/edit")
async def edit(target_id: str, request: Request) -> Response:
    site = _site(request)
    session = site.guard(request, "admin")
    fields = await site.form(request, session)
    target = _target(site, target_id, session)
    text = fields.get("settings", "")
    try:
        data = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError("the settings must be a mapping of name: value lines")
        data.setdefault("type", target.spec.type)
        # The whole text is the target: a field left out goes back to its default.
        spec = parse_spec(data)
        new = await site.app.target_admin.update(target, spec.model_dump())
    except yaml.YAMLError as exc:
        return _edit_form(request, site, session, target, text, f"Not valid YAML: {exc}", 400)
    except ValidationError as exc:
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:] or e['loc'])}: {e['msg']}"
                            for e in exc.errors())
        return _edit_form(request, site, session, target, text, message, 400)
    except ValueError as exc:
        return _edit_form(request, site, session, target, text, str(exc), 400)
    except AppError as exc:
        return _edit_form(request, site, session, target, text, exc.detail, exc.status)
    return RedirectResponse(views.href(new.id), 303, headers=SECURITY_HEADERS)


# ---------------------------------------------------------------------- actions


@router.post("/targets/{target_id}/pause")
async def pause(target_id: str, request: Request) -> Response:
    return await _set_enabled(target_id, request, False)


@router.post("/targets/{target_id}/resume")
async def resume(target_id: str, request: Request) -> Response:
    return await _set_enabled(target_id, request, True)


async def _set_enabled(target_id: str, request: Request, enabled: bool) -> Response:
    site = _site(request)
    session = site.guard(request, "admin")
    fields = await site.form(request, session)
    target = _target(site, target_id, session)
    try:
        await site.app.target_admin.update(target, {"enabled": enabled})
    except AppError as exc:
        raise PageError(exc.status, exc.detail, session=session) from None
    return _done(request, fields, f"{target.name} {'resumed' if enabled else 'paused'}")


@router.post("/alerts/ack")
async def ack_all(request: Request) -> Response:
    site = _site(request)
    session = site.guard(request, "operate")
    fields = await site.form(request, session)
    acked = site.app.acknowledge(None, session.key.name)
    return _done(request, fields, f"{len(acked)} alert{'s' if len(acked) != 1 else ''} "
                                  "acknowledged")


@router.post("/alerts/{alert_id}/ack")
async def ack(alert_id: int, request: Request) -> Response:
    site = _site(request)
    session = site.guard(request, "operate")
    fields = await site.form(request, session)
    try:
        acked = site.app.acknowledge(alert_id, session.key.name)
    except KeyError:
        raise PageError(404, f"No open alert with id {alert_id}.", session=session) from None
    except ValueError as exc:
        raise PageError(409, f"{str(exc).capitalize()}.", session=session) from None
    return _done(request, fields, f"Alert on {acked[0].target_name} acknowledged")


@router.post("/outputs/{name}/test")
async def test_output(name: str, request: Request) -> Response:
    site = _site(request)
    session = site.guard(request, "operate")
    fields = await site.form(request, session)
    try:
        site.app.lamp_test([name])
    except KeyError:
        raise PageError(404, f"No output named {name!r}.", session=session) from None
    except ValueError as exc:
        raise PageError(409, str(exc), session=session) from None
    return _done(request, fields, f"Testing {name}",
                 {"duration": site.app.outputs.config.lamp_test.duration})


@router.post("/silences")
async def create_silence(request: Request) -> Response:
    site = _site(request)
    session = site.guard(request, "operate")
    fields = await site.form(request, session)
    app = site.app
    target, tag = fields.get("target", "").strip(), fields.get("tag", "").strip()
    if not target and not tag:
        raise PageError(400, "Choose a target or a tag to silence.", session=session)
    if target and target not in {t.name for t in app.targets.values()}:
        raise PageError(400, f"No target named {target!r}.", session=session)
    try:
        seconds = parse_duration(fields.get("duration", ""))
    except ValueError as exc:
        raise PageError(400, f"Duration: {exc}.", session=session) from None
    if not 60 <= seconds <= 366 * 86400:
        raise PageError(400, "Duration must be between 1m and 366d.", session=session)
    comment = fields.get("comment", "").strip()[:500] or None
    now = app.clock_ms()
    await app.silences.create(targets=[target] if target else [], tags=[tag] if tag else [],
                              starts_at=now, ends_at=now + round(seconds * 1000),
                              comment=comment, by=session.key.name)
    return _done(request, fields, f"Silenced {target or 'tag ' + tag}")


@router.post("/silences/{silence_id}/cancel")
async def cancel_silence(silence_id: int, request: Request) -> Response:
    site = _site(request)
    session = site.guard(request, "operate")
    fields = await site.form(request, session)
    if not await site.app.silences.delete(silence_id):
        raise PageError(404, f"No silence with id {silence_id}.", session=session)
    return _done(request, fields, "Silence cancelled")


# ---------------------------------------------------------------------- live


@router.get("/ui/events")
async def events(request: Request) -> Response:
    """The API's event stream (GET /api/v1/events) for a signed-in browser."""
    site = _site(request)
    site.guard(request)
    app = site.app
    sub = app.events.subscribe(None)
    if sub is None:
        raise PageError(503, "Too many live connections; the page still works without them.")
    return StreamingResponse(app.events.stream(sub, lambda: app.stopping),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# ---------------------------------------------------------------------- errors


async def page_error(request: Request, exc: Exception) -> Response:
    """PageError and SignIn, answered in the page's own terms (wired in pingr.api.asgi)."""
    if isinstance(exc, SignIn):
        if wants_json(request) or request.url.path == "/ui/events":
            return JSONResponse({"detail": "Not signed in (or the session expired)."}, 401,
                                headers=SECURITY_HEADERS)
        target = "/login" if exc.next == "/" else f"/login?next={quote(exc.next, safe='')}"
        return RedirectResponse(target, 303, headers=SECURITY_HEADERS)
    assert isinstance(exc, PageError)
    if wants_json(request) or request.url.path.startswith("/ui/"):
        return JSONResponse({"detail": exc.detail}, exc.status,
                            headers={**SECURITY_HEADERS, **exc.headers})
    site = _site(request)
    html = site.renderer.render("error.html", site.context(
        request, exc.session, status=exc.status, detail=exc.detail))
    return html_response(request, html, exc.status, headers=exc.headers)
